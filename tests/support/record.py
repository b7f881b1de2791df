"""Reaching a case record from tests: a stopped server's store, the `erv` commands, and both
record backends (SQLite, Redis) behind one face for the contract tests."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from server.accounts import StaffRole
from server.cli import main
from server.config import Config
from server.db import Database
from server.record import Keyring, SqliteCaseRecordStore, StoredRecord
from server.record.keys import service_keyring
from server.redis_backend.record import (
    RecordKeys,
    RedisCaseRecordStore,
    decode_record,
    encode_record,
)
from server.stores import Stores, stores_for
from tests.support.calls import open_call
from tests.support.live import start_server
from tests.support.redis_server import RedisServer
from tests.support.unit_db import DB_NAME, database_bytes


def backend_env(backend: Mapping[str, Any]) -> dict[str, str]:
    """What `erv` needs in its environment to reach the stores of a server started with
    `backend` (the `backend` fixture's overrides): ERV_REDIS_URL when it used Redis."""
    url = backend.get("redis_url", "")
    return {"ERV_REDIS_URL": str(url)} if url else {}


@asynccontextmanager
async def stopped_stores(data_dir: Path, backend: Mapping[str, Any]) -> AsyncIterator[Stores]:
    """Every store of a stopped server, on its backend, as `erv` would open them."""
    config = Config(data_dir=data_dir, redis_url=str(backend.get("redis_url", "")))
    async with stores_for(config) as stores:
        yield stores


@asynccontextmanager
async def open_record(data_dir: Path) -> AsyncIterator[tuple[Database, SqliteCaseRecordStore]]:
    """The database and case record in `data_dir`, with the keys the service would use."""
    config = Config(data_dir=data_dir)
    db = Database(config.db_path)
    await db.open()
    try:
        store = SqliteCaseRecordStore(db, service_keyring(config))
        await store.open()
        yield db, store
    finally:
        await db.close()


def run_erv(data_dir: Path, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str], *argv: str,
            env: dict[str, str] | None = None) -> tuple[int, str]:
    """`erv ARGV` against `data_dir`, as an operator would run it: (exit code, output)."""
    monkeypatch.setenv("ERV_DATA_DIR", str(data_dir))
    for name in ("ERV_RECORD_KEYS", "ERV_RECORD_KEY_FILE", "ERV_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


async def record_a_call(tmp_path: Path, *extra_staff: tuple[str, StaffRole],
                        **overrides: Any) -> tuple[Path, str]:
    """Run a short whole call (join, chat, end) and stop the server (started with
    `overrides`, e.g. the `backend` fixture's): returns the data folder holding its case
    record, and the session id."""
    live = await start_server(tmp_path, **overrides)
    try:
        for username, role in extra_staff:
            await live.add_staff(username, role)
        call = await open_call(live, "hannah")
        await call.caller.send({"type": "chat", "text": "he is downstairs"})
        await call.handler.expect("chat")
        await call.handler.send({"type": "control", "op": "end"})
        await call.handler.expect_closed()
    finally:
        await live.stop()
    return tmp_path / "data", call.session_id


# --- both record backends behind one face, for contract tests -------------------------------

AnyRecordStore = SqliteCaseRecordStore | RedisCaseRecordStore


class RecordRig(ABC):
    """Builds record stores on one backend and does to its storage what an attacker with
    access to it could do (flip bytes, delete, reorder, edit headers), each in its own way."""

    name: str

    @abstractmethod
    async def new_store(self, keyring: Keyring,
                        clock: Callable[[], float] = time.time) -> AnyRecordStore: ...

    @abstractmethod
    async def flip_ciphertext(self, seq: int) -> None: ...

    @abstractmethod
    async def delete(self, seq: int) -> None: ...

    @abstractmethod
    async def swap(self, seq_a: int, seq_b: int) -> None:
        """Exchange two records' places in storage order."""

    @abstractmethod
    async def edit_header(self, seq: int, kind: str | None = None, at_shift: float = 0.0) -> None:
        ...

    @abstractmethod
    async def wrapped_keys(self, session_ref: str) -> dict[str, bytes]:
        """The session's wrapped data keys by master key id."""

    @abstractmethod
    async def persisted_bytes(self) -> bytes:
        """Everything the backend has written to disk, for plaintext and shredding checks."""

    @abstractmethod
    async def reopen(self) -> None:
        """Close and reopen the storage (a restart); stores made before are stale."""

    @abstractmethod
    async def close(self) -> None: ...


class SqliteRecordRig(RecordRig):
    name = "sqlite"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.db = Database(directory / DB_NAME)

    async def new_store(self, keyring: Keyring,
                        clock: Callable[[], float] = time.time) -> AnyRecordStore:
        store = SqliteCaseRecordStore(self.db, keyring, clock)
        await store.open()
        return store

    async def _run(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        def run(conn: sqlite3.Connection) -> None:
            assert conn.execute(sql, params).rowcount >= 1

        await self.db.transaction(run)

    async def flip_ciphertext(self, seq: int) -> None:
        row = await self.db.fetchone("SELECT ciphertext FROM case_records WHERE seq = ?", (seq,))
        assert row is not None
        ciphertext = bytearray(row["ciphertext"])
        ciphertext[5] ^= 0x01
        await self._run("UPDATE case_records SET ciphertext = ? WHERE seq = ?",
                        (bytes(ciphertext), seq))

    async def delete(self, seq: int) -> None:
        await self._run("DELETE FROM case_records WHERE seq = ?", (seq,))

    async def swap(self, seq_a: int, seq_b: int) -> None:
        def swap(conn: sqlite3.Connection) -> None:
            rows = conn.execute("SELECT * FROM case_records WHERE seq IN (?, ?) ORDER BY seq",
                                (seq_a, seq_b)).fetchall()
            columns = [c for c in rows[0].keys() if c != "position"]
            assignments = ", ".join(f"{c} = ?" for c in columns)
            for target, source in ((rows[0], rows[1]), (rows[1], rows[0])):
                conn.execute(f"UPDATE case_records SET {assignments} WHERE position = ?",
                             (*(source[c] for c in columns), target["position"]))

        await self.db.transaction(swap)

    async def edit_header(self, seq: int, kind: str | None = None, at_shift: float = 0.0) -> None:
        if kind is not None:
            await self._run("UPDATE case_records SET kind = ? WHERE seq = ?", (kind, seq))
        if at_shift:
            await self._run("UPDATE case_records SET at = at + ? WHERE seq = ?", (at_shift, seq))

    async def wrapped_keys(self, session_ref: str) -> dict[str, bytes]:
        rows = await self.db.fetchall(
            "SELECT key_id, wrapped FROM case_record_keys WHERE session_ref = ?"
            " ORDER BY created_at", (session_ref,))
        return {row["key_id"]: bytes(row["wrapped"]) for row in rows}

    async def persisted_bytes(self) -> bytes:
        return database_bytes(self.directory)

    async def reopen(self) -> None:
        await self.db.close()
        self.db = Database(self.directory / DB_NAME)
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()


def as_bytes(value: object) -> bytes:
    """A reply of a bytes client (decode_responses=False), typed as such."""
    assert isinstance(value, bytes), value
    return value


def redis_client(url: str) -> aioredis.Redis:
    """A client as a node would make one: bytes replies, and timeouts so nothing hangs."""
    return aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)


class RedisRecordRig(RecordRig):
    name = "redis"

    def __init__(self, server: RedisServer, prefix: str = "erv:") -> None:
        self.server = server
        self.prefix = prefix
        self.keys = RecordKeys(prefix)
        self.client = redis_client(server.url)

    async def new_store(self, keyring: Keyring,
                        clock: Callable[[], float] = time.time) -> AnyRecordStore:
        store = RedisCaseRecordStore(self.client, keyring, clock, prefix=self.prefix)
        await store.open()
        return store

    async def _position(self, seq: int) -> tuple[int, StoredRecord]:
        stored = await self.client.hgetall(self.keys.records)
        for position, blob in stored.items():
            record = decode_record(as_bytes(blob))
            if record.header.seq == seq:
                return int(position), record
        raise AssertionError(f"no record {seq} stored")

    async def _put(self, position: int, record: StoredRecord) -> None:
        await self.client.hset(self.keys.records, str(position), encode_record(record))

    async def flip_ciphertext(self, seq: int) -> None:
        position, record = await self._position(seq)
        ciphertext = bytearray(record.ciphertext)
        ciphertext[5] ^= 0x01
        await self._put(position, replace(record, ciphertext=bytes(ciphertext)))

    async def delete(self, seq: int) -> None:
        position, _ = await self._position(seq)
        assert await self.client.hdel(self.keys.records, str(position)) == 1

    async def swap(self, seq_a: int, seq_b: int) -> None:
        (pos_a, rec_a), (pos_b, rec_b) = await self._position(seq_a), await self._position(seq_b)
        await self._put(pos_a, rec_b)
        await self._put(pos_b, rec_a)

    async def edit_header(self, seq: int, kind: str | None = None, at_shift: float = 0.0) -> None:
        position, record = await self._position(seq)
        header = replace(record.header, kind=kind or record.header.kind,
                         at=record.header.at + at_shift)
        await self._put(position, replace(record, header=header))

    async def wrapped_keys(self, session_ref: str) -> dict[str, bytes]:
        raw = await self.client.hgetall(self.keys.data_keys(session_ref))
        return {as_bytes(k).decode(): as_bytes(v) for k, v in raw.items()}

    async def persisted_bytes(self) -> bytes:
        # A rewrite asked for by a shred replaces the older files once it is done.
        for _ in range(200):
            info = await self.client.info("persistence")
            if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
                break
            await asyncio.sleep(0.05)
        return self.server.aof_bytes()

    async def reopen(self) -> None:
        await self.client.aclose()
        self.server.stop()
        self.server.start()
        self.client = redis_client(self.server.url)

    async def close(self) -> None:
        await self.client.aclose()


@asynccontextmanager
async def record_rig(kind: str, tmp_path: Path,
                     redis_server: RedisServer | None) -> AsyncIterator[RecordRig]:
    """A rig of `kind` ("sqlite" or "redis"); Redis is the test's empty `redis_server`."""
    rig: RecordRig
    if kind == "sqlite":
        sqlite_rig = SqliteRecordRig(tmp_path)
        await sqlite_rig.db.open()
        rig = sqlite_rig
    else:
        assert redis_server is not None
        rig = RedisRecordRig(redis_server)
    try:
        yield rig
    finally:
        await rig.close()
