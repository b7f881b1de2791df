"""Fixtures for unit tests of the stores: a real SQLite database in a temporary folder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.db import Database
from tests.support.unit_db import temporary_database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with temporary_database(tmp_path) as database:
        yield database
