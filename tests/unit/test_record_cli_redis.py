"""The `erv` record commands with ERV_REDIS_URL set: verify-record, hold, release, purge and
export work on the Redis stores, with the same messages as on SQLite, and never open the
SQLite database."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from server.accounts import StaffRole
from server.config import Config
from server.record.keys import service_keyring
from server.redis_backend.accounts import RedisStaffAccounts
from server.redis_backend.calls import RedisVideoSessions
from server.redis_backend.record import RedisCaseRecordStore
from tests.support.live import TEST_SCRYPT_N
from tests.support.record import redis_client, run_erv
from tests.support.redis_server import RedisServer

PHONE = "+447911123456"
DAY = 86400.0
T0 = time.time() - 100 * DAY


async def populate(url: str, data_dir: Path) -> list[str]:
    """An auditor and three sessions, ten days apart, in Redis; returns the session ids."""
    client = redis_client(url)
    try:
        await RedisStaffAccounts(client, scrypt_n=TEST_SCRYPT_N).add(
            "audrey", "Audrey", StaffRole.AUDITOR, "correct horse battery staple")
        sessions = RedisVideoSessions(client)
        moment = [T0]
        store = RedisCaseRecordStore(client, service_keyring(Config(data_dir=data_dir)),
                                     lambda: moment[0])
        ids = []
        for n in range(3):
            session = await sessions.create(f"CAD-{n}", "+44•••••••456", 1)
            moment[0] = T0 + n * 10 * DAY
            await store.append(session.id, "session_created", {"phone": PHONE})
            await store.append(session.id, "chat", {"text": "he is downstairs"})
            ids.append(session.id)
        return ids
    finally:
        await client.aclose()


async def phone_of(url: str, session_id: str) -> str:
    client = redis_client(url)
    try:
        session = await RedisVideoSessions(client).get(session_id)
        assert session is not None
        return session.phone
    finally:
        await client.aclose()


def test_record_commands_on_redis(redis_url: str, redis_server: RedisServer, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "data"
    old, held, recent = asyncio.run(populate(redis_url, data_dir))
    env = {"ERV_REDIS_URL": redis_url, "ERV_RETENTION_DAYS": "30"}

    def erv(*argv: str) -> tuple[int, str]:
        return run_erv(data_dir, monkeypatch, capsys, *argv, env=env)

    code, text = erv("verify-record")
    assert (code, text.strip()) == (0, "chain intact: 6 records verified")
    code, text = erv("hold", held, "--reason", "Op Juniper")
    assert code == 0 and f"session {held} is on legal hold" in text, text
    code, text = erv("hold", "nosuchsession", "--reason", "x")
    assert code == 2 and "no case record" in text, text

    # Day 10 + 30 + 5: the first two are past retention, the third is not.
    now = str(T0 + 45 * DAY)
    code, text = erv("purge", "--now", now)
    assert code == 0, text
    assert "purged 1 sessions older than 30 days; 1 kept on legal hold" in text
    assert old not in text
    assert asyncio.run(phone_of(redis_url, old)) == ""
    assert asyncio.run(phone_of(redis_url, held)) != ""
    code, text = erv("export", old, "--out", str(tmp_path / "gone"), "--by", "audrey")
    assert code == 2 and "was purged" in text, text

    code, text = erv("release", held)
    assert code == 0 and "lifted" in text, text
    code, text = erv("release", held)
    assert code == 2 and "not on legal hold" in text, text
    code, text = erv("purge", "--now", now)
    assert "purged 1 sessions" in text and "0 kept on legal hold" in text, text

    bundle = tmp_path / "bundle"
    code, text = erv("export", recent, "--out", str(bundle), "--by", "audrey")
    assert code == 0 and f"exported 2 events of session {recent}" in text, text
    code, text = erv("export", recent, "--out", str(tmp_path / "b2"), "--by", "nobody")
    assert code == 2 and "not an active auditor account" in text, text
    code, text = erv("verify-export", str(bundle))
    assert code == 0 and "export intact" in text, text
    assert PHONE in (bundle / "events.json").read_text()

    code, text = erv("verify-record")
    assert code == 0 and "chain intact" in text, text
    assert not (data_dir / "erv.sqlite3").exists()  # the Redis backend never opened SQLite
    assert PHONE.encode() not in redis_server.aof_bytes()
