"""Half-sent requests cannot exhaust a node: `erv run` under a default systemd unit's 1,024
file descriptors, 1,100 TLS connections from one client that send part of a request (or
never even finish the TLS handshake) and stop. Other clients are still served while they
are held, they are closed once the header limit has passed, and then their own address is
served again; /metrics shows what happened."""

from __future__ import annotations

import asyncio
import re
import resource
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.erv_process import Process, start_erv

HEADER_TIMEOUT = 3
METRICS_TOKEN = "metrics token for the connection tests"
ATTACK = 1100
NEVER_HANDSHAKE = 100  # of them: TCP only, not a byte of TLS
FD_LIMIT = 1024


@pytest.fixture(autouse=True)
def enough_descriptors_here() -> Iterator[None]:
    """This process holds the client side of every connection: raise its own limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * ATTACK if hard == resource.RLIM_INFINITY else min(hard, 4 * ATTACK)
    assert wanted >= ATTACK + 200, "this test needs about 1,300 descriptors of its own"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def served_with(tmp_path: Path, header_timeout: int = HEADER_TIMEOUT,
                      **env: str) -> Process:
    return await start_erv(tmp_path, {"ERV_HEADER_TIMEOUT": str(header_timeout),
                                      "ERV_METRICS_TOKEN": METRICS_TOKEN, **env},
                           demo=False, nofile=FD_LIMIT)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Process]:
    process = await served_with(tmp_path)  # the default per-client cap
    try:
        yield process
    finally:
        await process.stop()


Held = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def half_sent(served: Process, handshake: bool) -> Held | None:
    """One connection that sends part of a request and stops (None if refused at once)."""
    try:
        if handshake:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", served.port, ssl=served.ssl, server_hostname="localhost",
                ssl_handshake_timeout=60)
            writer.write(b"GET /j/abcdefgh HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slo")
            await writer.drain()
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    except (OSError, ssl.SSLError):
        return None
    return reader, writer


async def open_attack(served: Process, never_handshake: int = NEVER_HANDSHAKE
                      ) -> list[Held | None]:
    gate = asyncio.Semaphore(100)

    async def one(i: int) -> Held | None:
        async with gate:
            return await half_sent(served, handshake=i >= never_handshake)

    return await asyncio.gather(*(one(i) for i in range(ATTACK)))


async def closed_by_server(held: Held | None) -> bool:
    """True once the server has closed it (read gives EOF or a reset)."""
    if held is None:
        return True
    reader, writer = held
    try:
        async with asyncio.timeout(60):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except (OSError, ssl.SSLError):
        pass
    writer.transport.abort()
    return True


async def get(served: Process, path: str, local: str, **headers: str) -> tuple[int, str]:
    """A normal HTTPS request from the local address `local` (127.0.0.2 is another client)."""
    connector = aiohttp.TCPConnector(local_addr=(local, 0), ssl=served.ssl, force_close=True)
    url = f"https://127.0.0.1:{served.port}{path}"
    async with aiohttp.ClientSession(connector=connector) as http, \
            asyncio.timeout(15), http.get(url, headers=headers) as response:
        return response.status, await response.text()


async def metrics(served: Process) -> dict[str, float]:
    status, text = await get(served, "/metrics", "127.0.0.3",
                             Authorization=f"Bearer {METRICS_TOKEN}")
    assert status == 200, text
    values = {}
    for line in text.splitlines():
        match = re.fullmatch(r'(erv_connections_[a-z_]+)(?:\{limit="([a-z_]+)"\})? (\S+)', line)
        if match:
            name = match.group(1) + (f":{match.group(2)}" if match.group(2) else "")
            values[name] = float(match.group(3))
    return values


async def test_half_sent_requests_from_one_client_do_not_exhaust_the_node(
        served: Process) -> None:
    held = await open_attack(served)
    # While they are held: another client is served, and so is monitoring.
    assert (await get(served, "/healthz", "127.0.0.2"))[0] == 200
    during = await metrics(served)
    assert during["erv_connections_refused_total:per_client"] >= ATTACK - 100 - 10
    assert during["erv_connections_open"] <= 100 + 2

    # Every one of them is closed by the server, none left hanging...
    closed = await asyncio.gather(*(closed_by_server(h) for h in held))
    assert all(closed), f"{closed.count(False)} half-sent connections were never closed"
    after = await metrics(served)
    assert after["erv_connections_timed_out_total"] >= during["erv_connections_open"] - 2
    assert after["erv_connections_open"] <= 2
    # ...and then the same client is served again.
    assert (await get(served, "/healthz", "127.0.0.1"))[0] == 200
    status, _ = await get(served, "/login", "127.0.0.1")
    assert status == 200
    logs = await served.output()
    assert "Traceback" not in logs and "Too many open files" not in logs, logs[-3000:]
    assert "127.0.0.1" not in logs.split("serving ", 1)[-1].split("\n", 1)[-1]


async def test_the_node_keeps_descriptors_back_when_the_attack_comes_from_everywhere(
        tmp_path: Path) -> None:
    """No per-client cap (as behind a proxy): the node's own cap, the file limit less a
    reserve, refuses connections before descriptors run out, so the node never fails to open
    its own files, and serves again once the header limit has closed the half-sent ones."""
    # TCP connections only (quick to open), held long enough that all are open at once.
    served = await served_with(tmp_path, header_timeout=10, ERV_MAX_CONNECTIONS_PER_CLIENT="0")
    try:
        held = await open_attack(served, never_handshake=ATTACK)
        closed = await asyncio.gather(*(closed_by_server(h) for h in held))
        assert all(closed), f"{closed.count(False)} half-sent connections were never closed"
        after = await metrics(served)
        assert after["erv_connections_refused_total:total"] >= 1
        assert after["erv_connections_timed_out_total"] >= FD_LIMIT - 128 - 10
        assert (await get(served, "/healthz", "127.0.0.1"))[0] == 200
        assert (await get(served, "/login", "127.0.0.2"))[0] == 200
        logs = await served.output()
        assert "Traceback" not in logs and "Too many open files" not in logs, logs[-3000:]
    finally:
        await served.stop()
