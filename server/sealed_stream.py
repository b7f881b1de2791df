"""A file sealed in chunks: AES-256-GCM per 64 KiB, so no part of it needs to be held whole.

Layout: `MAGIC || chunk size (4 bytes, big-endian)`, then each chunk's ciphertext with its tag.
Every chunk but the last holds exactly `chunk size` bytes of plaintext; the last holds the
rest (possibly nothing) and is marked final. The nonce of chunk `i` is `i` (11 bytes) and a
final flag (1 byte): unique because every file has a key of its own, and it makes reordered
chunks (wrong index), a truncated file (no chunk decrypts as final where it ends) and an
extended one (the real last chunk does not decrypt as non-final) all fail to open. The AAD is
the caller's AAD and the header, so the chunk size cannot be changed either.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from server.record.crypto import DecryptionFailed

MAGIC = b"ERVSEAL1"
CHUNK = 64 * 1024
TAG = 16
HEADER = MAGIC + CHUNK.to_bytes(4, "big")
FORMAT = "chunked-aes-gcm-64k"  # as the record names it


def _nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


class Sealer:
    """Seals a stream: feed it plaintext, write out what it returns, then `finish()`."""

    def __init__(self, key: bytes, aad: bytes) -> None:
        self._aead = AESGCM(key)
        self._aad = aad + HEADER
        self._index = 0
        self._pending = bytearray()

    def _seal(self, plaintext: bytes, final: bool) -> bytes:
        sealed = self._aead.encrypt(_nonce(self._index, final), plaintext, self._aad)
        self._index += 1
        return sealed

    def update(self, data: bytes) -> bytes:
        """The sealed chunks that `data` completes. A full chunk is held back until more
        comes, since only then is it known not to be the last."""
        self._pending += data
        out = bytearray()
        while len(self._pending) > CHUNK:
            out += self._seal(bytes(self._pending[:CHUNK]), final=False)
            del self._pending[:CHUNK]
        return bytes(out)

    def finish(self) -> bytes:
        """The last chunk, marked final."""
        last = self._seal(bytes(self._pending), final=True)
        self._pending.clear()
        return last


def seal_all(key: bytes, aad: bytes, plaintext: bytes) -> bytes:
    """A whole file in the chunked format (header included)."""
    sealer = Sealer(key, aad)
    return HEADER + sealer.update(plaintext) + sealer.finish()


def open_chunks(key: bytes, aad: bytes, file: BinaryIO) -> Iterator[bytes]:
    """The plaintext of a chunked file, chunk by chunk; DecryptionFailed at the first chunk
    that was altered, moved, cut short or added to (what came before it was genuine)."""
    if file.read(len(HEADER)) != HEADER:
        raise DecryptionFailed("not a chunked evidence file")
    aead = AESGCM(key)
    full_aad = aad + HEADER
    piece = file.read(CHUNK + TAG)
    index = 0
    while True:
        following = file.read(CHUNK + TAG)
        final = not following
        try:
            yield aead.decrypt(_nonce(index, final), piece, full_aad)
        except InvalidTag:
            raise DecryptionFailed(f"chunk {index} does not open") from None
        if final:
            return
        piece, index = following, index + 1
