"""Keys of the case record: master keys in a keyring, per-session data keys, record sealing.

Envelope encryption: every session has its own random AES-256 data key; records are sealed
with AES-256-GCM under it, with the record header as the AAD. Data keys are stored only
wrapped (AES-256-GCM) by a master key named by a key id. Master keys live in a `Keyring`
that wraps and unwraps but never hands a master key out, so the store never holds one in
the clear. Rotation adds a newer master key: new wrappings use it, older key ids stay
readable for as long as they are in the keyring.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from server.private_files import write_private_atomic

log = logging.getLogger("erv.record")

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96-bit GCM nonce, random per encryption
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
KEYS_ENV = "ERV_RECORD_KEYS"
_WRAP_LABEL = b"erv.record.data-key\x00"


class RecordKeyError(Exception):
    """A key is missing, malformed, or does not open what it was given."""


class UnknownKeyId(RecordKeyError):
    """The keyring has no master key with this id (retired, or never loaded)."""


class DecryptionFailed(RecordKeyError):
    """AES-GCM refused: wrong key, or the ciphertext, nonce or AAD was altered."""


@dataclass(frozen=True)
class WrappedKey:
    """A data key sealed by the master key `key_id`: nonce || AES-GCM ciphertext and tag."""

    key_id: str
    blob: bytes


def generate_key_id(now: float | None = None) -> str:
    """A unique, time-sortable master key id such as `mk-20240501T101500Z-3fa2`."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"mk-{stamp}-{secrets.token_hex(2)}"


def generate_key() -> bytes:
    """A fresh random 256-bit key."""
    return secrets.token_bytes(KEY_BYTES)


def _check_key(key_id: str, key: bytes) -> None:
    if not KEY_ID_PATTERN.fullmatch(key_id):
        raise RecordKeyError(f"bad master key id {key_id!r}")
    if len(key) != KEY_BYTES:
        raise RecordKeyError(f"master key {key_id} must be {KEY_BYTES} bytes, not {len(key)}")


class Keyring:
    """Master keys by id, in age order: the last one added wraps every new data key."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        self._keys: dict[str, AESGCM] = {}
        for key_id, key in keys.items():
            self.add(key_id, key)
        if not self._keys:
            raise RecordKeyError("a keyring needs at least one master key")

    def __repr__(self) -> str:
        # Never print key material, only which ids are loaded.
        return f"Keyring(key_ids={list(self._keys)!r})"

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    @property
    def current_key_id(self) -> str:
        return next(reversed(self._keys))

    def add(self, key_id: str, key: bytes) -> None:
        """Load one more master key; being the newest, it wraps every new data key."""
        _check_key(key_id, key)
        if key_id in self._keys:
            raise RecordKeyError(f"master key {key_id} is already in the keyring")
        self._keys[key_id] = AESGCM(key)

    def wrap(self, data_key: bytes, context: str) -> WrappedKey:
        """Seal `data_key` under the newest master key, bound to `context` (the session ref)."""
        key_id = self.current_key_id
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._keys[key_id].encrypt(nonce, data_key, _wrap_aad(key_id, context))
        return WrappedKey(key_id, nonce + sealed)

    def unwrap(self, wrapped: WrappedKey, context: str) -> bytes:
        """Open a wrapped data key; fails if it was wrapped for another context or altered."""
        aead = self._keys.get(wrapped.key_id)
        if aead is None:
            raise UnknownKeyId(f"no master key {wrapped.key_id} in the keyring")
        nonce, sealed = wrapped.blob[:NONCE_BYTES], wrapped.blob[NONCE_BYTES:]
        try:
            return aead.decrypt(nonce, sealed, _wrap_aad(wrapped.key_id, context))
        except InvalidTag:
            raise DecryptionFailed(f"data key wrapped by {wrapped.key_id} does not open") from None


def _wrap_aad(key_id: str, context: str) -> bytes:
    # Binding the wrapping to its session stops a wrapped key being moved to another session.
    return _WRAP_LABEL + key_id.encode() + b"\x00" + context.encode()


def seal(data_key: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """AES-256-GCM with a random 96-bit nonce; returns (nonce, ciphertext with tag)."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce, AESGCM(data_key).encrypt(nonce, plaintext, aad)


def unseal(data_key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Open what `seal` produced; any change to nonce, ciphertext or AAD fails."""
    try:
        return AESGCM(data_key).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        raise DecryptionFailed("record does not decrypt: altered ciphertext or header") from None


# --- key files ----------------------------------------------------------------------------------


def parse_keyring(text: str) -> Keyring:
    """A keyring from JSON `{key_id: base64 key, ...}`, oldest first."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordKeyError(f"master key file is not JSON: {exc.msg}") from None
    if not isinstance(raw, dict) or not raw:
        raise RecordKeyError("master key file must be a non-empty JSON object")
    keys: dict[str, bytes] = {}
    for key_id, encoded in raw.items():
        if not isinstance(encoded, str):
            raise RecordKeyError(f"master key {key_id} must be a base64 string")
        try:
            keys[key_id] = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise RecordKeyError(f"master key {key_id} is not valid base64") from None
    return Keyring(keys)


def load_keyring(path: Path) -> Keyring:
    """Read a key file; warns if anyone but the owner may read it."""
    mode = path.stat().st_mode
    if mode & 0o077:
        log.warning("master key file %s is readable by others (mode %o)", path, mode & 0o777)
    return parse_keyring(path.read_text(encoding="utf-8"))


def keyring_from_environment(environ: Mapping[str, str]) -> Keyring | None:
    """The keyring in `ERV_RECORD_KEYS` (same JSON as the key file), or None if unset."""
    text = environ.get(KEYS_ENV)
    return parse_keyring(text) if text else None


def _write_key_file(path: Path, keys: Mapping[str, str]) -> None:
    """Replace the key file atomically; the new file is created 0600 from the start."""
    write_private_atomic(path, (json.dumps(dict(keys), indent=2) + "\n").encode("utf-8"))


def _read_raw(path: Path) -> dict[str, str]:
    raw = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise RecordKeyError("master key file must be a JSON object")
    return {str(key): str(value) for key, value in raw.items()}


def load_or_create_keyring(path: Path) -> Keyring:
    """The key file's keyring; on first run, generate a dev key there with a loud warning."""
    if path.exists():
        return load_keyring(path)
    key_id = generate_key_id()
    _write_key_file(path, {key_id: base64.b64encode(generate_key()).decode()})
    log.warning(
        "GENERATED A DEVELOPMENT MASTER KEY for the case record at %s (key id %s). "
        "Anyone who can read this file can decrypt every case record. For real use, "
        "provide a key file from your key management and keep it off this disk's backups.",
        path,
        key_id,
    )
    return load_keyring(path)


def rotate_key_file(path: Path) -> str:
    """Append a new master key to the key file (`erv rotate-key`); returns its key id.

    Older keys stay in the file so records written under them remain readable.
    """
    keys = _read_raw(path)
    parse_keyring(json.dumps(keys))  # refuse to extend a broken file
    key_id = generate_key_id()
    while key_id in keys:
        key_id = generate_key_id()
    keys[key_id] = base64.b64encode(generate_key()).decode()
    _write_key_file(path, keys)
    log.warning("added master key %s to %s; new data key wrappings use it", key_id, path)
    return key_id
