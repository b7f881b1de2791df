"""The chunked sealed format: round trips at every size that matters, and every change to the
file (a flipped bit, chunks swapped, cut short at or between chunks, extended, another
file's AAD, another header) fails to open."""

from __future__ import annotations

import io
import os

import pytest

from server.record.crypto import DecryptionFailed, generate_key
from server.sealed_stream import CHUNK, HEADER, TAG, Sealer, open_chunks, seal_all

AAD = b"erv.evidence\x00session\x00evidence"


def opened(key: bytes, blob: bytes, aad: bytes = AAD) -> bytes:
    return b"".join(open_chunks(key, aad, io.BytesIO(blob)))


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7])
def test_round_trip(size: int) -> None:
    key, data = generate_key(), os.urandom(size)
    blob = seal_all(key, AAD, data)
    assert opened(key, blob) == data
    chunks = max(1, -(-size // CHUNK))
    assert len(blob) == len(HEADER) + size + chunks * TAG


def test_fed_in_odd_pieces_it_seals_the_same_plaintext() -> None:
    key, data = generate_key(), os.urandom(2 * CHUNK + 100)
    sealer = Sealer(key, AAD)
    blob = HEADER
    for start in range(0, len(data), 7777):
        blob += sealer.update(data[start:start + 7777])
    blob += sealer.finish()
    assert opened(key, blob) == data


def test_every_change_fails_to_open() -> None:
    key, data = generate_key(), os.urandom(3 * CHUNK + 10)
    blob = seal_all(key, AAD, data)
    step = CHUNK + TAG
    body = blob[len(HEADER):]
    chunks = [body[i:i + step] for i in range(0, len(body), step)]
    flipped = bytearray(blob)
    flipped[len(HEADER) + 5] ^= 1
    changes = {
        "flipped bit": bytes(flipped),
        "swapped chunks": HEADER + chunks[1] + chunks[0] + b"".join(chunks[2:]),
        "cut at a chunk boundary": HEADER + b"".join(chunks[:2]),
        "cut inside a chunk": blob[:-5],
        "only the header": HEADER,
        "extended": blob + chunks[1],
        "a chunk repeated": HEADER + chunks[0] + chunks[0] + b"".join(chunks[1:]),
        "another header": b"ERVSEAL1" + (CHUNK * 2).to_bytes(4, "big") + body,
    }
    for name, changed in changes.items():
        with pytest.raises(DecryptionFailed):
            opened(key, changed)
            pytest.fail(name)
    with pytest.raises(DecryptionFailed):
        opened(key, blob, AAD + b"other")
    with pytest.raises(DecryptionFailed):
        opened(generate_key(), blob)
