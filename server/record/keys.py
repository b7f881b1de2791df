"""Where the running service gets its master keys: ERV_RECORD_KEYS, else the key file."""

from __future__ import annotations

import os

from server.config import Config
from server.record.crypto import (
    Keyring,
    WrappedKey,
    keyring_from_environment,
    load_or_create_keyring,
)


def service_keyring(config: Config) -> Keyring:
    return keyring_from_environment(os.environ) or load_or_create_keyring(config.record_keys_path)


class LiveKeyWrap:
    """Wraps the live keys RedisHub keeps per session with the case record's master keys, so
    every node can open them and a copy of Redis alone opens nothing."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def seal_key(self, key: bytes, context: str) -> bytes:
        wrapped = self.keyring.wrap(key, context)
        return wrapped.key_id.encode() + b"\x00" + wrapped.blob

    def open_key(self, blob: bytes, context: str) -> bytes:
        key_id, _, sealed = blob.partition(b"\x00")
        return self.keyring.unwrap(WrappedKey(key_id.decode(), sealed), context)
