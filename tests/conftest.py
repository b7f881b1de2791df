"""Shared fixtures: a real server on a real port, with real staff accounts."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Playwright, async_playwright

from tests.support.browser import CHROMIUM
from tests.support.live import TEST_SCRYPT_N, LiveServer, start_server
from tests.support.redis_server import RedisServer

# `erv` run by tests (in-process or as a child) hashes at a test cost, not OWASP's 2^17.
os.environ.setdefault("ERV_SCRYPT_N", str(TEST_SCRYPT_N))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the whole run, on a free port; tests get it empty."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of an empty Redis (restarted if an earlier test stopped it)."""
    if redis_server.process is None or not redis_server.ping():
        redis_server.start()
    redis_server.flush()
    return redis_server.url


BACKENDS = ("embedded", "redis")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Server settings for one backend: {} for the embedded SQLite default, or the URL of an
    empty real redis-server of the tests' own. Every test taking it runs against both."""
    if request.param == "redis":
        return {"redis_url": request.getfixturevalue("redis_url")}
    return {}


@pytest.fixture
async def live(backend: dict[str, Any], tmp_path: Path) -> AsyncIterator[LiveServer]:
    """A real server on a real port, on each backend in turn."""
    server = await start_server(tmp_path, **backend)
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def playwright() -> AsyncIterator[Playwright]:
    """Playwright for Debian's Chromium (browser/ and field/ tests)."""
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: `apt-get install chromium` (CI does)")
    async with async_playwright() as p:
        yield p
