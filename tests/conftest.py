"""Shared fixtures: a real server on a real port, with real staff accounts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.live import LiveServer, start_server


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveServer]:
    server = await start_server(tmp_path)
    try:
        yield server
    finally:
        await server.stop()
