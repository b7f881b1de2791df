"""Fixtures shared by the multinode tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.nodes import Cluster, start_cluster


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Two `erv run` nodes on one Redis (a test file wanting more defines its own)."""
    cluster = await start_cluster(tmp_path, 2)
    try:
        yield cluster
    finally:
        await cluster.close()
