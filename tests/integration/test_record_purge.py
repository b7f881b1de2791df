"""`erv purge` with retention and legal hold on real sessions: a session past retention is
crypto-shredded (its record cannot be decrypted, its masked number is blanked) while the chain
still verifies; a held session and a recent one are untouched; releasing a hold lets it go."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from server import keys
from server.accounts import StaffRole
from server.config import Config
from server.record import SessionShredded
from server.record import retention as retention_module
from server.record.retention import ACCESS_KINDS
from server.redis_backend.record import RecordKeys
from tests.support.call_stores import redis_contents
from tests.support.live import LiveServer, settled_aof_bytes, start_server
from tests.support.record import backend_env, run_erv, stopped_stores
from tests.support.redis_server import RedisServer

RETENTION_DAYS = 30


Stopped = tuple[Path, dict[str, Any]]  # a stopped server's data folder, and its backend


@pytest.fixture
async def three_sessions(backend: dict[str, Any],
                         tmp_path: Path) -> tuple[Stopped, list[str]]:
    """A data folder (and Redis) with three sessions created one after another (server
    stopped)."""
    live: LiveServer = await start_server(tmp_path, **backend)
    try:
        staff = await live.staff_client("hannah", StaffRole.HANDLER)
        ids = [await staff.create_session(ref=f"CAD-{n}") for n in range(3)]
    finally:
        await live.stop()
    return (tmp_path / "data", backend), ids


def erv(stopped: Stopped, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        *argv: str) -> tuple[int, str]:
    data_dir, backend = stopped
    return run_erv(data_dir, monkeypatch, capsys, *argv,
                   env={**backend_env(backend), "ERV_RETENTION_DAYS": str(RETENTION_DAYS)})


async def readable(stopped: Stopped, session_id: str) -> bool:
    async with stopped_stores(*stopped) as stores:
        try:
            events = await stores.record.read(session_id)
        except SessionShredded:
            return False
        assert events and events[0].header.kind == "session_created"
        assert events[0].body["phone"] == "+447911123456"
        return True


async def facts(stopped: Stopped, session_id: str) -> tuple[str, int, float]:
    """(the session's stored masked phone, wrapped data keys left, time of the last
    non-access event)."""
    async with stopped_stores(*stopped) as stores:
        session = await stores.sessions.get(session_id)
        assert session is not None
        last = max([record.header.at async for record in stores.record.iterate_raw()
                    if record.header.session_ref == session_id
                    and record.header.kind not in ACCESS_KINDS])
        if stores.redis is not None:
            key = RecordKeys(Config().redis_prefix).data_keys(session_id)
            wrapped = int(await stores.redis.hlen(key))
        else:
            assert stores.db is not None
            row = await stores.db.fetchone(
                "SELECT COUNT(*) AS n FROM case_record_keys WHERE session_ref = ?",
                (session_id,))
            assert row is not None
            wrapped = int(row["n"])
        return session.phone, wrapped, last


async def at_rest(stopped: Stopped, redis_server: RedisServer | None) -> bytes:
    """The SQLite file, or every Redis key and value and Redis's append-only files."""
    data_dir, _ = stopped
    async with stopped_stores(*stopped) as stores:
        if stores.redis is None:
            return (data_dir / "erv.sqlite3").read_bytes()
        assert redis_server is not None
        return (await redis_contents(stores.redis)
                + await settled_aof_bytes(stores.redis, redis_server))


def test_purge_shreds_old_keeps_held_and_recent(three_sessions: tuple[Stopped, list[str]],
                                                request: pytest.FixtureRequest,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    stopped, (old, held, recent) = three_sessions
    data_dir, backend = stopped
    code, text = erv(stopped, monkeypatch, capsys, "hold", held, "--reason", "Op Juniper")
    assert code == 0, text
    # "Now" is chosen so the first two sessions are past retention and the third is not;
    # the hold's own record event does not make the held session recent.
    last = {s: asyncio.run(facts(stopped, s))[2] for s in (old, held, recent)}
    assert last[held] < last[recent]
    now = (last[held] + last[recent]) / 2 + RETENTION_DAYS * 86400
    # Stand-ins for stored evidence files (their real form is tested in test_evidence.py).
    for session in (old, held, recent):
        (data_dir / "evidence" / session).mkdir(parents=True)
        (data_dir / "evidence" / session / "e.bin").write_bytes(b"sealed")

    code, text = erv(stopped, monkeypatch, capsys, "purge", "--now", str(now))
    assert code == 0, text
    assert f"purged 1 sessions older than {RETENTION_DAYS} days; 1 kept on legal hold" in text
    assert not (data_dir / "evidence" / old).exists()
    assert (data_dir / "evidence" / held / "e.bin").exists()
    assert (data_dir / "evidence" / recent / "e.bin").exists()
    assert old not in text  # only counts are printed about purged sessions

    assert not asyncio.run(readable(stopped, old))
    phone, keys, _ = asyncio.run(facts(stopped, old))
    assert phone == "" and keys == 0
    for kept in (held, recent):
        assert asyncio.run(readable(stopped, kept))
        phone, keys, _ = asyncio.run(facts(stopped, kept))
        assert phone.startswith("+44") and "•" in phone and keys >= 1
    redis = request.getfixturevalue("redis_server") if backend else None
    assert b"+447911123456" not in asyncio.run(at_rest(stopped, redis))

    code, text = erv(stopped, monkeypatch, capsys, "verify-record")
    assert code == 0 and "chain intact" in text, text

    # Idempotent; a released hold no longer protects the session.
    code, text = erv(stopped, monkeypatch, capsys, "purge", "--now", str(now))
    assert "purged 0 sessions" in text and "1 kept on legal hold" in text, text
    code, text = erv(stopped, monkeypatch, capsys, "release", held)
    assert code == 0, text
    code, text = erv(stopped, monkeypatch, capsys, "purge", "--now", str(now))
    assert "purged 1 sessions" in text and "0 kept on legal hold" in text, text
    assert not asyncio.run(readable(stopped, held))
    assert asyncio.run(readable(stopped, recent))
    code, text = erv(stopped, monkeypatch, capsys, "verify-record")
    assert code == 0 and "chain intact" in text, text


def test_hold_needs_a_live_record(three_sessions: tuple[Stopped, list[str]],
                                  monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    stopped, (first, _, _) = three_sessions
    code, text = erv(stopped, monkeypatch, capsys, "hold", "nosuchsession", "--reason", "x")
    assert code == 2 and "no case record" in text, text
    code, text = erv(stopped, monkeypatch, capsys, "release", first)
    assert code == 2 and "not on legal hold" in text, text
    code, text = erv(stopped, monkeypatch, capsys, "purge", "--now", "2099-01-01T00:00:00")
    assert code == 0 and "purged 3 sessions" in text, text
    code, text = erv(stopped, monkeypatch, capsys, "hold", first, "--reason", "too late")
    assert code == 2 and "already purged" in text, text


class TwoDaysLater:
    """The retention module's clock, two days on: record times are sealed in the record's
    authenticated headers, so the test moves the purge's clock instead of the data."""

    offset = 0.0

    @classmethod
    def time(cls) -> float:
        return time.time() + cls.offset


async def test_the_running_service_purges_by_itself(backend: dict[str, Any], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """No operator needed: the service's own periodic run shreds an expired session and the
    chain still verifies."""
    monkeypatch.setattr(retention_module, "time", TwoDaysLater)
    live = await start_server(tmp_path, retention_days=1, purge_interval=1, **backend)
    try:
        staff = await live.staff_client("hannah", StaffRole.HANDLER)
        old = await staff.create_session(ref="CAD-OLD")
        monkeypatch.setattr(TwoDaysLater, "offset", 2 * 86400)
        record = live.app[keys.RECORD]
        for _ in range(100):
            try:
                await record.read(old)
            except SessionShredded:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the periodic purge never shredded the expired session")
        assert (await record.verify()).ok
        # Keeping recent and held sessions is pinned by the `erv purge` tests above.
    finally:
        await live.stop()
