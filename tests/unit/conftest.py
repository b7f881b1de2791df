"""Fixtures for unit tests of the stores: a real SQLite database in a temporary folder, and
both staff stores (SQLite and Redis) for their contract tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.db import Database
from tests.support.redis_server import RedisServer
from tests.support.staff_stores import (
    RedisStaffBackend,
    SqliteStaffBackend,
    StaffBackend,
    redis_client,
)
from tests.support.unit_db import temporary_database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with temporary_database(tmp_path) as database:
        yield database


# The staff stores' contract tests: each test taking `staff_backend` runs on SQLite and on
# Redis.
@pytest.fixture(params=["sqlite", "redis"])
def store_under(request: pytest.FixtureRequest) -> Database | RedisServer:
    """The `db` fixture or the (emptied) `redis_server`, one test run for each."""
    if request.param == "sqlite":
        db: Database = request.getfixturevalue("db")
        return db
    request.getfixturevalue("redis_url")
    server: RedisServer = request.getfixturevalue("redis_server")
    return server


@pytest.fixture
async def staff_backend(store_under: Database | RedisServer) -> AsyncIterator[StaffBackend]:
    if isinstance(store_under, Database):
        yield SqliteStaffBackend(store_under)
        return
    async with redis_client(store_under.url) as client:
        yield RedisStaffBackend(client, store_under)
