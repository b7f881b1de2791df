"""Retention over the Redis case record: same holds, purges and answers as `Retention`.

Holds live in `P record:{chain}:holds` (session ref -> JSON {reason, set_by, set_at}). A
session's age comes from the record itself: the append script keeps `P record:{chain}:activity`,
each session scored by its last event that is not an access event, so a purge reads the expired
sessions in one range query. Shredding checks the hold in the same script, so a hold set on
another node while a purge runs always wins.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from redis.asyncio import Redis

from server.record.retention import (
    MaskedNumbers,
    PurgeResult,
    RetentionError,
    clock,
    cutoff,
    operator_name,
    remove_evidence,
)
from server.redis_backend.record import RecordKeys, RedisCaseRecordStore
from server.redis_backend.record_scripts import HOLD

log = logging.getLogger("erv.record")


class RedisRetention:
    """`RetentionStore` over a `RedisCaseRecordStore`; `sessions` blanks purged numbers."""

    def __init__(self, redis: Redis, store: RedisCaseRecordStore,
                 evidence_root: Path | None = None, *, sessions: MaskedNumbers,
                 prefix: str = "erv:") -> None:
        self.redis = redis
        self.store = store
        self.evidence_root = evidence_root
        self.sessions = sessions
        # Holds sit next to the record they protect, in the store's slot.
        self.keys = RecordKeys(prefix)
        if self.keys.holds != store.keys.holds:
            raise ValueError("a retention and its record store must use the same prefix")
        self._hold = redis.register_script(HOLD)

    async def open(self) -> None:
        await self.store.open()

    async def hold(self, session_ref: str, reason: str, by: str | None = None,
                   now: float | None = None) -> None:
        reason = reason.strip()
        if not reason:
            raise RetentionError("a legal hold needs a reason")
        who = by or operator_name()
        entry = json.dumps({"reason": reason, "set_by": who, "set_at": clock(now)})
        outcome = await self._hold(
            keys=[self.keys.session(session_ref), self.keys.shredded, self.keys.holds],
            args=[session_ref, entry],
        )
        if outcome == b"shredded":
            raise RetentionError(f"session {session_ref} was already purged")
        if outcome == b"missing":
            raise RetentionError(f"no case record for session {session_ref}")
        await self.store.append(session_ref, "legal_hold_set", {"by": who, "reason": reason})

    async def release(self, session_ref: str, by: str | None = None) -> bool:
        removed = int(await self.redis.hdel(self.keys.holds, session_ref))
        if removed:
            await self.store.append(session_ref, "legal_hold_released",
                                    {"by": by or operator_name()})
        return removed > 0

    async def purge(self, retention_days: int, now: float | None = None) -> PurgeResult:
        oldest = cutoff(retention_days, now)
        # Exclusive bound: a session exactly at the cutoff is not yet past it (as in SQLite).
        expired = await self.redis.zrangebyscore(self.keys.activity, "-inf", f"({oldest!r}")
        purged = held = 0
        for raw in expired:
            session_ref = raw.decode() if isinstance(raw, bytes) else str(raw)
            shredded = await self.store.shred_unless_held(session_ref)
            if shredded is None:
                held += 1
                continue
            await self.sessions.forget_phone(session_ref)
            await remove_evidence(self.evidence_root, session_ref)
            purged += 1
        if purged:
            await self.store.forget_shredded()
        log.info("purge: %d sessions shredded, %d kept on legal hold", purged, held)
        return PurgeResult(purged, held)
