"""Video sessions and their life: created -> invited -> opened -> joined -> connected -> ended.

Each state is entered once and time-stamped; a session can be ended from any state and from
ended it goes nowhere. Every change is one conditional UPDATE, so two requests racing to move
the same session cannot both win.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from server.db import Database


class SessionState(StrEnum):
    CREATED = "created"
    INVITED = "invited"
    OPENED = "opened"
    JOINED = "joined"
    CONNECTED = "connected"
    ENDED = "ended"


ORDER = (
    SessionState.CREATED,
    SessionState.INVITED,
    SessionState.OPENED,
    SessionState.JOINED,
    SessionState.CONNECTED,
)

TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    state: frozenset({ORDER[i + 1], SessionState.ENDED} if i + 1 < len(ORDER) else
                     {SessionState.ENDED})
    for i, state in enumerate(ORDER)
}
TRANSITIONS[SessionState.ENDED] = frozenset()

INCIDENT_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9/\-_. ]{0,39}$")
LANGUAGES = ("en", "cy")


class IllegalTransition(Exception):
    def __init__(self, current: SessionState, target: SessionState) -> None:
        super().__init__(f"a {current} session cannot become {target}")
        self.current = current
        self.target = target


class SessionInputError(ValueError):
    """Bad input for a new session; the message is safe to show the handler."""


@dataclass(frozen=True)
class VideoSession:
    id: str
    incident_ref: str
    phone: str
    handler_id: int
    language: str
    state: SessionState
    created_at: float
    invited_at: float | None
    opened_at: float | None
    joined_at: float | None
    connected_at: float | None
    ended_at: float | None
    end_reason: str | None
    # The caller stays on the 999 phone line (the default): the page sends video and location,
    # not sound. The handler can switch the call to full sound.
    phone_line: bool = True
    # What the caller's page and the handler's page last reported (server.caller_state).
    facts: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> VideoSession:
        return cls(
            id=row["id"],
            incident_ref=row["incident_ref"],
            phone=row["phone"],
            handler_id=row["handler_id"],
            language=row["language"],
            state=SessionState(row["state"]),
            created_at=row["created_at"],
            invited_at=row["invited_at"],
            opened_at=row["opened_at"],
            joined_at=row["joined_at"],
            connected_at=row["connected_at"],
            ended_at=row["ended_at"],
            end_reason=row["end_reason"],
            phone_line=bool(row["phone_line"]),
            facts=json.loads(row["caller_facts"] or "{}"),
        )

    @property
    def ended(self) -> bool:
        return self.state is SessionState.ENDED

    def timeline(self) -> dict[str, float | None]:
        return {
            "created": self.created_at,
            "invited": self.invited_at,
            "opened": self.opened_at,
            "joined": self.joined_at,
            "connected": self.connected_at,
            "ended": self.ended_at,
        }


def validate_incident_ref(raw: str) -> str:
    ref = raw.strip()
    if not INCIDENT_REF.match(ref):
        raise SessionInputError(
            "Enter the incident reference (letters, digits, / - _ . up to 40 characters)."
        )
    return ref


def validate_new_session(incident_ref: str, language: str) -> str:
    """The cleaned incident reference, or SessionInputError; shared by every store."""
    ref = validate_incident_ref(incident_ref)
    if language not in LANGUAGES:
        raise SessionInputError(f"Language must be one of {', '.join(LANGUAGES)}.")
    return ref


class VideoSessionStore(Protocol):
    """What the rest of the service uses of a video session store (SQLite or Redis)."""

    async def create(
        self, incident_ref: str, phone_e164: str, handler_id: int, language: str = "en",
        contact_link: str | None = None, phone_line: bool = True,
    ) -> VideoSession: ...

    async def get(self, session_id: str) -> VideoSession | None: ...

    async def for_handler(self, handler_id: int, limit: int = 50) -> list[VideoSession]: ...

    async def for_specialist(self, specialist_id: int, limit: int = 50) -> list[VideoSession]:
        ...

    async def recent(self, limit: int = 100) -> list[VideoSession]: ...

    async def earlier_contacts(self, session_id: str) -> list[VideoSession]: ...

    async def advance(
        self, session_id: str, target: SessionState, reason: str | None = None
    ) -> VideoSession: ...

    async def reach(self, session_id: str, target: SessionState) -> VideoSession: ...

    async def forget_phone(self, session_id: str) -> None: ...

    async def set_phone_line(self, session_id: str, phone_line: bool) -> None: ...

    async def update_facts(self, session_id: str, facts: Mapping[str, Any]) -> None:
        """Merge `facts` (JSON values; None removes a fact) into the session's, field by
        field, so reports from the caller and the handler never overwrite each other."""


async def walk_forward(
    store: VideoSessionStore, session_id: str, target: SessionState
) -> VideoSession:
    """`reach` for any store: advance step by step until `target`, or stop if beyond it.

    Never moves an ended session.
    """
    session = await store.get(session_id)
    if session is None:
        raise KeyError(session_id)
    if session.ended:
        raise IllegalTransition(session.state, target)
    while ORDER.index(session.state) < ORDER.index(target):
        nxt = ORDER[ORDER.index(session.state) + 1]
        try:
            session = await store.advance(session_id, nxt)
            if session.ended:  # ended between the step and the read after it
                raise IllegalTransition(session.state, target)
        except IllegalTransition:
            # Someone else moved it meanwhile; re-read and go on from there.
            fresh = await store.get(session_id)
            assert fresh is not None
            if fresh.ended:
                raise
            session = fresh
    return session


class VideoSessions:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self, incident_ref: str, phone_e164: str, handler_id: int, language: str = "en",
        contact_link: str | None = None, phone_line: bool = True,
    ) -> VideoSession:
        ref = validate_new_session(incident_ref, language)
        session_id = secrets.token_hex(8)
        now = time.time()
        await self.db.execute(
            "INSERT INTO video_sessions (id, incident_ref, phone, handler_id, language, state,"
            " created_at, contact_link, phone_line) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (session_id, ref, phone_e164, handler_id, language, SessionState.CREATED.value, now,
             contact_link, int(phone_line)),
        )
        session = await self.get(session_id)
        assert session is not None
        return session

    async def get(self, session_id: str) -> VideoSession | None:
        row = await self.db.fetchone("SELECT * FROM video_sessions WHERE id = ?", (session_id,))
        return VideoSession.from_row(row) if row else None

    async def for_handler(self, handler_id: int, limit: int = 50) -> list[VideoSession]:
        rows = await self.db.fetchall(
            "SELECT * FROM video_sessions WHERE handler_id = ? ORDER BY created_at DESC LIMIT ?",
            (handler_id, limit),
        )
        return [VideoSession.from_row(r) for r in rows]

    async def for_specialist(self, specialist_id: int, limit: int = 50) -> list[VideoSession]:
        rows = await self.db.fetchall(
            "SELECT DISTINCT v.* FROM video_sessions v JOIN specialist_invitations i"
            " ON i.session_id = v.id WHERE i.specialist_id = ?"
            " ORDER BY v.created_at DESC LIMIT ?",
            (specialist_id, limit),
        )
        return [VideoSession.from_row(r) for r in rows]

    async def recent(self, limit: int = 100) -> list[VideoSession]:
        rows = await self.db.fetchall(
            "SELECT * FROM video_sessions ORDER BY created_at DESC LIMIT ?", (limit,)
        )
        return [VideoSession.from_row(r) for r in rows]

    async def earlier_contacts(self, session_id: str) -> list[VideoSession]:
        """Sessions from the same number (by keyed hash) created before this one."""
        rows = await self.db.fetchall(
            "SELECT p.* FROM video_sessions p JOIN video_sessions s"
            " ON p.contact_link = s.contact_link AND p.created_at < s.created_at"
            " WHERE s.id = ? AND s.contact_link IS NOT NULL ORDER BY p.created_at DESC",
            (session_id,),
        )
        return [VideoSession.from_row(r) for r in rows]

    async def advance(
        self, session_id: str, target: SessionState, reason: str | None = None
    ) -> VideoSession:
        """Move one step to `target`, or raise IllegalTransition."""

        def run(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT state FROM video_sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if row is None:
                raise KeyError(session_id)
            current = SessionState(row["state"])
            if target not in TRANSITIONS[current]:
                raise IllegalTransition(current, target)
            conn.execute(
                f"UPDATE video_sessions SET state = ?, {target.value}_at = ?"  # noqa: S608
                + (", end_reason = ?" if target is SessionState.ENDED else "")
                + " WHERE id = ?",
                (target.value, time.time(), *([reason] if target is SessionState.ENDED else []),
                 session_id),
            )

        await self.db.transaction(run)
        session = await self.get(session_id)
        assert session is not None
        return session

    async def reach(self, session_id: str, target: SessionState) -> VideoSession:
        """Walk forward step by step until `target`; a no-op if already there or beyond.

        Used where an event proves earlier steps happened (a redeemed link was opened).
        Never moves an ended session.
        """
        return await walk_forward(self, session_id, target)

    async def forget_phone(self, session_id: str) -> None:
        """Blank the (masked) number kept on the session row, as retention does on purge."""
        await self.db.execute("UPDATE video_sessions SET phone = '' WHERE id = ?", (session_id,))

    async def set_phone_line(self, session_id: str, phone_line: bool) -> None:
        await self.db.execute("UPDATE video_sessions SET phone_line = ? WHERE id = ?",
                              (int(phone_line), session_id))

    async def update_facts(self, session_id: str, facts: Mapping[str, Any]) -> None:
        def run(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT caller_facts FROM video_sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if row is None:
                return
            merged = merge_facts(json.loads(row["caller_facts"] or "{}"), facts)
            conn.execute("UPDATE video_sessions SET caller_facts = ? WHERE id = ?",
                         (json.dumps(merged, separators=(",", ":")), session_id))

        await self.db.transaction(run)


def merge_facts(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged
