"""`erv purge` with retention and legal hold on real sessions: a session past retention is
crypto-shredded (its record cannot be decrypted, its masked number is blanked) while the chain
still verifies; a held session and a recent one are untouched; releasing a hold lets it go."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from server import keys
from server.accounts import StaffRole
from server.record import SessionShredded
from server.record import retention as retention_module
from server.record.retention import ACCESS_KINDS
from tests.support.live import LiveServer, start_server
from tests.support.record import open_record, run_erv

RETENTION_DAYS = 30


@pytest.fixture
async def three_sessions(tmp_path: Path) -> tuple[Path, list[str]]:
    """A data folder with three sessions created one after another (server stopped)."""
    live: LiveServer = await start_server(tmp_path)
    try:
        staff = await live.staff_client("hannah", StaffRole.HANDLER)
        ids = [await staff.create_session(ref=f"CAD-{n}") for n in range(3)]
    finally:
        await live.stop()
    return tmp_path / "data", ids


def erv(data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        *argv: str) -> tuple[int, str]:
    return run_erv(data_dir, monkeypatch, capsys, *argv,
                   env={"ERV_RETENTION_DAYS": str(RETENTION_DAYS)})


async def readable(data_dir: Path, session_id: str) -> bool:
    async with open_record(data_dir) as (_, store):
        try:
            events = await store.read(session_id)
        except SessionShredded:
            return False
        assert events and events[0].header.kind == "session_created"
        assert events[0].body["phone"] == "+447911123456"
        return True


def db_facts(data_dir: Path, session_id: str) -> tuple[str, int, float]:
    """(phone in video_sessions, wrapped data keys left, time of the last non-access event)."""
    conn = sqlite3.connect(data_dir / "erv.sqlite3")
    try:
        phone = conn.execute("SELECT phone FROM video_sessions WHERE id = ?",
                             (session_id,)).fetchone()[0]
        keys = conn.execute("SELECT COUNT(*) FROM case_record_keys WHERE session_ref = ?",
                            (session_id,)).fetchone()[0]
        marks = ", ".join("?" for _ in ACCESS_KINDS)
        last = conn.execute(f"SELECT MAX(at) FROM case_records WHERE session_ref = ?"
                            f" AND kind NOT IN ({marks})", (session_id, *ACCESS_KINDS)).fetchone()
        return str(phone), int(keys), float(last[0])
    finally:
        conn.close()


def test_purge_shreds_old_keeps_held_and_recent(three_sessions: tuple[Path, list[str]],
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    data_dir, (old, held, recent) = three_sessions
    code, text = erv(data_dir, monkeypatch, capsys, "hold", held, "--reason", "Op Juniper")
    assert code == 0, text
    # "Now" is chosen so the first two sessions are past retention and the third is not;
    # the hold's own record event does not make the held session recent.
    last = {s: db_facts(data_dir, s)[2] for s in (old, held, recent)}
    assert last[held] < last[recent]
    now = (last[held] + last[recent]) / 2 + RETENTION_DAYS * 86400
    # Stand-ins for stored evidence files (their real form is tested in test_evidence.py).
    for session in (old, held, recent):
        (data_dir / "evidence" / session).mkdir(parents=True)
        (data_dir / "evidence" / session / "e.bin").write_bytes(b"sealed")

    code, text = erv(data_dir, monkeypatch, capsys, "purge", "--now", str(now))
    assert code == 0, text
    assert f"purged 1 sessions older than {RETENTION_DAYS} days; 1 kept on legal hold" in text
    assert not (data_dir / "evidence" / old).exists()
    assert (data_dir / "evidence" / held / "e.bin").exists()
    assert (data_dir / "evidence" / recent / "e.bin").exists()
    assert old not in text  # only counts are printed about purged sessions

    assert not asyncio.run(readable(data_dir, old))
    phone, keys, _ = db_facts(data_dir, old)
    assert phone == "" and keys == 0
    for kept in (held, recent):
        assert asyncio.run(readable(data_dir, kept))
        phone, keys, _ = db_facts(data_dir, kept)
        assert phone.startswith("+44") and "•" in phone and keys >= 1
    raw = (data_dir / "erv.sqlite3").read_bytes()
    assert b"+447911123456" not in raw

    code, text = erv(data_dir, monkeypatch, capsys, "verify-record")
    assert code == 0 and "chain intact" in text, text

    # Idempotent; a released hold no longer protects the session.
    code, text = erv(data_dir, monkeypatch, capsys, "purge", "--now", str(now))
    assert "purged 0 sessions" in text and "1 kept on legal hold" in text, text
    code, text = erv(data_dir, monkeypatch, capsys, "release", held)
    assert code == 0, text
    code, text = erv(data_dir, monkeypatch, capsys, "purge", "--now", str(now))
    assert "purged 1 sessions" in text and "0 kept on legal hold" in text, text
    assert not asyncio.run(readable(data_dir, held))
    assert asyncio.run(readable(data_dir, recent))
    code, text = erv(data_dir, monkeypatch, capsys, "verify-record")
    assert code == 0 and "chain intact" in text, text


def test_hold_needs_a_live_record(three_sessions: tuple[Path, list[str]],
                                  monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    data_dir, (first, _, _) = three_sessions
    code, text = erv(data_dir, monkeypatch, capsys, "hold", "nosuchsession", "--reason", "x")
    assert code == 2 and "no case record" in text, text
    code, text = erv(data_dir, monkeypatch, capsys, "release", first)
    assert code == 2 and "not on legal hold" in text, text
    code, text = erv(data_dir, monkeypatch, capsys, "purge", "--now", "2099-01-01T00:00:00")
    assert code == 0 and "purged 3 sessions" in text, text
    code, text = erv(data_dir, monkeypatch, capsys, "hold", first, "--reason", "too late")
    assert code == 2 and "already purged" in text, text


class TwoDaysLater:
    """The retention module's clock, two days on: record times are sealed in the record's
    authenticated headers, so the test moves the purge's clock instead of the data."""

    offset = 0.0

    @classmethod
    def time(cls) -> float:
        return time.time() + cls.offset


async def test_the_running_service_purges_by_itself(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """No operator needed: the service's own periodic run shreds an expired session and the
    chain still verifies."""
    monkeypatch.setattr(retention_module, "time", TwoDaysLater)
    live = await start_server(tmp_path, retention_days=1, purge_interval=1)
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
