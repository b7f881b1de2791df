"""Where case records are kept: the `CaseRecordStore` interface and its SQLite implementation.

Appends are group-committed: each is validated and encoded by its caller, then queued; one
flusher takes everything queued (up to `MAX_BATCH`) and writes it in a single `BEGIN
IMMEDIATE` transaction on the database thread, reading the chain head once and sealing the
records in queue order. Reading the head, sealing and extending it are therefore atomic, and an
append returns only after the commit that holds it (synchronous=FULL: on disk). If that
transaction fails, every append of the batch gets the error and none of it is stored. The
store holds per-session data keys (unwrapped on demand, cached in memory) but never a master
key: it only asks its `Keyring` to wrap and unwrap.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from server.db import Database
from server.record.chain import (
    GENESIS_HASH,
    ChainHead,
    ChainVerifier,
    RecordHeader,
    StoredRecord,
    VerifyResult,
    link,
)
from server.record.crypto import (
    DecryptionFailed,
    Keyring,
    RecordKeyError,
    WrappedKey,
    generate_key,
    seal,
    unseal,
)

KIND_PATTERN = re.compile(r"[a-z][a-z0-9_.]{0,63}")
MAX_SESSION_REF = 128
PAGE_SIZE = 500
MAX_BATCH = 256

SCHEMA: tuple[str, ...] = (
    # position is storage (append) order; seq is the header's number. They agree unless
    # someone has moved rows around, which is exactly what verification looks for.
    """CREATE TABLE IF NOT EXISTS case_records (
        position INTEGER PRIMARY KEY,
        seq INTEGER NOT NULL,
        at REAL NOT NULL,
        session_ref TEXT NOT NULL,
        kind TEXT NOT NULL,
        key_id TEXT NOT NULL,
        nonce BLOB NOT NULL,
        ciphertext BLOB NOT NULL,
        prev_hash BLOB NOT NULL,
        hash BLOB NOT NULL,
        body_digest BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS case_records_session ON case_records(session_ref, position)",
    """CREATE TABLE IF NOT EXISTS case_record_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL,
        hash BLOB NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS case_record_keys (
        session_ref TEXT NOT NULL,
        key_id TEXT NOT NULL,
        wrapped BLOB NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (session_ref, key_id)
    )""",
    """CREATE TABLE IF NOT EXISTS case_record_shredded (
        session_ref TEXT PRIMARY KEY,
        shredded_at REAL NOT NULL
    )""",
)


class CaseRecordError(Exception):
    """Base of the record store's errors."""


class SessionShredded(CaseRecordError):
    """The session's data keys were destroyed: its records can no longer be read or extended."""


class RecordUnreadable(CaseRecordError):
    """A record does not decrypt: its header or ciphertext was altered, or its key is gone."""


@dataclass(frozen=True)
class CaseEvent:
    """One decrypted event of a session's record."""

    header: RecordHeader
    body: dict[str, Any]


class CaseRecordStore(Protocol):
    """Append-only, encrypted, hash-chained events per session."""

    async def open(self) -> None:
        """Prepare the storage (create tables); safe to call more than once."""
        ...

    async def append(self, session_ref: str, kind: str, body: Mapping[str, Any]) -> RecordHeader:
        """Seal and chain one event; once this returns the event is durable."""
        ...

    async def read(self, session_ref: str) -> list[CaseEvent]:
        """The session's events, decrypted, in append order."""
        ...

    def iterate_raw(self) -> AsyncIterator[StoredRecord]:
        """Every stored record in storage order, still sealed (for verification and export)."""
        ...

    async def verify(self) -> VerifyResult:
        """Walk the whole chain; says where it breaks."""
        ...

    async def head(self) -> ChainHead | None:
        """The last record appended (None before the first), as stored apart from the records."""
        ...

    async def shred(self, session_ref: str) -> bool:
        """Destroy the session's data keys; True if there was anything to destroy."""
        ...


def _encode_body(body: Mapping[str, Any]) -> bytes:
    if not isinstance(body, Mapping):
        raise TypeError("a case record body is a JSON object")
    return json.dumps(
        dict(body), ensure_ascii=False, allow_nan=False, separators=(",", ":")
    ).encode("utf-8")


def check_append(session_ref: str, kind: str, body: Mapping[str, Any]) -> bytes:
    """The plaintext of a valid append; ValueError/TypeError for a bad one (every backend)."""
    if not session_ref or len(session_ref) > MAX_SESSION_REF:
        raise ValueError("session_ref must be 1 to 128 characters")
    if not KIND_PATTERN.fullmatch(kind):
        raise ValueError(f"bad record kind {kind!r}")
    return _encode_body(body)


def _row_to_record(row: sqlite3.Row) -> StoredRecord:
    return StoredRecord(
        header=RecordHeader(
            seq=row["seq"],
            at=row["at"],
            session_ref=row["session_ref"],
            kind=row["kind"],
            key_id=row["key_id"],
        ),
        nonce=bytes(row["nonce"]),
        ciphertext=bytes(row["ciphertext"]),
        prev_hash=bytes(row["prev_hash"]),
        hash=bytes(row["hash"]),
        body_digest=bytes(row["body_digest"]),
    )


@dataclass
class PendingAppend:
    """One validated append waiting for the flusher."""

    session_ref: str
    kind: str
    plaintext: bytes
    future: asyncio.Future[RecordHeader]


AppendOutcome = RecordHeader | CaseRecordError | RecordKeyError
BatchWriter = Callable[[list[PendingAppend]], Awaitable[list[AppendOutcome]]]


class GroupCommit:
    """Appends that arrive while a batch is being written go together in the next one.

    `write` stores a whole batch atomically (one transaction, one script call) and returns
    each append's outcome, in order; a batch that raises was stored not at all.
    """

    def __init__(self, write: BatchWriter) -> None:
        self._write = write
        # Appends waiting for the flusher, in arrival (= sequence) order.
        self._pending: list[PendingAppend] = []
        self._flusher: asyncio.Task[None] | None = None

    async def append(self, session_ref: str, kind: str, plaintext: bytes) -> RecordHeader:
        future: asyncio.Future[RecordHeader] = asyncio.get_running_loop().create_future()
        self._pending.append(PendingAppend(session_ref, kind, plaintext, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="case-record-flusher")
        return await future

    async def _flush(self) -> None:
        """Write queued appends, one batch at a time, until the queue is empty."""
        batch: list[PendingAppend] = []
        try:
            while self._pending:
                batch = [entry for entry in self._pending[:MAX_BATCH] if not entry.future.done()]
                del self._pending[:MAX_BATCH]
                if batch:
                    await self._commit(batch)
                batch = []
        finally:
            # Reached with work left only if the flusher itself was cancelled (loop shutdown):
            # then nobody may be left waiting forever.
            for entry in [*batch, *self._pending]:
                entry.future.cancel()
            self._pending.clear()

    async def _commit(self, batch: list[PendingAppend]) -> None:
        """Each caller learns its own outcome once the whole batch is stored."""
        try:
            outcomes = await self._write(batch)
        except Exception as exc:  # not stored: no caller may count on it
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(exc)
            return
        for entry, outcome in zip(batch, outcomes, strict=True):
            if entry.future.done():  # its caller gave up; the record is stored regardless
                continue
            if isinstance(outcome, RecordHeader):
                entry.future.set_result(outcome)
            else:
                entry.future.set_exception(outcome)


class SqliteCaseRecordStore:
    """The case record in the service's SQLite database."""

    def __init__(
        self, db: Database, keyring: Keyring, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self._keyring = keyring
        self._clock = clock
        # session_ref -> data key; touched only on the database thread.
        self._data_keys: dict[str, bytes] = {}
        self._appends = GroupCommit(
            lambda batch: self._db.transaction(lambda conn: self._write_batch(conn, batch))
        )

    async def open(self) -> None:
        """Create the record's tables if needed."""
        # Deleted pages are zeroed, so a shredded wrapped key does not linger in free pages.
        await self._db.execute("PRAGMA secure_delete=ON")

        def create(conn: sqlite3.Connection) -> None:
            for statement in SCHEMA:
                conn.execute(statement)

        await self._db.transaction(create)

    # --- keys (database thread) --------------------------------------------------------------

    @staticmethod
    def _is_shredded(conn: sqlite3.Connection, session_ref: str) -> bool:
        row = conn.execute(
            "SELECT 1 FROM case_record_shredded WHERE session_ref = ?", (session_ref,)
        ).fetchone()
        return row is not None

    @staticmethod
    def _wrapped_keys(conn: sqlite3.Connection, session_ref: str) -> dict[str, WrappedKey]:
        rows = conn.execute(
            "SELECT key_id, wrapped FROM case_record_keys WHERE session_ref = ?"
            " ORDER BY created_at",
            (session_ref,),
        ).fetchall()
        return {row["key_id"]: WrappedKey(row["key_id"], bytes(row["wrapped"])) for row in rows}

    def _data_key_for_append(self, conn: sqlite3.Connection, session_ref: str) -> bytes:
        """The session's data key, wrapped under the newest master key (rewrapping if needed)."""
        current = self._keyring.current_key_id
        wrapped = self._wrapped_keys(conn, session_ref)
        if current in wrapped:
            cached = self._data_keys.get(session_ref)
            if cached is not None:
                return cached
            data_key = self._keyring.unwrap(wrapped[current], session_ref)
        else:
            data_key = self._data_keys.get(session_ref) or self._unwrap_any(wrapped, session_ref)
            fresh = self._keyring.wrap(data_key, session_ref)
            conn.execute(
                "INSERT INTO case_record_keys (session_ref, key_id, wrapped, created_at)"
                " VALUES (?, ?, ?, ?)",
                (session_ref, fresh.key_id, fresh.blob, self._clock()),
            )
        self._data_keys[session_ref] = data_key
        return data_key

    def _unwrap_any(self, wrapped: Mapping[str, WrappedKey], session_ref: str) -> bytes:
        """An existing data key under any loaded master key, or a new one for a new session."""
        if not wrapped:
            return generate_key()
        loaded = [key for key_id, key in wrapped.items() if key_id in self._keyring.key_ids]
        if not loaded:
            raise RecordUnreadable(
                f"session {session_ref}: no loaded master key opens its data key"
                f" (wrapped by {', '.join(wrapped)})"
            )
        return self._keyring.unwrap(loaded[-1], session_ref)

    # --- the interface -----------------------------------------------------------------------

    async def append(self, session_ref: str, kind: str, body: Mapping[str, Any]) -> RecordHeader:
        # Validated before queueing, so a bad append fails alone and never its batch.
        return await self._appends.append(session_ref, kind, check_append(session_ref, kind, body))

    def _write_batch(
        self, conn: sqlite3.Connection, batch: list[PendingAppend]
    ) -> list[RecordHeader | CaseRecordError | RecordKeyError]:
        """On the database thread, inside one transaction: seal and chain the batch in order.

        A session that is shredded or whose data key cannot be opened fails its own appends
        before anything of them is written; any other error aborts the whole transaction.
        """
        head = conn.execute("SELECT seq, hash FROM case_record_head WHERE id = 1").fetchone()
        seq, prev_hash = (head["seq"], bytes(head["hash"])) if head else (0, GENESIS_HASH)
        outcomes: list[RecordHeader | CaseRecordError | RecordKeyError] = []
        for entry in batch:
            try:
                if self._is_shredded(conn, entry.session_ref):
                    raise SessionShredded(f"session {entry.session_ref} was shredded")
                data_key = self._data_key_for_append(conn, entry.session_ref)
            except (CaseRecordError, RecordKeyError) as exc:
                outcomes.append(exc)
                continue
            header = RecordHeader(
                seq=seq + 1,
                at=self._clock(),
                session_ref=entry.session_ref,
                kind=entry.kind,
                key_id=self._keyring.current_key_id,
            )
            nonce, ciphertext = seal(data_key, entry.plaintext, header.canonical())
            record = link(prev_hash, header, nonce, ciphertext)
            conn.execute(
                "INSERT INTO case_records (seq, at, session_ref, kind, key_id, nonce, ciphertext,"
                " prev_hash, hash, body_digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    header.seq,
                    header.at,
                    header.session_ref,
                    header.kind,
                    header.key_id,
                    record.nonce,
                    record.ciphertext,
                    record.prev_hash,
                    record.hash,
                    record.body_digest,
                ),
            )
            seq, prev_hash = header.seq, record.hash
            outcomes.append(header)
        if any(isinstance(outcome, RecordHeader) for outcome in outcomes):
            conn.execute(
                "INSERT INTO case_record_head (id, seq, hash) VALUES (1, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                (seq, prev_hash),
            )
        return outcomes

    async def read(self, session_ref: str) -> list[CaseEvent]:
        def run(conn: sqlite3.Connection) -> list[CaseEvent]:
            if self._is_shredded(conn, session_ref):
                raise SessionShredded(f"session {session_ref} was shredded")
            wrapped = self._wrapped_keys(conn, session_ref)
            rows = conn.execute(
                "SELECT * FROM case_records WHERE session_ref = ? ORDER BY position",
                (session_ref,),
            ).fetchall()
            # One data key per session: any wrapping the keyring can open will do, so a
            # retired master key is not needed once the session was rewrapped.
            data_key: bytes | None = None
            events = []
            for row in rows:
                record = _row_to_record(row)
                try:
                    if data_key is None:
                        if not wrapped:
                            raise RecordUnreadable("the session has no data key")
                        data_key = self._unwrap_any(wrapped, session_ref)
                    plaintext = unseal(
                        data_key, record.nonce, record.ciphertext, record.header.canonical()
                    )
                except (DecryptionFailed, RecordKeyError, RecordUnreadable) as exc:
                    raise RecordUnreadable(f"record {record.header.seq}: {exc}") from None
                events.append(CaseEvent(record.header, json.loads(plaintext)))
            return events

        return await self._db.transaction(run)

    async def _head_and_end(self) -> tuple[ChainHead | None, int]:
        def run(conn: sqlite3.Connection) -> tuple[ChainHead | None, int]:
            head = conn.execute("SELECT seq, hash FROM case_record_head WHERE id = 1").fetchone()
            end = conn.execute("SELECT MAX(position) FROM case_records").fetchone()[0]
            chain_head = ChainHead(head["seq"], bytes(head["hash"])) if head else None
            return chain_head, int(end or 0)

        return await self._db.transaction(run)

    async def head(self) -> ChainHead | None:
        head, _ = await self._head_and_end()
        return head

    async def _iterate(self, end: int | None) -> AsyncIterator[StoredRecord]:
        after = 0
        while True:
            rows = await self._db.fetchall(
                "SELECT * FROM case_records WHERE position > ? AND position <= ?"
                " ORDER BY position LIMIT ?",
                (after, end if end is not None else 2**62, PAGE_SIZE),
            )
            for row in rows:
                yield _row_to_record(row)
            if len(rows) < PAGE_SIZE:
                return
            after = rows[-1]["position"]

    def iterate_raw(self) -> AsyncIterator[StoredRecord]:
        return self._iterate(None)

    async def verify(self) -> VerifyResult:
        # Head and extent are read together, so appends racing with the walk are not "breaks".
        head, end = await self._head_and_end()
        verifier = ChainVerifier()
        async for record in self._iterate(end):
            verifier.feed(record)
        return verifier.finish(head)

    async def shred(self, session_ref: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            self._data_keys.pop(session_ref, None)
            destroyed = conn.execute(
                "DELETE FROM case_record_keys WHERE session_ref = ?", (session_ref,)
            ).rowcount
            conn.execute(
                "INSERT INTO case_record_shredded (session_ref, shredded_at) VALUES (?, ?)"
                " ON CONFLICT (session_ref) DO NOTHING",
                (session_ref, self._clock()),
            )
            return destroyed > 0

        destroyed = await self._db.transaction(run)
        # Move the zeroed pages out of the WAL so old frames holding the wrapped key go too.
        await self._db.fetchone("PRAGMA wal_checkpoint(TRUNCATE)")
        return destroyed
