"""Retention contract: legal holds and purging on SQLite and on Redis give the same answers.

Pins, for both backends: a session idle past retention is crypto-shredded, its masked number
blanked (through the backend's own video session store) and its evidence folder removed,
while held and recent sessions are untouched and the chain still verifies; access events
(holds, exports) do not make a session recent; the cutoff is strict; purging is idempotent and
a released hold no longer protects; holds are refused without a reason, without a record, or
after a purge.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from server.record import SessionShredded, SqliteCaseRecordStore, load_or_create_keyring
from server.record.retention import (
    DAY,
    PurgeResult,
    Retention,
    RetentionError,
    RetentionStore,
)
from server.redis_backend.calls import RedisVideoSessions
from server.redis_backend.record import RedisCaseRecordStore
from server.redis_backend.retention import RedisRetention
from server.sessions import VideoSessions
from tests.support.record import (
    AnyRecordStore,
    RecordRig,
    RedisRecordRig,
    SqliteRecordRig,
    record_rig,
)
from tests.support.redis_server import RedisServer
from tests.support.unit_db import insert_staff

PHONE = "+447911123456"
MASKED = "+44•••••••456"
RETENTION_DAYS = 30
T0 = 1_700_000_000.0


def _typed(retention: Retention | RedisRetention) -> RetentionStore:
    """Both classes satisfy the interface (mypy checks this function)."""
    return retention


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    rig: RecordRig
    store: AnyRecordStore
    retention: Retention | RedisRetention
    sessions: VideoSessions | RedisVideoSessions
    clock: Clock
    evidence: Path
    handler_id: int

    async def new_session(self, at: float) -> str:
        """A video session (masked number) and its record, created at `at`."""
        session = await self.sessions.create("CAD-1", MASKED, self.handler_id)
        self.clock.now = at
        await self.store.append(session.id, "session_created", {"phone": PHONE})
        (self.evidence / session.id).mkdir(parents=True)
        (self.evidence / session.id / "e.bin").write_bytes(b"sealed")
        return session.id

    async def readable(self, session_id: str) -> bool:
        try:
            events = await self.store.read(session_id)
        except SessionShredded:
            return False
        assert events[0].body["phone"] == PHONE
        return True

    async def phone(self, session_id: str) -> str:
        session = await self.sessions.get(session_id)
        assert session is not None
        return session.phone


@pytest.fixture(params=["sqlite", "redis"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    server: RedisServer | None = None
    if request.param == "redis":
        request.getfixturevalue("redis_url")
        server = request.getfixturevalue("redis_server")
    keyring = load_or_create_keyring(tmp_path / "keys.json")
    clock = Clock()
    evidence = tmp_path / "evidence"
    async with record_rig(request.param, tmp_path, server) as rig:
        store = await rig.new_store(keyring, clock)
        retention: Retention | RedisRetention
        if isinstance(rig, SqliteRecordRig):
            assert isinstance(store, SqliteCaseRecordStore)
            retention = Retention(rig.db, store, evidence)
            sessions: VideoSessions | RedisVideoSessions = VideoSessions(rig.db)
            handler_id = await insert_staff(rig.db)
        else:
            assert isinstance(rig, RedisRecordRig) and isinstance(store, RedisCaseRecordStore)
            sessions = RedisVideoSessions(rig.client)
            retention = RedisRetention(rig.client, store, evidence, sessions=sessions)
            handler_id = 1
        await retention.open()
        yield World(rig, store, retention, sessions, clock, evidence, handler_id)


async def test_purge_shreds_old_keeps_held_and_recent(world: World) -> None:
    old = await world.new_session(T0)
    held = await world.new_session(T0 + 10)
    recent = await world.new_session(T0 + 20 * DAY)
    # Access events long after do not make a session recent.
    world.clock.now = T0 + 25 * DAY
    await world.retention.hold(held, "Op Juniper", by="sam")
    await world.store.append(old, "record_exported", {"by": "audrey"})
    # Nor does a later session's contact-history lookup of it (issue 11, finding 8).
    await world.store.append(old, "history_consulted",
                             {"by": 1, "via": "api", "details": False, "for_session": "s2"})
    now = T0 + (RETENTION_DAYS + 10) * DAY

    assert await world.retention.purge(RETENTION_DAYS, now) == PurgeResult(purged=1, held=1)
    assert not await world.readable(old)
    assert await world.phone(old) == ""
    assert not (world.evidence / old).exists()
    for kept in (held, recent):
        assert await world.readable(kept)
        assert await world.phone(kept) == MASKED
        assert (world.evidence / kept / "e.bin").exists()
    assert (await world.store.verify()).ok

    # Idempotent; a released hold no longer protects the session.
    assert await world.retention.purge(RETENTION_DAYS, now) == PurgeResult(purged=0, held=1)
    assert await world.retention.release(held, by="sam") is True
    assert await world.retention.release(held, by="sam") is False
    assert await world.retention.purge(RETENTION_DAYS, now) == PurgeResult(purged=1, held=0)
    assert not await world.readable(held)
    assert await world.readable(recent)
    kinds = [r.header.kind async for r in world.store.iterate_raw()]
    assert kinds.count("legal_hold_set") == 1 and kinds.count("legal_hold_released") == 1
    result = await world.store.verify()
    assert result.ok, result.describe()


async def test_the_cutoff_is_strict(world: World) -> None:
    session = await world.new_session(T0)
    exactly = T0 + RETENTION_DAYS * DAY
    assert await world.retention.purge(RETENTION_DAYS, exactly) == PurgeResult(0, 0)
    assert await world.retention.purge(RETENTION_DAYS, exactly + 0.5) == PurgeResult(1, 0)
    assert not await world.readable(session)


async def test_a_record_with_only_access_events_is_never_purged(world: World) -> None:
    await world.store.append("looked-at-only", "record_exported", {"by": "audrey"})
    assert await world.retention.purge(0, T0 + 1000 * DAY) == PurgeResult(0, 0)
    assert [e.header.kind for e in await world.store.read("looked-at-only")] == [
        "record_exported"]


async def test_holds_are_refused_without_reason_record_or_after_purge(world: World) -> None:
    session = await world.new_session(T0)
    with pytest.raises(RetentionError, match="needs a reason"):
        await world.retention.hold(session, "   ")
    with pytest.raises(RetentionError, match="no case record"):
        await world.retention.hold("nosuchsession", "x")
    assert await world.retention.release(session) is False
    # A second hold replaces the first (one hold per session).
    await world.retention.hold(session, "first", by="sam")
    await world.retention.hold(session, "second", by="sam")
    assert await world.retention.release(session) is True
    assert await world.retention.purge(RETENTION_DAYS, T0 + 1000 * DAY) == PurgeResult(1, 0)
    with pytest.raises(RetentionError, match="already purged"):
        await world.retention.hold(session, "too late")
    bodies = [r async for r in world.store.iterate_raw()]
    assert [r.header.kind for r in bodies].count("legal_hold_set") == 2
