"""server.record.store contract: the case record on SQLite and on Redis, on real storage.

Pins, for both backends: round trip, rotation, each tamper class named at the right sequence
number, a wrong AAD failing decryption, crypto-shredding with the chain intact (and the wrapped
key gone from the files on disk), durability across a restart, the stored head, and no
plaintext body anywhere in what the backend persists.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.record import (
    BreakKind,
    CaseRecordStore,
    Keyring,
    RecordUnreadable,
    SessionShredded,
    SqliteCaseRecordStore,
    load_keyring,
    load_or_create_keyring,
    rotate_key_file,
)
from server.record.crypto import parse_keyring
from server.redis_backend.record import RedisCaseRecordStore
from tests.support.record import AnyRecordStore, RecordRig, record_rig
from tests.support.redis_server import RedisServer

PHONE = "+447700900123"
CHAT = "he is outside the door right now"


def _typed(store: SqliteCaseRecordStore | RedisCaseRecordStore) -> CaseRecordStore:
    """Both classes satisfy the interface (mypy checks this function)."""
    return store


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "record-keys.json"
    load_or_create_keyring(path)
    return path


@pytest.fixture(params=["sqlite", "redis"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RecordRig]:
    server: RedisServer | None = None
    if request.param == "redis":
        request.getfixturevalue("redis_url")  # started and empty
        server = request.getfixturevalue("redis_server")
    async with record_rig(request.param, tmp_path, server) as record_rig_:
        yield record_rig_


@pytest.fixture
async def store(rig: RecordRig, key_file: Path) -> AnyRecordStore:
    return await rig.new_store(load_keyring(key_file))


async def fill(store: AnyRecordStore, count: int = 6) -> None:
    for n in range(1, count + 1):
        await store.append("sess-a" if n % 2 else "sess-b", "chat", {"n": n, "text": CHAT})


async def test_round_trip_with_global_sequence(store: AnyRecordStore) -> None:
    assert await store.head() is None
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
    head = await store.head()
    last = [r async for r in store.iterate_raw()][-1]
    assert head is not None and (head.seq, head.hash) == (3, last.hash)


async def test_bad_arguments_are_refused(store: AnyRecordStore) -> None:
    with pytest.raises(ValueError):
        await store.append("sess-a", "Bad Kind", {})
    with pytest.raises(ValueError):
        await store.append("", "chat", {})
    with pytest.raises(ValueError):
        await store.append("s" * 129, "chat", {})
    with pytest.raises(ValueError):
        await store.append("sess-a", "chat", {"x": float("nan")})
    with pytest.raises(TypeError):
        await store.append("sess-a", "chat", ["not", "an", "object"])  # type: ignore[arg-type]
    assert [r async for r in store.iterate_raw()] == []
    assert await store.head() is None


async def test_plaintext_never_reaches_storage(store: AnyRecordStore, rig: RecordRig) -> None:
    await store.append("sess-a", "created", {"phone": PHONE})
    await store.append("sess-a", "chat", {"text": CHAT})
    await store.append("sess-a", "location", {"lat": 51.50135, "lon": -0.14189})
    raw = await rig.persisted_bytes()
    assert b"sess-a" in raw  # the header is stored in the clear; the body is not
    for secret in (PHONE, CHAT, "51.50135", "-0.14189", "outside the door"):
        assert secret.encode() not in raw


async def test_rotation_new_writes_use_new_key_old_stay_readable(
    rig: RecordRig, key_file: Path
) -> None:
    store_a = await rig.new_store(load_keyring(key_file))
    old = await store_a.append("sess-a", "created", {"n": 1})
    new_id = rotate_key_file(key_file)
    assert new_id != old.key_id

    store_b = await rig.new_store(load_keyring(key_file))
    same_session = await store_b.append("sess-a", "chat", {"n": 2})
    new_session = await store_b.append("sess-c", "created", {"n": 3})
    assert same_session.key_id == new_id
    assert new_session.key_id == new_id
    assert [e.body["n"] for e in await store_b.read("sess-a")] == [1, 2]
    assert [e.header.key_id for e in await store_b.read("sess-a")] == [old.key_id, new_id]
    assert (await store_b.verify()).ok

    # Both wrappings are kept; a keyring with only the new key reads the whole session...
    assert set(await rig.wrapped_keys("sess-a")) == {old.key_id, new_id}
    assert set(await rig.wrapped_keys("sess-c")) == {new_id}
    stored = json.loads(key_file.read_text())
    new_only = await rig.new_store(parse_keyring(json.dumps({new_id: stored[new_id]})))
    assert [e.body["n"] for e in await new_only.read("sess-a")] == [1, 2]
    # ...while a keyring with neither key reads nothing.
    with pytest.raises(RecordUnreadable):
        await (await rig.new_store(Keyring({"x": bytes(32)}))).read("sess-a")


async def test_flipped_ciphertext_byte_is_named(store: AnyRecordStore, rig: RecordRig) -> None:
    await fill(store)
    await rig.flip_ciphertext(3)
    result = await store.verify()
    assert result.first_break is not None
    assert (result.first_break.seq, result.first_break.kind) == (3, BreakKind.CONTENT_ALTERED)
    assert len(result.breaks) == 1
    with pytest.raises(RecordUnreadable, match="record 3"):
        await store.read("sess-a")


async def test_deleted_record_is_named(store: AnyRecordStore, rig: RecordRig) -> None:
    await fill(store)
    await rig.delete(4)
    result = await store.verify()
    assert [(b.seq, b.kind) for b in result.breaks] == [(4, BreakKind.RECORD_MISSING)]


async def test_deleted_last_record_is_named(store: AnyRecordStore, rig: RecordRig) -> None:
    await fill(store)
    await rig.delete(6)
    result = await store.verify()
    assert [(b.seq, b.kind) for b in result.breaks] == [(6, BreakKind.RECORD_MISSING)]
    assert "cut off the end" in result.describe()


async def test_swapped_records_are_named(store: AnyRecordStore, rig: RecordRig) -> None:
    await fill(store)
    await rig.swap(2, 3)
    result = await store.verify()
    assert [(b.seq, b.kind) for b in result.breaks] == [(2, BreakKind.OUT_OF_ORDER)]


async def test_edited_header_is_named_and_fails_decryption(
    store: AnyRecordStore, rig: RecordRig
) -> None:
    await fill(store)
    await rig.edit_header(5, kind="risk_assessment")
    result = await store.verify()
    assert [(b.seq, b.kind) for b in result.breaks] == [(5, BreakKind.HEADER_ALTERED)]
    with pytest.raises(RecordUnreadable, match="record 5"):
        await store.read("sess-a")


async def test_wrong_aad_fails_decryption(store: AnyRecordStore, rig: RecordRig) -> None:
    """AES-GCM itself refuses a record whose header (the AAD) no longer matches."""
    await store.append("sess-a", "chat", {"text": CHAT})
    await rig.edit_header(1, at_shift=60)
    with pytest.raises(RecordUnreadable):
        await store.read("sess-a")


async def test_shredding_makes_content_unreadable_and_chain_still_verifies(
    store: AnyRecordStore, rig: RecordRig
) -> None:
    await fill(store)
    wrapped = await rig.wrapped_keys("sess-a")
    assert len(wrapped) == 1
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

    # The wrapped key is gone from everything on disk (Redis: once its AOF is rewritten), and
    # a fresh store cannot read the session.
    assert await rig.wrapped_keys("sess-a") == {}
    blob = next(iter(wrapped.values()))
    for _ in range(100):
        if blob not in await rig.persisted_bytes():
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the shredded wrapped key is still on disk")
    fresh = await rig.new_store(store._keyring)
    with pytest.raises(SessionShredded):
        await fresh.read("sess-a")


async def test_records_survive_reopen_and_the_chain_continues(
    rig: RecordRig, key_file: Path
) -> None:
    await fill(await rig.new_store(load_keyring(key_file)), 3)
    await rig.reopen()
    store = await rig.new_store(load_keyring(key_file))
    header = await store.append("sess-a", "ended", {"reason": "hangup"})
    assert header.seq == 4
    assert [e.header.kind for e in await store.read("sess-a")] == ["chat", "chat", "ended"]
    assert (await store.verify()).ok


async def test_iterate_raw_pages_through_everything(
    store: AnyRecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("server.record.store.PAGE_SIZE", 2)
    monkeypatch.setattr("server.redis_backend.record.PAGE_SIZE", 2)
    await fill(store, 5)
    assert [r.header.seq async for r in store.iterate_raw()] == [1, 2, 3, 4, 5]
    assert (await store.verify()).records == 5
    assert [e.body["n"] for e in await store.read("sess-a")] == [1, 3, 5]
