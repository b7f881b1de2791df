"""The case record in Redis: same crypto, chain and answers as `SqliteCaseRecordStore`.

Keys (P is the prefix, `erv:` by default; `{chain}` keeps them in one cluster slot, since one
script writes them together):

    P record:{chain}:head             hash {seq, hash}: the chain head, kept apart from records
    P record:{chain}:end              last storage position used
    P record:{chain}:records          hash, storage position -> sealed record (JSON)
    P record:{chain}:session:<ref>    list of the session's storage positions, in append order
    P record:{chain}:keys:<ref>       hash, master key id -> the session's wrapped data key
    P record:{chain}:shredded         hash, session ref -> time it was shredded
    P record:{chain}:activity         sorted set, session ref by its last non-access event
    P record:{chain}:holds            hash, session ref -> legal hold (server.redis_backend
                                      .retention)
    P record:{chain}:batch:<id>       short-lived marker: that batch is committed

Appending is optimistic: a batch is sealed after the head read in one MULTI (with the
sessions' wrapped keys and shredded flags), then one Lua script writes it only if the head is
unchanged; otherwise it is re-read, re-sealed and retried. Any number of processes can append
at once and the chain stays one unbroken line. Within a process, concurrent appends are
grouped into one script call as in the SQLite store. A script call cut off on the wire is sent
again: the batch marker makes it answer "done" if the first one ran, never store a copy. An
append returns once Redis has answered (with `appendfsync always`: on disk); if Redis cannot
be reached it raises (redis ConnectionError/TimeoutError) after the client's socket timeouts.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

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
from server.record.retention import ACCESS_KINDS
from server.record.store import (
    PAGE_SIZE,
    CaseEvent,
    CaseRecordError,
    GroupCommit,
    PendingAppend,
    RecordUnreadable,
    SessionShredded,
    check_append,
)
from server.redis_backend.record_scripts import APPEND, SHRED

log = logging.getLogger("erv.record")

MAX_ATTEMPTS = 100  # each failed attempt means another process appended meanwhile
SCRIPT_RESENDS = 2  # a script call cut off on the wire is sent again (the marker dedups it)
BATCH_MARKER_TTL = 600  # seconds; far longer than any retry of one script call
AOF_REWRITE_WAIT = 30.0  # seconds to wait for a rewrite already running before asking again
HELD = -1  # what the shred script answers for a session on legal hold


class RecordKeys:
    """Key names of the case record under one prefix."""

    def __init__(self, prefix: str) -> None:
        base = prefix + "record:{chain}:"
        self.head = base + "head"
        self.end = base + "end"
        self.records = base + "records"
        self.shredded = base + "shredded"
        self.activity = base + "activity"
        self.holds = base + "holds"
        self._session = base + "session:"
        self._keys = base + "keys:"
        self._batch = base + "batch:"

    def session(self, session_ref: str) -> str:
        return self._session + session_ref

    def data_keys(self, session_ref: str) -> str:
        return self._keys + session_ref

    def batch(self, batch_id: str) -> str:
        return self._batch + batch_id


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_record(record: StoredRecord) -> bytes:
    """A stored record as JSON: the header in the clear, the sealed body as base64."""
    h = record.header
    return json.dumps({
        "seq": h.seq, "at": h.at, "session": h.session_ref, "kind": h.kind, "key_id": h.key_id,
        "nonce": _b64(record.nonce), "ciphertext": _b64(record.ciphertext),
        "prev_hash": _b64(record.prev_hash), "hash": _b64(record.hash),
        "body_digest": _b64(record.body_digest),
    }, separators=(",", ":")).encode("ascii")


def decode_record(blob: bytes) -> StoredRecord:
    """The inverse of `encode_record`; ValueError if `blob` is not one."""
    try:
        raw = json.loads(blob)
        header = RecordHeader(
            seq=int(raw["seq"]), at=float(raw["at"]), session_ref=str(raw["session"]),
            kind=str(raw["kind"]), key_id=str(raw["key_id"]),
        )
        binary = {name: base64.b64decode(raw[name], validate=True)
                  for name in ("nonce", "ciphertext", "prev_hash", "hash", "body_digest")}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a stored record: {exc}") from None
    return StoredRecord(header=header, **binary)


def _bytes(value: object) -> bytes:
    """A reply as bytes (the client must not decode responses: keys and hashes are binary)."""
    if isinstance(value, bytes):
        return value
    raise TypeError("the Redis client must be made with decode_responses=False")


def _head(seq: object, hash_: object) -> ChainHead | None:
    return ChainHead(int(_bytes(seq)), _bytes(hash_)) if seq is not None else None


def _wrapped(raw: Mapping[bytes, bytes]) -> dict[str, WrappedKey]:
    return {k.decode(): WrappedKey(k.decode(), bytes(v)) for k, v in raw.items()}


@dataclass
class _SessionPlan:
    """What one attempt does with one session's data key."""

    data_key: bytes
    fresh: bool = False  # a new session: no data key stored yet
    new_wrapping: WrappedKey | None = None  # to store (new session, or a newer master key)


@dataclass
class _Attempt:
    """One sealing of a batch after one reading of the head."""

    expected: ChainHead | None
    sessions: dict[str, _SessionPlan] = field(default_factory=dict)
    outcomes: list[RecordHeader | CaseRecordError | RecordKeyError] = field(default_factory=list)
    records: list[StoredRecord] = field(default_factory=list)


class RedisCaseRecordStore:
    """`CaseRecordStore` in Redis, shared by every node; see the module docstring."""

    def __init__(
        self,
        redis: Redis,
        keyring: Keyring,
        clock: Callable[[], float] = time.time,
        prefix: str = "erv:",
    ) -> None:
        self._redis = redis
        self._keyring = keyring
        self._clock = clock
        self.keys = RecordKeys(prefix)
        self._append_script = redis.register_script(APPEND)
        self._shred_script = redis.register_script(SHRED)
        # session_ref -> data key, only for sessions whose key is known to be stored.
        self._data_keys: dict[str, bytes] = {}
        self._appends = GroupCommit(self._write_batch)

    async def open(self) -> None:
        """Nothing to create: Redis makes keys on first write."""

    # --- appending ---------------------------------------------------------------------------

    async def append(self, session_ref: str, kind: str, body: Mapping[str, Any]) -> RecordHeader:
        return await self._appends.append(session_ref, kind, check_append(session_ref, kind, body))

    async def _write_batch(
        self, batch: list[PendingAppend]
    ) -> list[RecordHeader | CaseRecordError | RecordKeyError]:
        refs = list(dict.fromkeys(entry.session_ref for entry in batch))
        batch_key = self.keys.batch(secrets.token_hex(16))
        attempts: list[_Attempt] = []
        for number in range(MAX_ATTEMPTS):
            attempt = await self._seal(batch, refs)
            attempts.append(attempt)
            if not attempt.records:
                return attempt.outcomes
            reply = await self._run_append(
                [self.keys.head, self.keys.end, self.keys.records, self.keys.shredded,
                 self.keys.activity, batch_key,
                 *(self.keys.session(ref) for ref in refs),
                 *(self.keys.data_keys(ref) for ref in refs)],
                self._script_args(attempt, refs, number),
            )
            verdict = reply[0].decode()
            if verdict == "done":
                attempt = attempts[int(reply[1])]
            if verdict in ("ok", "done"):
                for ref, plan in attempt.sessions.items():
                    self._data_keys[ref] = plan.data_key
                return attempt.outcomes
            # Someone appended (or shredded) between our read and our write: read again.
            await asyncio.sleep(secrets.randbelow(1 + min(number, 20)) / 1000)
        raise CaseRecordError(f"case record busy: no append after {MAX_ATTEMPTS} attempts")

    async def _run_append(self, keys: list[str], args: list[str | bytes]) -> list[bytes]:
        """The append script; resent if the connection fails, since the script may have run
        and only its reply been lost: the batch marker then answers 'done', not a copy."""
        for resend in range(SCRIPT_RESENDS + 1):
            try:
                reply: list[bytes] = await self._append_script(keys=keys, args=args)
                return reply
            except (RedisConnectionError, RedisTimeoutError):
                if resend == SCRIPT_RESENDS:
                    raise
                await asyncio.sleep(0.05 * (resend + 1))
        raise AssertionError("unreachable")

    async def _seal(self, batch: list[PendingAppend], refs: list[str]) -> _Attempt:
        """Read the head and the sessions' keys in one MULTI, then seal the batch after it."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hmget(self.keys.head, ["seq", "hash"])
            for ref in refs:
                pipe.hexists(self.keys.shredded, ref)
                pipe.hgetall(self.keys.data_keys(ref))
            replies = await pipe.execute()
        expected = _head(*replies[0])
        attempt = _Attempt(expected)
        failures: dict[str, CaseRecordError | RecordKeyError] = {}
        for index, ref in enumerate(refs):
            shredded, wrapped = replies[1 + 2 * index], replies[2 + 2 * index]
            try:
                if shredded:
                    raise SessionShredded(f"session {ref} was shredded")
                attempt.sessions[ref] = self._plan(ref, _wrapped(wrapped))
            except (CaseRecordError, RecordKeyError) as exc:
                failures[ref] = exc
        seq, prev_hash = (expected.seq, expected.hash) if expected else (0, GENESIS_HASH)
        for entry in batch:
            failure = failures.get(entry.session_ref)
            if failure is not None:
                attempt.outcomes.append(failure)
                continue
            header = RecordHeader(
                seq=seq + 1,
                at=self._clock(),
                session_ref=entry.session_ref,
                kind=entry.kind,
                key_id=self._keyring.current_key_id,
            )
            data_key = attempt.sessions[entry.session_ref].data_key
            nonce, ciphertext = seal(data_key, entry.plaintext, header.canonical())
            record = link(prev_hash, header, nonce, ciphertext)
            attempt.records.append(record)
            attempt.outcomes.append(header)
            seq, prev_hash = header.seq, record.hash
        # Sessions that fail write nothing, not even a new wrapping.
        for ref in failures:
            attempt.sessions.pop(ref, None)
        return attempt

    def _plan(self, session_ref: str, wrapped: dict[str, WrappedKey]) -> _SessionPlan:
        """The session's data key, and the wrapping to store if the newest master key lacks one."""
        current = self._keyring.current_key_id
        if not wrapped:
            data_key = generate_key()
            return _SessionPlan(data_key, True, self._keyring.wrap(data_key, session_ref))
        cached = self._data_keys.get(session_ref)
        if current in wrapped:
            return _SessionPlan(
                cached or self._keyring.unwrap(wrapped[current], session_ref))
        data_key = cached or self._unwrap_any(wrapped, session_ref)
        return _SessionPlan(data_key, False, self._keyring.wrap(data_key, session_ref))

    def _unwrap_any(self, wrapped: Mapping[str, WrappedKey], session_ref: str) -> bytes:
        """The data key under the newest loaded master key that wraps it."""
        loaded = [wrapped[key_id] for key_id in self._keyring.key_ids if key_id in wrapped]
        if not loaded:
            raise RecordUnreadable(
                f"session {session_ref}: no loaded master key opens its data key"
                f" (wrapped by {', '.join(sorted(wrapped))})"
            )
        return self._keyring.unwrap(loaded[-1], session_ref)

    @staticmethod
    def _script_args(attempt: _Attempt, refs: list[str], number: int) -> list[str | bytes]:
        expected = attempt.expected
        args: list[str | bytes] = [
            str(expected.seq) if expected else "0",
            expected.hash if expected else b"",
            str(attempt.records[-1].header.seq),
            attempt.records[-1].hash,
            str(number),
            str(BATCH_MARKER_TTL),
            str(len(refs)),
        ]
        for ref in refs:
            plan = attempt.sessions.get(ref)
            wrapping = plan.new_wrapping if plan else None
            args += [ref, "1" if plan and plan.fresh else "0",
                     wrapping.key_id if wrapping else "", wrapping.blob if wrapping else b""]
        index = {ref: i for i, ref in enumerate(refs, start=1)}
        args.append(str(len(attempt.records)))
        for record in attempt.records:
            h = record.header
            args += [str(index[h.session_ref]), encode_record(record),
                     "" if h.kind in ACCESS_KINDS else repr(h.at)]
        return args

    # --- reading -----------------------------------------------------------------------------

    async def read(self, session_ref: str) -> list[CaseEvent]:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hexists(self.keys.shredded, session_ref)
            pipe.hgetall(self.keys.data_keys(session_ref))
            pipe.lrange(self.keys.session(session_ref), 0, -1)
            shredded, wrapped_raw, positions = await pipe.execute()
        if shredded:
            raise SessionShredded(f"session {session_ref} was shredded")
        wrapped = _wrapped(wrapped_raw)
        data_key: bytes | None = None
        events = []
        async for position, blob in self._fetch(positions):
            try:
                record = decode_record(blob)
            except ValueError as exc:
                raise RecordUnreadable(f"storage position {position}: {exc}") from None
            if record.header.session_ref != session_ref:
                raise RecordUnreadable(
                    f"record {record.header.seq}: stored in the place of one of this session's")
            try:
                if data_key is None:
                    if not wrapped:
                        raise RecordUnreadable("the session has no data key")
                    data_key = self._data_keys.get(session_ref) or self._unwrap_any(
                        wrapped, session_ref)
                plaintext = unseal(
                    data_key, record.nonce, record.ciphertext, record.header.canonical()
                )
            except (DecryptionFailed, RecordKeyError, RecordUnreadable) as exc:
                raise RecordUnreadable(f"record {record.header.seq}: {exc}") from None
            events.append(CaseEvent(record.header, json.loads(plaintext)))
        return events

    async def _fetch(self, positions: Sequence[bytes | int]) -> AsyncIterator[tuple[int, bytes]]:
        """(position, stored record) for each position that holds one, in the given order."""
        for start in range(0, len(positions), PAGE_SIZE):
            page = [int(p) for p in positions[start:start + PAGE_SIZE]]
            blobs = await self._redis.hmget(self.keys.records, page)  # type: ignore[arg-type]
            for position, blob in zip(page, blobs, strict=True):
                if blob is not None:
                    yield position, _bytes(blob)

    async def _iterate(self, end: int | None) -> AsyncIterator[StoredRecord]:
        if end is None:
            end = int(await self._redis.get(self.keys.end) or 0)
        async for position, blob in self._fetch(range(1, end + 1)):
            try:
                yield decode_record(blob)
            except ValueError:
                # Left out, so verification names its sequence number as missing.
                log.warning("case record: storage position %d does not hold a record", position)

    def iterate_raw(self) -> AsyncIterator[StoredRecord]:
        return self._iterate(None)

    async def head(self) -> ChainHead | None:
        seq, hash_ = await self._redis.hmget(self.keys.head, ["seq", "hash"])
        return _head(seq, hash_)

    async def verify(self) -> VerifyResult:
        # Head and extent are read together, so appends racing with the walk are not "breaks".
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hmget(self.keys.head, ["seq", "hash"])
            pipe.get(self.keys.end)
            (seq, hash_), end = await pipe.execute()
        head = _head(seq, hash_)
        verifier = ChainVerifier()
        async for record in self._iterate(int(end or 0)):
            verifier.feed(record)
        return verifier.finish(head)

    # --- shredding ---------------------------------------------------------------------------

    async def shred(self, session_ref: str) -> bool:
        destroyed = await self.shred_unless_held(session_ref, unless_held=False)
        await self.forget_shredded()
        return destroyed is True

    async def shred_unless_held(self, session_ref: str, unless_held: bool = True) -> bool | None:
        """Shred in one step with the hold check: True/False as `shred`, None if on hold."""
        self._data_keys.pop(session_ref, None)
        result = int(await self._shred_script(
            keys=[self.keys.data_keys(session_ref), self.keys.shredded, self.keys.activity,
                  self.keys.holds],
            args=[session_ref, repr(self._clock()), "1" if unless_held else "0"],
        ))
        return None if result == HELD else result > 0

    async def forget_shredded(self) -> None:
        """Ask Redis to rewrite its AOF, so deleted wrapped keys leave the files on disk too.

        A rewrite already running may have started before the keys were deleted: wait for it
        and ask again. Where the command is not allowed (some managed services), say so.
        """
        deadline = time.monotonic() + AOF_REWRITE_WAIT
        while True:
            try:
                await self._redis.bgrewriteaof()
                return
            except ResponseError as exc:
                if "in progress" not in str(exc) or time.monotonic() > deadline:
                    log.warning("could not start an AOF rewrite (%s): shredded data keys stay in"
                                " Redis's older AOF files until its next rewrite", exc)
                    return
            await asyncio.sleep(0.1)
