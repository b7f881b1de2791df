"""server.record.crypto: keyring wrapping, rotation, record sealing and key files."""

from __future__ import annotations

import base64
import json
import logging
import stat
from pathlib import Path

import pytest

from server.record.crypto import (
    DecryptionFailed,
    Keyring,
    RecordKeyError,
    UnknownKeyId,
    generate_key,
    keyring_from_environment,
    load_keyring,
    load_or_create_keyring,
    parse_keyring,
    rotate_key_file,
    seal,
    unseal,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))


def test_wrap_round_trip_uses_newest_key_and_binds_the_session() -> None:
    ring = Keyring({"a": KEY_A})
    data_key = generate_key()
    wrapped = ring.wrap(data_key, "session-1")
    assert wrapped.key_id == "a"
    assert data_key not in wrapped.blob
    assert ring.unwrap(wrapped, "session-1") == data_key
    with pytest.raises(DecryptionFailed):
        ring.unwrap(wrapped, "session-2")


def test_rotation_wraps_with_new_key_and_old_wrappings_stay_readable() -> None:
    ring = Keyring({"a": KEY_A})
    data_key = generate_key()
    old = ring.wrap(data_key, "s")
    ring.add("b", KEY_B)
    assert ring.current_key_id == "b"
    assert ring.key_ids == ("a", "b")
    new = ring.wrap(data_key, "s")
    assert new.key_id == "b"
    assert ring.unwrap(old, "s") == ring.unwrap(new, "s") == data_key
    with pytest.raises(UnknownKeyId):
        Keyring({"b": KEY_B}).unwrap(old, "s")


def test_keyring_never_shows_key_material() -> None:
    ring = Keyring({"a": KEY_A})
    text = repr(ring) + str(ring)
    assert "'a'" in text
    assert base64.b64encode(KEY_A).decode() not in text
    assert KEY_A.hex() not in text


def test_keyring_rejects_bad_keys() -> None:
    with pytest.raises(RecordKeyError):
        Keyring({})
    with pytest.raises(RecordKeyError):
        Keyring({"a": b"short"})
    with pytest.raises(RecordKeyError):
        Keyring({"bad id!": KEY_A})
    ring = Keyring({"a": KEY_A})
    with pytest.raises(RecordKeyError):
        ring.add("a", KEY_B)


def test_seal_authenticates_ciphertext_and_aad() -> None:
    key = generate_key()
    nonce, ciphertext = seal(key, b"secret body", b"header")
    assert len(nonce) == 12
    assert b"secret body" not in ciphertext
    assert unseal(key, nonce, ciphertext, b"header") == b"secret body"
    with pytest.raises(DecryptionFailed):
        unseal(key, nonce, ciphertext, b"headeR")
    flipped = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    with pytest.raises(DecryptionFailed):
        unseal(key, nonce, flipped, b"header")
    assert seal(key, b"secret body", b"header")[0] != nonce  # fresh random nonce each time


def test_dev_key_is_created_0600_with_a_loud_warning_then_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys" / "record-keys.json"
    with caplog.at_level(logging.WARNING, logger="erv.record"):
        first = load_or_create_keyring(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert any("DEVELOPMENT MASTER KEY" in r.getMessage() for r in caplog.records)
    stored = json.loads(path.read_text())
    assert list(stored) == list(first.key_ids)
    assert len(base64.b64decode(stored[first.current_key_id])) == 32
    assert not any(stored[first.current_key_id] in r.getMessage() for r in caplog.records)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="erv.record"):
        second = load_or_create_keyring(path)
    assert second.key_ids == first.key_ids
    assert not caplog.records
    wrapped = first.wrap(b"k" * 32, "s")
    assert second.unwrap(wrapped, "s") == b"k" * 32


def test_rotate_key_file_appends_a_newer_key_and_keeps_old_ones(tmp_path: Path) -> None:
    path = tmp_path / "record-keys.json"
    old_ring = load_or_create_keyring(path)
    wrapped = old_ring.wrap(b"d" * 32, "s")
    new_id = rotate_key_file(path)
    ring = load_keyring(path)
    assert ring.key_ids == (*old_ring.key_ids, new_id)
    assert ring.current_key_id == new_id
    assert ring.unwrap(wrapped, "s") == b"d" * 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["record-keys.json"]  # no temp files left


def test_loose_permissions_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"a": base64.b64encode(KEY_A).decode()}))
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="erv.record"):
        load_keyring(path)
    assert any("readable by others" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", "{}", '{"a": 5}', '{"a": "***"}', json.dumps({"a": "c2hvcnQ="})],
)
def test_malformed_key_files_are_refused(text: str) -> None:
    with pytest.raises(RecordKeyError):
        parse_keyring(text)


def test_keyring_from_environment() -> None:
    assert keyring_from_environment({}) is None
    value = json.dumps(
        {"a": base64.b64encode(KEY_A).decode(), "b": base64.b64encode(KEY_B).decode()}
    )
    ring = keyring_from_environment({"ERV_RECORD_KEYS": value})
    assert ring is not None
    assert ring.key_ids == ("a", "b")
    assert ring.current_key_id == "b"
