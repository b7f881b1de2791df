"""Fixtures for the field tests: one network lab per session, reset before every test.

The lab needs root, `ip netns`, iptables and TUN. CI runs as root with those installed, so a
missing piece is a failure (with the reason), never a silent skip.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.netlab import SERVICE_IP, LabUnavailable, NetLab, Turn, UdpEcho, lab_problems


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "field: real packets through network namespaces (root, ip netns, coturn)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.field)


@pytest.fixture(scope="session")
def netlab() -> Iterator[NetLab]:
    """The lab itself, shared by the session (building it takes ~0.3 s, but Turn and friends
    hang off it). Tests should take `lab`, which resets it first."""
    problems = lab_problems()
    if problems:
        pytest.fail("the field lab cannot run here: " + "; ".join(problems), pytrace=False)
    lab = NetLab()
    try:
        lab.start()
    except LabUnavailable as error:
        pytest.fail(f"the field lab did not start: {error}", pytrace=False)
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture
def lab(netlab: NetLab) -> Iterator[NetLab]:
    """The lab in its starting state: firewall open, link pass-through, caller on eth0."""
    netlab.reset()
    yield netlab
    netlab.reset()


@pytest.fixture(scope="session")
def turn_secret() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture(scope="session")
def turn(netlab: NetLab, turn_secret: str) -> Iterator[Turn]:
    """coturn in ctl on 198.18.0.3 (UDP/TCP 3478, TLS 443) with the REST secret."""
    server = Turn(netlab, turn_secret)
    try:
        server.start()
    except LabUnavailable as error:
        pytest.fail(f"coturn did not start: {error}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def service_echo(lab: NetLab) -> AsyncIterator[UdpEcho]:
    """A UDP echo on the service's address (198.18.0.1) in ctl: a TURN peer, a media sink."""
    async with UdpEcho(lab.ns("ctl"), SERVICE_IP) as echo:
        yield echo
