"""Retention: crypto-shred sessions idle longer than the retention period, unless on legal hold.

A session's age is the time of its last event, not counting access events (exports, holds):
reading a record does not keep it alive. Purging destroys the session's data keys
(`store.shred`), so its content can never be decrypted again while the hash chain, which
covers ciphertexts, still verifies; the session's masked number in `video_sessions` is
blanked too. Nothing readable about a purged session is written anywhere: only counts.

`RetentionStore` is the interface; `Retention` here keeps holds in the SQLite database next
to the record, `server.redis_backend.retention.RedisRetention` in Redis. Both judge age from
the case record alone (the last non-access event's time), never from the sessions table.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from server.db import Database
from server.record.store import SqliteCaseRecordStore

log = logging.getLogger("erv.record")

DAY = 86400.0
# Events that say someone looked after the record; they do not make a session "recent".
# A contact-history lookup (`history_consulted`) is one too: being looked up from a later
# session must not keep an old record from its retention.
ACCESS_KINDS = ("record_exported", "legal_hold_set", "legal_hold_released", "record_read",
                "history_consulted")

HOLD_SCHEMA = """CREATE TABLE IF NOT EXISTS record_legal_holds (
    session_ref TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    set_by TEXT NOT NULL,
    set_at REAL NOT NULL
)"""


class RetentionError(Exception):
    """A hold or release is refused; the message says why."""


@dataclass(frozen=True)
class PurgeResult:
    purged: int  # sessions shredded by this run
    held: int  # sessions past retention but kept for a legal hold


class RetentionStore(Protocol):
    """Legal holds and purging, over whichever backend keeps the case record."""

    async def open(self) -> None:
        """Prepare the storage (create tables); safe to call more than once."""
        ...

    async def hold(self, session_ref: str, reason: str, by: str | None = None,
                   now: float | None = None) -> None:
        """Keep the session through purges; RetentionError if it has no live record."""
        ...

    async def release(self, session_ref: str, by: str | None = None) -> bool:
        """Lift the hold; False if there was none."""
        ...

    async def purge(self, retention_days: int, now: float | None = None) -> PurgeResult:
        """Shred every session idle for longer than `retention_days` and not on hold."""
        ...


class MaskedNumbers(Protocol):
    """The part of a video session store a purge needs: blanking the masked number."""

    async def forget_phone(self, session_id: str) -> None: ...


def operator_name() -> str:
    """Who is at the keyboard, for holds set from the command line."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def clock(now: float | None) -> float:
    """`now`, or the current time (through this module's `time`, which tests may move)."""
    return time.time() if now is None else now


def cutoff(retention_days: int, now: float | None) -> float:
    """Sessions whose last non-access event is older than this are past retention."""
    return clock(now) - retention_days * DAY


async def remove_evidence(evidence_root: Path | None, session_ref: str) -> None:
    """The files are already unreadable (their keys were in the record); remove them so they
    take no space and leave no trace of how much was shared."""
    if evidence_root is not None:
        await asyncio.to_thread(shutil.rmtree, evidence_root / session_ref, ignore_errors=True)


class Retention:
    """Legal holds and purging over one open database and its case record store."""

    def __init__(self, db: Database, store: SqliteCaseRecordStore,
                 evidence_root: Path | None = None) -> None:
        self.db = db
        self.store = store
        self.evidence_root = evidence_root

    async def open(self) -> None:
        await self.store.open()
        await self.db.execute(HOLD_SCHEMA)

    async def _state(self, session_ref: str) -> tuple[bool, bool]:
        """(has a record, was shredded)."""
        recorded = await self.db.fetchone(
            "SELECT 1 FROM case_records WHERE session_ref = ? LIMIT 1", (session_ref,)
        )
        shredded = await self.db.fetchone(
            "SELECT 1 FROM case_record_shredded WHERE session_ref = ?", (session_ref,)
        )
        return recorded is not None, shredded is not None

    async def hold(self, session_ref: str, reason: str, by: str | None = None,
                   now: float | None = None) -> None:
        reason = reason.strip()
        if not reason:
            raise RetentionError("a legal hold needs a reason")
        recorded, shredded = await self._state(session_ref)
        if shredded:
            raise RetentionError(f"session {session_ref} was already purged")
        if not recorded:
            raise RetentionError(f"no case record for session {session_ref}")
        who = by or operator_name()
        await self.db.execute(
            "INSERT INTO record_legal_holds (session_ref, reason, set_by, set_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (session_ref) DO UPDATE SET"
            " reason = excluded.reason, set_by = excluded.set_by, set_at = excluded.set_at",
            (session_ref, reason, who, clock(now)),
        )
        await self.store.append(session_ref, "legal_hold_set", {"by": who, "reason": reason})

    async def release(self, session_ref: str, by: str | None = None) -> bool:
        """Lift the hold; False if there was none."""
        removed = await self.db.execute(
            "DELETE FROM record_legal_holds WHERE session_ref = ?", (session_ref,)
        )
        if removed:
            await self.store.append(session_ref, "legal_hold_released",
                                    {"by": by or operator_name()})
        return removed > 0

    async def purge(self, retention_days: int, now: float | None = None) -> PurgeResult:
        """Shred every session idle for longer than `retention_days` and not on hold."""
        oldest = cutoff(retention_days, now)
        marks = ", ".join("?" for _ in ACCESS_KINDS)
        rows = await self.db.fetchall(
            "SELECT r.session_ref, MAX(CASE WHEN r.kind IN (" + marks + ") THEN NULL"  # noqa: S608
            " ELSE r.at END) AS last_at, h.session_ref IS NOT NULL AS held"
            " FROM case_records r LEFT JOIN record_legal_holds h USING (session_ref)"
            " WHERE r.session_ref NOT IN (SELECT session_ref FROM case_record_shredded)"
            " GROUP BY r.session_ref",
            (*ACCESS_KINDS,),
        )
        expired = [row for row in rows if row["last_at"] is not None and row["last_at"] < oldest]
        purged = held = 0
        for row in expired:
            if row["held"]:
                held += 1
                continue
            session_ref = row["session_ref"]
            await self.store.shred(session_ref)

            def blank(conn: sqlite3.Connection, ref: str = session_ref) -> None:
                conn.execute("UPDATE video_sessions SET phone = '' WHERE id = ?", (ref,))

            await self.db.transaction(blank)
            await remove_evidence(self.evidence_root, session_ref)
            purged += 1
        if purged:
            await self.db.fetchone("PRAGMA wal_checkpoint(TRUNCATE)")
        log.info("purge: %d sessions shredded, %d kept on legal hold", purged, held)
        return PurgeResult(purged, held)
