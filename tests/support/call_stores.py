"""The call stores (sessions, invite links, specialist invitations) on SQLite or on Redis.

Contract tests take a `CallStores` built for each backend and must not be able to tell them
apart; the few helpers here that look inside a backend say so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis.asyncio import Redis

from server.db import Database
from server.invites import InviteBook, InviteStore
from server.redis_backend.calls import RedisVideoSessions
from server.redis_backend.invitations import RedisSpecialistInvitations
from server.redis_backend.links import RedisInviteBook
from server.sessions import VideoSessions, VideoSessionStore
from server.specialists import InvitationStore, SpecialistInvitations
from tests.support.redis_server import RedisServer
from tests.support.unit_db import database_bytes, insert_staff, temporary_database

BACKENDS = ["sqlite", "redis"]
PREFIX = "erv:"
TTL = 600
CREDENTIAL_TTL = 3600
RING_SECONDS = 60


@dataclass
class CallStores:
    backend: str
    sessions: VideoSessionStore
    invites: InviteStore
    invitations: InvitationStore
    db: Database | None = None
    redis: Redis | None = None
    redis_server: RedisServer | None = None
    data_dir: Path | None = None
    _staff: int = field(default=0)
    _handler: int | None = None

    async def handler(self) -> int:
        """One handler, made on first use, for tests that need any session."""
        if self._handler is None:
            self._handler = await self.staff("hannah")
        return self._handler

    async def new_session(self) -> str:
        return (await self.sessions.create("CAD-1", "+447911123456", await self.handler())).id

    async def staff(self, username: str = "hannah", role: str = "handler") -> int:
        """A staff id sessions and invitations can refer to (SQLite checks foreign keys)."""
        if self.db is not None:
            return await insert_staff(self.db, username, role)
        self._staff += 1
        return self._staff

    async def credential_count(self) -> int:
        """How many victim credentials have been stored (looks inside the backend)."""
        if self.db is not None:
            return len(await self.db.fetchall("SELECT * FROM credentials"))
        assert self.redis is not None
        return len([k async for k in self.redis.scan_iter(match=PREFIX + "call:credential:*")])

    async def stored_bytes(self) -> bytes:
        """Everything the backend holds or has persisted, for plaintext checks."""
        if self.db is not None:
            assert self.data_dir is not None
            return database_bytes(self.data_dir)
        assert self.redis is not None and self.redis_server is not None
        return await redis_contents(self.redis) + self.redis_server.aof_bytes()


def _raw(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


async def redis_contents(redis: Redis) -> bytes:
    """Every key and every value in Redis, concatenated."""
    out: list[object] = []
    async for key in redis.scan_iter():
        out.append(key)
        kind = _raw(await redis.type(key))
        if kind == b"string":
            out.append(await redis.get(key) or b"")
        elif kind == b"hash":
            for name, value in (await redis.hgetall(key)).items():
                out += [name, value]
        elif kind == b"list":
            out += await redis.lrange(key, 0, -1)
        elif kind == b"set":
            out += list(await redis.smembers(key))
        elif kind == b"zset":
            out += await redis.zrange(key, 0, -1)
        else:
            raise AssertionError(f"unexpected Redis type {kind!r}")
    return b"\n".join(_raw(item) for item in out)


def redis_stores(
    redis: Redis, redis_server: RedisServer | None = None, *, ttl: int = TTL,
    credential_ttl: int = CREDENTIAL_TTL, ring_seconds: int = RING_SECONDS,
) -> CallStores:
    return CallStores(
        "redis",
        RedisVideoSessions(redis, prefix=PREFIX),
        RedisInviteBook(redis, ttl, credential_ttl, prefix=PREFIX),
        RedisSpecialistInvitations(redis, ring_seconds, prefix=PREFIX),
        redis=redis,
        redis_server=redis_server,
    )


@asynccontextmanager
async def call_stores(request: pytest.FixtureRequest) -> AsyncIterator[CallStores]:
    """The stores for `request.param` ("sqlite" or "redis"), on a fresh, empty backend.

    Only the backend asked for is started (`redis_url` is looked up only for Redis).
    """
    if request.param == "sqlite":
        directory: Path = request.getfixturevalue("tmp_path")
        async with temporary_database(directory) as db:
            yield CallStores(
                "sqlite", VideoSessions(db), InviteBook(db, TTL, CREDENTIAL_TTL),
                SpecialistInvitations(db, RING_SECONDS), db=db, data_dir=directory,
            )
        return
    url: str = request.getfixturevalue("redis_url")
    server: RedisServer = request.getfixturevalue("redis_server")
    client = Redis.from_url(url)
    try:
        yield redis_stores(client, server)
    finally:
        await client.aclose()
