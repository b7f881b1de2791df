"""server.record.store: the SQLite case record on a real database file.

Pins: round trip, rotation, each tamper class named at the right sequence number, a wrong
AAD failing decryption, crypto-shredding with the chain intact, durability across reopen,
and no plaintext body anywhere in the database files.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from server.db import Database
from server.record import (
    BreakKind,
    Keyring,
    RecordUnreadable,
    SessionShredded,
    SqliteCaseRecordStore,
    load_keyring,
    load_or_create_keyring,
    rotate_key_file,
)
from server.record.crypto import parse_keyring
from tests.support.unit_db import database_bytes, temporary_database

PHONE = "+447700900123"
CHAT = "he is outside the door right now"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "record-keys.json"
    load_or_create_keyring(path)
    return path


@pytest.fixture
async def store(db: Database, key_file: Path) -> SqliteCaseRecordStore:
    record_store = SqliteCaseRecordStore(db, load_keyring(key_file))
    await record_store.open()
    return record_store


async def fill(store: SqliteCaseRecordStore, count: int = 6) -> None:
    for n in range(1, count + 1):
        await store.append("sess-a" if n % 2 else "sess-b", "chat", {"n": n, "text": CHAT})


async def tamper(db: Database, sql: str, params: tuple[Any, ...] = ()) -> None:
    def run(conn: sqlite3.Connection) -> None:
        assert conn.execute(sql, params).rowcount >= 1

    await db.transaction(run)


async def test_round_trip_with_global_sequence(store: SqliteCaseRecordStore) -> None:
    first = await store.append("sess-a", "created", {"incident": "CAD-1", "phone": PHONE})
    second = await store.append("sess-b", "created", {"incident": "CAD-2"})
    third = await store.append("sess-a", "chat", {"from": "victim", "text": CHAT, "n": 1.5})
    assert [first.seq, second.seq, third.seq] == [1, 2, 3]
    assert first.key_id == store._keyring.current_key_id
    events = await store.read("sess-a")
    assert [e.header for e in events] == [first, third]
    assert [e.body for e in events] == [
        {"incident": "CAD-1", "phone": PHONE},
        {"from": "victim", "text": CHAT, "n": 1.5},
    ]
    assert [e.body for e in await store.read("sess-b")] == [{"incident": "CAD-2"}]
    assert await store.read("nobody") == []
    assert (await store.verify()).ok


async def test_bad_arguments_are_refused(store: SqliteCaseRecordStore) -> None:
    with pytest.raises(ValueError):
        await store.append("sess-a", "Bad Kind", {})
    with pytest.raises(ValueError):
        await store.append("", "chat", {})
    with pytest.raises(ValueError):
        await store.append("sess-a", "chat", {"x": float("nan")})
    assert [r async for r in store.iterate_raw()] == []


async def test_plaintext_never_reaches_the_database_files(
    store: SqliteCaseRecordStore, db: Database, tmp_path: Path
) -> None:
    await store.append("sess-a", "created", {"phone": PHONE})
    await store.append("sess-a", "chat", {"text": CHAT})
    await store.append("sess-a", "location", {"lat": 51.50135, "lon": -0.14189})
    raw = database_bytes(tmp_path)
    assert b"sess-a" in raw  # the header is stored in the clear; the body is not
    for secret in (PHONE, CHAT, "51.50135", "-0.14189", "outside the door"):
        assert secret.encode() not in raw


async def test_rotation_new_writes_use_new_key_old_stay_readable(
    db: Database, key_file: Path
) -> None:
    store_a = SqliteCaseRecordStore(db, load_keyring(key_file))
    await store_a.open()
    old = await store_a.append("sess-a", "created", {"n": 1})
    new_id = rotate_key_file(key_file)
    assert new_id != old.key_id

    store_b = SqliteCaseRecordStore(db, load_keyring(key_file))
    await store_b.open()
    same_session = await store_b.append("sess-a", "chat", {"n": 2})
    new_session = await store_b.append("sess-c", "created", {"n": 3})
    assert same_session.key_id == new_id
    assert new_session.key_id == new_id
    assert [e.body["n"] for e in await store_b.read("sess-a")] == [1, 2]
    assert [e.header.key_id for e in await store_b.read("sess-a")] == [old.key_id, new_id]
    assert (await store_b.verify()).ok

    # Both wrappings are kept; a keyring with only the new key reads the whole session...
    wrappings = await db.fetchall(
        "SELECT key_id FROM case_record_keys WHERE session_ref = 'sess-a' ORDER BY created_at"
    )
    assert [r["key_id"] for r in wrappings] == [old.key_id, new_id]
    stored = json.loads(key_file.read_text())
    new_only = SqliteCaseRecordStore(db, parse_keyring(json.dumps({new_id: stored[new_id]})))
    assert [e.body["n"] for e in await new_only.read("sess-a")] == [1, 2]
    # ...while a keyring with neither key reads nothing.
    with pytest.raises(RecordUnreadable):
        await SqliteCaseRecordStore(db, Keyring({"x": bytes(32)})).read("sess-a")


async def test_flipped_ciphertext_byte_is_named(store: SqliteCaseRecordStore, db: Database) -> None:
    await fill(store)
    row = await db.fetchone("SELECT ciphertext FROM case_records WHERE seq = 3")
    assert row is not None
    ciphertext = bytearray(row["ciphertext"])
    ciphertext[5] ^= 0x01
    await tamper(db, "UPDATE case_records SET ciphertext = ? WHERE seq = 3", (bytes(ciphertext),))
    result = await store.verify()
    assert result.first_break is not None
    assert (result.first_break.seq, result.first_break.kind) == (3, BreakKind.CONTENT_ALTERED)
    assert len(result.breaks) == 1
    with pytest.raises(RecordUnreadable, match="record 3"):
        await store.read("sess-a")


async def test_deleted_record_is_named(store: SqliteCaseRecordStore, db: Database) -> None:
    await fill(store)
    await tamper(db, "DELETE FROM case_records WHERE seq = 4")
    result = await store.verify()
    assert [(b.seq, b.kind) for b in result.breaks] == [(4, BreakKind.RECORD_MISSING)]


async def test_deleted_last_record_is_named(store: SqliteCaseRecordStore, db: Database) -> None:
    await fill(store)
    await tamper(db, "DELETE FROM case_records WHERE seq = 6")
    result = await store.verify()
    assert [(b.seq, b.kind) for b in result.breaks] == [(6, BreakKind.RECORD_MISSING)]


async def test_swapped_records_are_named(store: SqliteCaseRecordStore, db: Database) -> None:
    await fill(store)

    def swap(conn: sqlite3.Connection) -> None:
        rows = conn.execute(
            "SELECT * FROM case_records WHERE seq IN (2, 3) ORDER BY seq"
        ).fetchall()
        columns = [c for c in rows[0].keys() if c != "position"]
        assignments = ", ".join(f"{c} = ?" for c in columns)
        for target, source in ((rows[0], rows[1]), (rows[1], rows[0])):
            conn.execute(
                f"UPDATE case_records SET {assignments} WHERE position = ?",
                (*(source[c] for c in columns), target["position"]),
            )

    await db.transaction(swap)
    result = await store.verify()
    assert [(b.seq, b.kind) for b in result.breaks] == [(2, BreakKind.OUT_OF_ORDER)]


async def test_edited_header_is_named_and_fails_decryption(
    store: SqliteCaseRecordStore, db: Database
) -> None:
    await fill(store)
    await tamper(db, "UPDATE case_records SET kind = 'risk_assessment' WHERE seq = 5")
    result = await store.verify()
    assert [(b.seq, b.kind) for b in result.breaks] == [(5, BreakKind.HEADER_ALTERED)]
    with pytest.raises(RecordUnreadable, match="record 5"):
        await store.read("sess-a")


async def test_wrong_aad_fails_decryption(store: SqliteCaseRecordStore, db: Database) -> None:
    """AES-GCM itself refuses a record whose header (the AAD) no longer matches."""
    await store.append("sess-a", "chat", {"text": CHAT})
    await tamper(db, "UPDATE case_records SET at = at + 60 WHERE seq = 1")
    with pytest.raises(RecordUnreadable):
        await store.read("sess-a")


async def test_shredding_makes_content_unreadable_and_chain_still_verifies(
    store: SqliteCaseRecordStore, db: Database, tmp_path: Path
) -> None:
    await fill(store)
    wrapped = await db.fetchone("SELECT wrapped FROM case_record_keys WHERE session_ref = 'sess-a'")
    assert wrapped is not None
    assert await store.shred("sess-a") is True
    assert await store.shred("sess-a") is False

    with pytest.raises(SessionShredded):
        await store.read("sess-a")
    with pytest.raises(SessionShredded):
        await store.append("sess-a", "chat", {"text": "more"})
    assert [e.body["n"] for e in await store.read("sess-b")] == [2, 4, 6]
    result = await store.verify()
    assert result.ok, result.describe()
    assert result.records == 6
    assert [r.header.seq async for r in store.iterate_raw()] == [1, 2, 3, 4, 5, 6]

    # The wrapped key is gone from every database file, and a fresh store cannot read it.
    assert bytes(wrapped["wrapped"]) not in database_bytes(tmp_path)
    fresh = SqliteCaseRecordStore(db, store._keyring)
    with pytest.raises(SessionShredded):
        await fresh.read("sess-a")


async def test_records_survive_reopen_and_the_chain_continues(
    tmp_path: Path, key_file: Path
) -> None:
    folder = tmp_path / "reopen"
    async with temporary_database(folder) as db:
        store = SqliteCaseRecordStore(db, load_keyring(key_file))
        await store.open()
        await fill(store, 3)
    async with temporary_database(folder) as db:
        store = SqliteCaseRecordStore(db, load_keyring(key_file))
        await store.open()
        header = await store.append("sess-a", "ended", {"reason": "hangup"})
        assert header.seq == 4
        assert [e.header.kind for e in await store.read("sess-a")] == ["chat", "chat", "ended"]
        assert (await store.verify()).ok


async def test_iterate_raw_pages_through_everything(
    store: SqliteCaseRecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("server.record.store.PAGE_SIZE", 2)
    await fill(store, 5)
    assert [r.header.seq async for r in store.iterate_raw()] == [1, 2, 3, 4, 5]
    assert (await store.verify()).records == 5
