"""The service's Ed25519 signing key: it signs chain checkpoints and export manifests.

The private key lives next to the record's master keys (`<data_dir>/export-signing-key.pem`
by default, created 0600 on first use), never in the store it vouches for. Its public key is
what a verifier trusts; `fingerprint` gives a short name to compare it by.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from server.config import Config

log = logging.getLogger("erv.record")

SIGNING_KEY_NAME = "export-signing-key.pem"


class SigningKeyError(Exception):
    """The signing key file does not hold an Ed25519 private key."""


def signing_key_path(config: Config) -> Path:
    """Next to the record's master keys (`<data_dir>/export-signing-key.pem` by default)."""
    return config.record_keys_path.parent / SIGNING_KEY_NAME


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The export signing key; a new one is made (0600, with a warning) if there is none."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        log.warning(
            "made a new export signing key in %s; publish its public key (%s) to whoever "
            "checks exports, and keep the private key apart from database backups",
            path, fingerprint(key.public_key()),
        )
        return key
    loaded = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} does not hold an Ed25519 private key")
    return loaded


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fingerprint(key: Ed25519PublicKey) -> str:
    """A short, comparable name for a public key: SHA-256 of its raw bytes, base64."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
