"""Real Chromium (Debian's) driven by Playwright, with a fake camera and microphone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Playwright

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.live import LiveServer, start_server


@pytest.fixture
async def browser(playwright: Playwright) -> AsyncIterator[Browser]:
    browser = await playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    try:
        yield browser
    finally:
        await browser.close()


@pytest.fixture
async def fast_live(tmp_path: Path) -> AsyncIterator[LiveServer]:
    """The embedded server with a 4 s heartbeat, so pages ping every 4 s and give a socket up
    after 2 s without an answer: for tests of what the pages do when sockets die. These
    tests are about the pages, not the store, so they run once (on the embedded store)."""
    server = await start_server(tmp_path, heartbeat=4)
    try:
        yield server
    finally:
        await server.stop()
