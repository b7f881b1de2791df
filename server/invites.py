"""Invite links (`/j/<token>`) and the participant credentials they are redeemed for.

A token is 192 random bits, stored only as its SHA-256. Looking at a link (GET) never uses it
up, because SMS apps and link scanners fetch links; only the victim's explicit POST redeems it,
once, for a credential bound to that one session. Sending a new link revokes the old one.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from server.db import Database

TOKEN_BYTES = 24
MAX_TOKEN_LENGTH = 128  # longer input is refused unhashed: no stored token is that long


def secret_digest(token: str) -> str:
    """What is stored instead of a link token or a credential: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


_hash = secret_digest


class LinkProblem(StrEnum):
    """Why a link or credential cannot be used. Values are stable codes."""

    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    USED = "used"
    ENDED = "ended"


# Plain, calm words for the person holding the phone. No jargon, nothing alarming on screen.
VICTIM_MESSAGES: dict[LinkProblem, str] = {
    LinkProblem.UNKNOWN: "This link is not recognised. Please check the message you were sent.",
    LinkProblem.EXPIRED: "This link has timed out. The person you spoke to can send you a new one.",
    LinkProblem.REVOKED: (
        "This link has been replaced. Please use the newest message you were sent."
    ),
    LinkProblem.USED: (
        "This link has already been used. The person you spoke to can send you a new one."
    ),
    LinkProblem.ENDED: "This call has finished. You can close this page.",
}


class LinkRefused(Exception):
    def __init__(self, problem: LinkProblem) -> None:
        super().__init__(problem.value)
        self.problem = problem

    @property
    def victim_message(self) -> str:
        return VICTIM_MESSAGES[self.problem]


@dataclass(frozen=True)
class Invite:
    id: str
    session_id: str
    created_at: float
    expires_at: float
    opened_at: float | None
    redeemed_at: float | None
    revoked_at: float | None
    revoke_reason: str | None
    sms_gateway: str | None
    sms_message_id: str | None
    sms_status: str
    sms_error: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Invite:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    def link_state(self, now: float | None = None) -> str:
        """One word for the console: sent, opened, redeemed, revoked or expired."""
        now = time.time() if now is None else now
        if self.redeemed_at:
            return "redeemed"
        if self.revoked_at:
            return "revoked"
        if self.expires_at <= now:
            return "expired"
        if self.opened_at:
            return "opened"
        return "sent"


@dataclass(frozen=True)
class Credential:
    """What a redeemed link gives the victim's tab: a bearer secret for `hello`."""

    token: str
    session_id: str
    role: str
    expires_at: float


def check_usable(invite: Invite, now: float) -> None:
    """Raise the LinkRefused the link's holder should see, or return if it can be used."""
    if invite.redeemed_at is not None:
        raise LinkRefused(LinkProblem.USED)
    if invite.revoked_at is not None:
        raise LinkRefused(
            LinkProblem.ENDED if invite.revoke_reason == "ended" else LinkProblem.REVOKED
        )
    if invite.expires_at <= now:
        raise LinkRefused(LinkProblem.EXPIRED)


class InviteStore(Protocol):
    """What the rest of the service uses of an invite link store (SQLite or Redis)."""

    async def issue(self, session_id: str) -> tuple[Invite, str]: ...

    async def get(self, invite_id: str) -> Invite | None: ...

    async def latest(self, session_id: str) -> Invite | None: ...

    async def record_sms(
        self, invite_id: str, gateway: str, message_id: str | None, status: str,
        error: str | None = None,
    ) -> None: ...

    async def record_delivery(self, message_id: str, status: str) -> Invite | None: ...

    async def look(self, token: str, now: float | None = None) -> Invite: ...

    async def redeem(self, token: str, now: float | None = None) -> tuple[Invite, Credential]:
        ...

    async def revoke(self, session_id: str, reason: str) -> int: ...

    async def check_credential(self, token: str, now: float | None = None) -> Credential: ...

    async def credential_session(self, token: str) -> str | None:
        """The session a credential (live or ended) was for, if it is known."""

    async def end_credentials(self, session_id: str, keep: frozenset[str] = frozenset()) -> int:
        """End the session's live credentials, but those whose digest is in `keep`; how many
        ended. A new or revoked link does this (decision 37)."""

    async def end_credential(self, digest: str) -> bool:
        """End one credential (by digest): its device was refused at the door."""


class InviteBook:
    def __init__(self, db: Database, ttl: int, credential_ttl: int) -> None:
        self.db = db
        self.ttl = ttl
        self.credential_ttl = credential_ttl

    async def issue(self, session_id: str) -> tuple[Invite, str]:
        """A new link for the session; any earlier live link is revoked as replaced."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        invite_id = secrets.token_hex(8)
        now = time.time()

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE invites SET revoked_at = ?, revoke_reason = 'replaced'"
                " WHERE session_id = ? AND revoked_at IS NULL AND redeemed_at IS NULL",
                (now, session_id),
            )
            conn.execute(
                "INSERT INTO invites (id, session_id, token_hash, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (invite_id, session_id, _hash(token), now, now + self.ttl),
            )

        await self.db.transaction(run)
        invite = await self.get(invite_id)
        assert invite is not None
        return invite, token

    async def get(self, invite_id: str) -> Invite | None:
        row = await self.db.fetchone("SELECT * FROM invites WHERE id = ?", (invite_id,))
        return Invite.from_row(row) if row else None

    async def latest(self, session_id: str) -> Invite | None:
        row = await self.db.fetchone(
            "SELECT * FROM invites WHERE session_id = ? ORDER BY created_at DESC, rowid DESC"
            " LIMIT 1",
            (session_id,),
        )
        return Invite.from_row(row) if row else None

    async def record_sms(
        self, invite_id: str, gateway: str, message_id: str | None, status: str,
        error: str | None = None,
    ) -> None:
        await self.db.execute(
            "UPDATE invites SET sms_gateway = ?, sms_message_id = ?, sms_status = ?,"
            " sms_error = ? WHERE id = ?",
            (gateway, message_id, status, error, invite_id),
        )

    async def record_delivery(self, message_id: str, status: str) -> Invite | None:
        """A provider's delivery report; returns the invite it concerns, if any."""
        row = await self.db.fetchone(
            "SELECT * FROM invites WHERE sms_message_id = ?", (message_id,)
        )
        if row is None:
            return None
        await self.db.execute(
            "UPDATE invites SET sms_status = ? WHERE id = ?", (status, row["id"])
        )
        return await self.get(row["id"])

    async def look(self, token: str, now: float | None = None) -> Invite:
        """The GET of a link: checks it and notes the first opening, never redeems."""
        now = time.time() if now is None else now
        invite = await self._by_token(token)
        self._check_usable(invite, now)
        if invite.opened_at is None:
            await self.db.execute(
                "UPDATE invites SET opened_at = ? WHERE id = ? AND opened_at IS NULL",
                (now, invite.id),
            )
            return await self._by_token(token)
        return invite

    async def redeem(self, token: str, now: float | None = None) -> tuple[Invite, Credential]:
        """The victim's tap: uses the link up, once, for a session-bound credential."""
        now = time.time() if now is None else now
        token_hash = _hash(token) if 0 < len(token) <= MAX_TOKEN_LENGTH else ""
        secret = secrets.token_urlsafe(32)
        expires = now + self.credential_ttl

        def run(conn: sqlite3.Connection) -> str | None:
            cursor = conn.execute(
                "UPDATE invites SET redeemed_at = ?, opened_at = COALESCE(opened_at, ?)"
                " WHERE token_hash = ? AND redeemed_at IS NULL AND revoked_at IS NULL"
                " AND expires_at > ?",
                (now, now, token_hash, now),
            )
            if cursor.rowcount != 1:
                return None
            row = conn.execute(
                "SELECT id, session_id FROM invites WHERE token_hash = ?", (token_hash,)
            ).fetchone()
            conn.execute(
                "INSERT INTO credentials (token_hash, session_id, invite_id, role, created_at,"
                " expires_at) VALUES (?, ?, ?, 'victim', ?, ?)",
                (_hash(secret), row["session_id"], row["id"], now, expires),
            )
            return str(row["id"])

        invite_id = await self.db.transaction(run)
        if invite_id is None:
            # Find out why, for the victim's page; the token was not used either way.
            self._check_usable(await self._by_token(token), now)
            raise LinkRefused(LinkProblem.USED)
        redeemed = await self.get(invite_id)
        assert redeemed is not None
        return redeemed, Credential(secret, redeemed.session_id, "victim", expires)

    async def revoke(self, session_id: str, reason: str) -> int:
        """Revoke the live, unused link(s); when the session ended, its credentials too.

        A handler revoking a link stops it being redeemed; a caller already in the call
        stays in it (the handler ends the session to stop that)."""
        now = time.time()

        def run(conn: sqlite3.Connection) -> int:
            changed = conn.execute(
                "UPDATE invites SET revoked_at = ?, revoke_reason = ?"
                " WHERE session_id = ? AND revoked_at IS NULL AND redeemed_at IS NULL",
                (now, reason, session_id),
            ).rowcount
            if reason == "ended":
                conn.execute(
                    "UPDATE credentials SET revoked_at = ? WHERE session_id = ?"
                    " AND revoked_at IS NULL",
                    (now, session_id),
                )
            return changed

        return await self.db.transaction(run)

    async def check_credential(self, token: str, now: float | None = None) -> Credential:
        now = time.time() if now is None else now
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise LinkRefused(LinkProblem.UNKNOWN)
        row = await self.db.fetchone(
            "SELECT * FROM credentials WHERE token_hash = ?", (_hash(token),)
        )
        if row is None:
            raise LinkRefused(LinkProblem.UNKNOWN)
        if row["revoked_at"] is not None:
            raise LinkRefused(LinkProblem.ENDED)
        if row["expires_at"] <= now:
            raise LinkRefused(LinkProblem.EXPIRED)
        return Credential(token, row["session_id"], row["role"], row["expires_at"])

    async def credential_session(self, token: str) -> str | None:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        row = await self.db.fetchone(
            "SELECT session_id FROM credentials WHERE token_hash = ?", (_hash(token),)
        )
        return None if row is None else str(row["session_id"])

    async def end_credentials(self, session_id: str, keep: frozenset[str] = frozenset()) -> int:
        now = time.time()

        def run(conn: sqlite3.Connection) -> int:
            live = [row["token_hash"] for row in conn.execute(
                "SELECT token_hash FROM credentials WHERE session_id = ? AND revoked_at IS NULL",
                (session_id,),
            )]
            ended = [(now, digest) for digest in live if digest not in keep]
            conn.executemany(
                "UPDATE credentials SET revoked_at = ? WHERE token_hash = ?", ended
            )
            return len(ended)

        return await self.db.transaction(run)

    async def end_credential(self, digest: str) -> bool:
        return bool(await self.db.execute(
            "UPDATE credentials SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL",
            (time.time(), digest),
        ))

    async def _by_token(self, token: str) -> Invite:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise LinkRefused(LinkProblem.UNKNOWN)
        row = await self.db.fetchone(
            "SELECT * FROM invites WHERE token_hash = ?", (_hash(token),)
        )
        if row is None:
            raise LinkRefused(LinkProblem.UNKNOWN)
        return Invite.from_row(row)

    @staticmethod
    def _check_usable(invite: Invite, now: float) -> None:
        check_usable(invite, now)
