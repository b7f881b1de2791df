"""Specialist invitations: ringing -> accepted | declined | timed_out | cancelled.

An invitation rings one specialist for a set time. Answering is one conditional UPDATE, so a
late accept after the time-out (or after the handler moved on) cannot win.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from server.db import Database


class InvitationState(StrEnum):
    RINGING = "ringing"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class SpecialistInvitation:
    id: str
    session_id: str
    specialist_id: int
    invited_by: int
    state: InvitationState
    created_at: float
    expires_at: float
    answered_at: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> SpecialistInvitation:
        return cls(
            id=row["id"],
            session_id=row["session_id"],
            specialist_id=row["specialist_id"],
            invited_by=row["invited_by"],
            state=InvitationState(row["state"]),
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            answered_at=row["answered_at"],
        )


class InvitationStore(Protocol):
    """What the rest of the service uses of a specialist invitation store (SQLite or Redis)."""

    async def ring(
        self, session_id: str, specialist_id: int, invited_by: int
    ) -> SpecialistInvitation: ...

    async def get(self, invitation_id: str) -> SpecialistInvitation | None: ...

    async def latest(self, session_id: str) -> SpecialistInvitation | None: ...

    async def tried(self, session_id: str) -> set[int]: ...

    async def ringing_for(self, specialist_id: int) -> list[SpecialistInvitation]: ...

    async def has_accepted(self, session_id: str, specialist_id: int) -> bool: ...

    async def was_invited(self, session_id: str, specialist_id: int) -> bool: ...

    async def answer(
        self, invitation_id: str, specialist_id: int, state: InvitationState,
        now: float | None = None,
    ) -> SpecialistInvitation | None: ...

    async def finish(self, invitation_id: str, state: InvitationState) -> bool: ...

    async def expire_stale(self, now: float | None = None) -> int: ...

    async def overdue(self, before: float, limit: int = 100) -> list[SpecialistInvitation]:
        """Invitations still ringing whose ring time ended before `before`, oldest first."""

    async def cancel_session(self, session_id: str) -> list[SpecialistInvitation]: ...


class SpecialistInvitations:
    def __init__(self, db: Database, ring_seconds: int) -> None:
        self.db = db
        self.ring_seconds = ring_seconds

    async def ring(self, session_id: str, specialist_id: int, invited_by: int) -> (
        SpecialistInvitation
    ):
        """Start ringing; any invitation still ringing for the session is cancelled."""
        invitation_id = secrets.token_hex(8)
        now = time.time()

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE specialist_invitations SET state = 'cancelled', answered_at = ?"
                " WHERE session_id = ? AND state = 'ringing'",
                (now, session_id),
            )
            conn.execute(
                "INSERT INTO specialist_invitations (id, session_id, specialist_id, invited_by,"
                " state, created_at, expires_at) VALUES (?, ?, ?, ?, 'ringing', ?, ?)",
                (invitation_id, session_id, specialist_id, invited_by, now,
                 now + self.ring_seconds),
            )

        await self.db.transaction(run)
        invitation = await self.get(invitation_id)
        assert invitation is not None
        return invitation

    async def get(self, invitation_id: str) -> SpecialistInvitation | None:
        row = await self.db.fetchone(
            "SELECT * FROM specialist_invitations WHERE id = ?", (invitation_id,)
        )
        return SpecialistInvitation.from_row(row) if row else None

    async def latest(self, session_id: str) -> SpecialistInvitation | None:
        row = await self.db.fetchone(
            "SELECT * FROM specialist_invitations WHERE session_id = ?"
            " ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (session_id,),
        )
        return SpecialistInvitation.from_row(row) if row else None

    async def tried(self, session_id: str) -> set[int]:
        """Specialists already asked in this session (the next 'first available' skips them)."""
        rows = await self.db.fetchall(
            "SELECT DISTINCT specialist_id FROM specialist_invitations WHERE session_id = ?",
            (session_id,),
        )
        return {row[0] for row in rows}

    async def ringing_for(self, specialist_id: int) -> list[SpecialistInvitation]:
        rows = await self.db.fetchall(
            "SELECT * FROM specialist_invitations WHERE specialist_id = ? AND state = 'ringing'"
            " AND expires_at > ? ORDER BY created_at",
            (specialist_id, time.time()),
        )
        return [SpecialistInvitation.from_row(r) for r in rows]

    async def has_accepted(self, session_id: str, specialist_id: int) -> bool:
        row = await self.db.fetchone(
            "SELECT 1 FROM specialist_invitations WHERE session_id = ? AND specialist_id = ?"
            " AND state = 'accepted'",
            (session_id, specialist_id),
        )
        return row is not None

    async def was_invited(self, session_id: str, specialist_id: int) -> bool:
        row = await self.db.fetchone(
            "SELECT 1 FROM specialist_invitations WHERE session_id = ? AND specialist_id = ?",
            (session_id, specialist_id),
        )
        return row is not None

    async def answer(
        self, invitation_id: str, specialist_id: int, state: InvitationState,
        now: float | None = None,
    ) -> SpecialistInvitation | None:
        """Accept or decline while still ringing; None if it no longer rings."""
        now = time.time() if now is None else now
        changed = await self.db.execute(
            "UPDATE specialist_invitations SET state = ?, answered_at = ?"
            " WHERE id = ? AND specialist_id = ? AND state = 'ringing' AND expires_at > ?",
            (state.value, now, invitation_id, specialist_id, now),
        )
        return await self.get(invitation_id) if changed else None

    async def finish(self, invitation_id: str, state: InvitationState) -> bool:
        """Time out or cancel a ringing invitation; False if it was already answered."""
        changed = await self.db.execute(
            "UPDATE specialist_invitations SET state = ?, answered_at = ?"
            " WHERE id = ? AND state = 'ringing'",
            (state.value, time.time(), invitation_id),
        )
        return changed == 1

    async def overdue(self, before: float, limit: int = 100) -> list[SpecialistInvitation]:
        rows = await self.db.fetchall(
            "SELECT * FROM specialist_invitations WHERE state = 'ringing' AND expires_at < ?"
            " ORDER BY expires_at LIMIT ?",
            (before, limit),
        )
        return [SpecialistInvitation.from_row(r) for r in rows]

    async def expire_stale(self, now: float | None = None) -> int:
        """Mark invitations whose ring time passed (e.g. across a restart) timed out."""
        return await self.db.execute(
            "UPDATE specialist_invitations SET state = 'timed_out', answered_at = expires_at"
            " WHERE state = 'ringing' AND expires_at <= ?",
            (time.time() if now is None else now,),
        )

    async def cancel_session(self, session_id: str) -> list[SpecialistInvitation]:
        rows = await self.db.fetchall(
            "SELECT * FROM specialist_invitations WHERE session_id = ? AND state = 'ringing'",
            (session_id,),
        )
        for row in rows:
            await self.finish(row["id"], InvitationState.CANCELLED)
        return [SpecialistInvitation.from_row(r) for r in rows]
