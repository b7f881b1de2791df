"""Where the running service gets its master keys: ERV_RECORD_KEYS, else the key file."""

from __future__ import annotations

import os

from server.config import Config
from server.record.crypto import Keyring, keyring_from_environment, load_or_create_keyring


def service_keyring(config: Config) -> Keyring:
    return keyring_from_environment(os.environ) or load_or_create_keyring(config.record_keys_path)
