"""Both staff stores (SQLite and Redis) behind one face, for contract tests.

A backend builds the account and session stores and answers the few questions a test needs to
ask of what is stored (password hash, every byte persisted) in its own way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis

from server.accounts import StaffAccounts
from server.auth import StaffSessions
from server.db import Database
from server.redis_backend.accounts import RedisStaffAccounts, RedisStaffSessions
from server.throttle import ThrottlePolicy
from tests.support.call_stores import redis_contents
from tests.support.live import TEST_SCRYPT_N
from tests.support.redis_server import RedisServer
from tests.support.unit_db import database_bytes

PREFIX = "ervtest:"
AnyAccounts = StaffAccounts | RedisStaffAccounts
AnySessions = StaffSessions | RedisStaffSessions


class StaffBackend(ABC):
    name: str

    @abstractmethod
    def accounts(self, policy: ThrottlePolicy | None = None,
                 scrypt_n: int = TEST_SCRYPT_N) -> AnyAccounts: ...

    @abstractmethod
    def sessions(self, accounts: AnyAccounts, ttl: int) -> AnySessions: ...

    @abstractmethod
    async def password_hash(self, staff_id: int) -> str | None: ...

    @abstractmethod
    async def staff_count(self) -> int: ...

    @abstractmethod
    async def disable(self, staff_id: int) -> None:
        """What an administrator's "disable" does: the stores have no method for it yet."""

    @abstractmethod
    async def set_available_since(self, staff_id: int, when: float) -> None: ...

    @abstractmethod
    async def stored_bytes(self) -> bytes:
        """Everything the backend keeps or has persisted, for plaintext checks."""


class SqliteStaffBackend(StaffBackend):
    name = "sqlite"

    def __init__(self, db: Database) -> None:
        self.db = db

    def accounts(self, policy: ThrottlePolicy | None = None,
                 scrypt_n: int = TEST_SCRYPT_N) -> AnyAccounts:
        return StaffAccounts(self.db, policy, scrypt_n)

    def sessions(self, accounts: AnyAccounts, ttl: int) -> AnySessions:
        assert isinstance(accounts, StaffAccounts)
        return StaffSessions(self.db, accounts, ttl)

    async def password_hash(self, staff_id: int) -> str | None:
        row = await self.db.fetchone("SELECT password_hash FROM staff WHERE id = ?", (staff_id,))
        return None if row is None else str(row["password_hash"])

    async def staff_count(self) -> int:
        return len(await self.db.fetchall("SELECT id FROM staff"))

    async def disable(self, staff_id: int) -> None:
        await self.db.execute("UPDATE staff SET disabled = 1 WHERE id = ?", (staff_id,))

    async def set_available_since(self, staff_id: int, when: float) -> None:
        await self.db.execute(
            "UPDATE staff SET available_since = ? WHERE id = ?", (when, staff_id)
        )

    async def stored_bytes(self) -> bytes:
        return database_bytes(self.db.path.parent)


class RedisStaffBackend(StaffBackend):
    name = "redis"

    def __init__(self, client: aioredis.Redis, server: RedisServer) -> None:
        self.client = client
        self.server = server

    def accounts(self, policy: ThrottlePolicy | None = None,
                 scrypt_n: int = TEST_SCRYPT_N) -> AnyAccounts:
        return RedisStaffAccounts(self.client, policy, scrypt_n, prefix=PREFIX)

    def sessions(self, accounts: AnyAccounts, ttl: int) -> AnySessions:
        return RedisStaffSessions(self.client, accounts, ttl, prefix=PREFIX)

    def staff_key(self, staff_id: int) -> str:
        return f"{PREFIX}staff:{staff_id}"

    async def password_hash(self, staff_id: int) -> str | None:
        raw = await self.client.hget(self.staff_key(staff_id), "password_hash")
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else raw

    async def staff_count(self) -> int:
        return len([key async for key in self.client.scan_iter(match=f"{PREFIX}staff:[0-9]*")])

    async def disable(self, staff_id: int) -> None:
        await self.client.hset(self.staff_key(staff_id), "disabled", "1")

    async def set_available_since(self, staff_id: int, when: float) -> None:
        await self.client.hset(self.staff_key(staff_id), "available_since", repr(when))

    async def stored_bytes(self) -> bytes:
        return self.server.aof_bytes() + await redis_contents(self.client)


@asynccontextmanager
async def redis_client(url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()

