"""The hash chain over stored records, and the verifier that says where it breaks.

Each stored record carries `prev_hash` and
`hash = SHA-256(prev_hash || len(header) || canonical header || nonce || ciphertext)`.
The chain covers ciphertexts, not plaintext, so it still verifies after a session's data key
has been destroyed. Records are walked in storage order (the order they were appended in);
the verifier reports every break it finds, each with the sequence number and what is wrong.
"""

from __future__ import annotations

import enum
import hashlib
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

HASH_BYTES = 32
GENESIS_HASH = bytes(HASH_BYTES)  # prev_hash of the first record
MAX_REPORTED_BREAKS = 100


@dataclass(frozen=True)
class RecordHeader:
    """What is known about a record without decrypting it; authenticated as the AAD."""

    seq: int  # global in the store, 1, 2, 3, ... in append order
    at: float  # unix time of the append
    session_ref: str
    kind: str
    key_id: str  # master key that wraps the data key this record is sealed under

    def canonical(self) -> bytes:
        """Deterministic bytes: the AAD of the record and part of its chain hash."""
        return json.dumps(
            {
                "at": self.at,
                "key_id": self.key_id,
                "kind": self.kind,
                "seq": self.seq,
                "session": self.session_ref,
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
        ).encode("ascii")


@dataclass(frozen=True)
class StoredRecord:
    """One record as stored: header, sealed body, its links in the chain."""

    header: RecordHeader
    nonce: bytes
    ciphertext: bytes
    prev_hash: bytes
    hash: bytes
    # SHA-256(nonce || ciphertext), kept only so a break can be told apart as content vs header.
    body_digest: bytes


@dataclass(frozen=True)
class ChainHead:
    """The last record appended, kept apart so truncating the end of the chain is noticed."""

    seq: int
    hash: bytes


def body_digest(nonce: bytes, ciphertext: bytes) -> bytes:
    return hashlib.sha256(nonce + ciphertext).digest()


def chain_hash(prev_hash: bytes, header: RecordHeader, nonce: bytes, ciphertext: bytes) -> bytes:
    canonical = header.canonical()
    # Fixed-size prev_hash and nonce plus a length prefix keep the encoding unambiguous.
    return hashlib.sha256(
        prev_hash + struct.pack(">I", len(canonical)) + canonical + nonce + ciphertext
    ).digest()


def link(prev_hash: bytes, header: RecordHeader, nonce: bytes, ciphertext: bytes) -> StoredRecord:
    """The stored form of a new record appended after `prev_hash`."""
    return StoredRecord(
        header=header,
        nonce=nonce,
        ciphertext=ciphertext,
        prev_hash=prev_hash,
        hash=chain_hash(prev_hash, header, nonce, ciphertext),
        body_digest=body_digest(nonce, ciphertext),
    )


class BreakKind(enum.StrEnum):
    CONTENT_ALTERED = "content altered"  # nonce or ciphertext changed
    HEADER_ALTERED = "header altered"  # seq, time, session, kind, key id or stored hash changed
    RECORD_MISSING = "record missing"  # a sequence number never appears
    OUT_OF_ORDER = "out of order"  # a record stored after a later one, or a duplicate
    LINK_BROKEN = "link broken"  # a record does not point at its predecessor's hash


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    kind: BreakKind
    detail: str

    def __str__(self) -> str:
        return f"record {self.seq}: {self.kind.value}: {self.detail}"


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of walking the chain: `ok` only if nothing at all is wrong."""

    records: int
    breaks: tuple[ChainBreak, ...] = ()
    truncated: bool = False  # more breaks than MAX_REPORTED_BREAKS were found

    @property
    def ok(self) -> bool:
        return not self.breaks

    @property
    def first_break(self) -> ChainBreak | None:
        return self.breaks[0] if self.breaks else None

    def describe(self) -> str:
        if self.ok:
            return f"chain intact: {self.records} records verified"
        first = self.breaks[0]
        more = len(self.breaks) - 1
        suffix = f" (and {more}{'+' if self.truncated else ''} more)" if more else ""
        return f"chain BROKEN at {first}{suffix}"


@dataclass
class ChainVerifier:
    """Feed records in storage order, then `finish` with the stored head.

    Memory stays small however long the chain: only the running maximum, its hash, and the
    ranges of sequence numbers not yet seen are kept.
    """

    records: int = 0
    _max_seq: int = 0
    _max_hash: bytes = GENESIS_HASH
    _gaps: list[tuple[int, int]] = field(default_factory=list)  # inclusive ranges not yet seen
    _breaks: list[ChainBreak] = field(default_factory=list)
    _truncated: bool = False

    def _report(self, seq: int, kind: BreakKind, detail: str) -> None:
        if len(self._breaks) >= MAX_REPORTED_BREAKS:
            self._truncated = True
            return
        self._breaks.append(ChainBreak(seq, kind, detail))

    def _fill_gap(self, seq: int) -> bool:
        for index, (low, high) in enumerate(self._gaps):
            if low <= seq <= high:
                pieces = [(low, seq - 1), (seq + 1, high)]
                self._gaps[index : index + 1] = [(a, b) for a, b in pieces if a <= b]
                return True
        return False

    def feed(self, record: StoredRecord) -> None:
        self.records += 1
        header = record.header
        seq = header.seq
        if chain_hash(record.prev_hash, header, record.nonce, record.ciphertext) != record.hash:
            if body_digest(record.nonce, record.ciphertext) != record.body_digest:
                self._report(seq, BreakKind.CONTENT_ALTERED, "ciphertext or nonce changed")
            else:
                self._report(
                    seq, BreakKind.HEADER_ALTERED, "header fields do not match the record hash"
                )
        if seq == self._max_seq + 1:
            if record.prev_hash != self._max_hash:
                self._report(seq, BreakKind.LINK_BROKEN, f"does not link to record {self._max_seq}")
        elif seq > self._max_seq + 1:
            # Not yet a verdict: a later record may fill the gap (then it is out of order).
            self._gaps.append((self._max_seq + 1, seq - 1))
        elif self._fill_gap(seq):
            self._report(seq, BreakKind.OUT_OF_ORDER, f"stored after record {self._max_seq}")
            return
        else:
            self._report(seq, BreakKind.OUT_OF_ORDER, "sequence number appears twice")
            return
        self._max_seq, self._max_hash = seq, record.hash

    def finish(self, head: ChainHead | None) -> VerifyResult:
        for low, high in self._gaps:
            what = f"record {low}" if low == high else f"records {low} to {high}"
            self._report(low, BreakKind.RECORD_MISSING, f"{what} not in the store")
        if head is not None:
            if head.seq > self._max_seq:
                start = self._max_seq + 1
                what = f"record {start}" if start == head.seq else f"records {start} to {head.seq}"
                self._report(start, BreakKind.RECORD_MISSING, f"{what} cut off the end")
            elif head.seq == self._max_seq and head.hash != self._max_hash:
                self._report(head.seq, BreakKind.LINK_BROKEN, "last record is not the head")
            elif head.seq < self._max_seq:
                self._report(
                    head.seq + 1, BreakKind.HEADER_ALTERED, "records stored beyond the head"
                )
        elif self._max_seq:
            self._report(1, BreakKind.RECORD_MISSING, "records present but no chain head")
        breaks = tuple(sorted(self._breaks, key=lambda b: b.seq))
        return VerifyResult(records=self.records, breaks=breaks, truncated=self._truncated)


def verify_records(records: Iterable[StoredRecord], head: ChainHead | None) -> VerifyResult:
    """Walk `records` in storage order and check them against the stored `head`."""
    verifier = ChainVerifier()
    for record in records:
        verifier.feed(record)
    return verifier.finish(head)
