"""SQLite, the embedded default store: WAL, synchronous=FULL, all I/O on one worker thread.

One connection owned by one thread keeps SQLite's locking simple and keeps blocking calls off
the event loop. Writes that must be atomic go through `transaction`, which runs a whole
function on that thread inside BEGIN IMMEDIATE ... COMMIT.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
Params = Sequence[Any] | dict[str, Any]

# Each entry upgrades the schema by one version; never edit an entry once released.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE staff (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        display_name TEXT NOT NULL,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0,
        failed_logins INTEGER NOT NULL DEFAULT 0,
        locked_until REAL NOT NULL DEFAULT 0,
        available INTEGER NOT NULL DEFAULT 0,
        available_since REAL NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE TABLE staff_sessions (
        token_hash TEXT PRIMARY KEY,
        staff_id INTEGER NOT NULL REFERENCES staff(id),
        csrf_token TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE TABLE video_sessions (
        id TEXT PRIMARY KEY,
        incident_ref TEXT NOT NULL,
        phone TEXT NOT NULL,
        handler_id INTEGER NOT NULL REFERENCES staff(id),
        language TEXT NOT NULL DEFAULT 'en',
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        invited_at REAL,
        opened_at REAL,
        joined_at REAL,
        connected_at REAL,
        ended_at REAL,
        end_reason TEXT
    );
    CREATE INDEX video_sessions_handler ON video_sessions(handler_id, created_at);
    CREATE TABLE invites (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES video_sessions(id),
        token_hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        opened_at REAL,
        redeemed_at REAL,
        revoked_at REAL,
        revoke_reason TEXT,
        sms_gateway TEXT,
        sms_message_id TEXT,
        sms_status TEXT NOT NULL DEFAULT 'pending',
        sms_error TEXT
    );
    CREATE INDEX invites_session ON invites(session_id);
    CREATE INDEX invites_sms ON invites(sms_message_id);
    CREATE TABLE credentials (
        token_hash TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES video_sessions(id),
        invite_id TEXT NOT NULL REFERENCES invites(id),
        role TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE TABLE specialist_invitations (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES video_sessions(id),
        specialist_id INTEGER NOT NULL REFERENCES staff(id),
        invited_by INTEGER NOT NULL REFERENCES staff(id),
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        answered_at REAL
    );
    CREATE INDEX specialist_invitations_session ON specialist_invitations(session_id);
    CREATE INDEX specialist_invitations_specialist
        ON specialist_invitations(specialist_id, state);
    """,
    # 2: sessions from the same number are linked by a keyed hash, never by the number.
    """
    ALTER TABLE video_sessions ADD COLUMN contact_link TEXT;
    CREATE INDEX video_sessions_contact ON video_sessions(contact_link, created_at);
    """,
    # 3: whether the caller stays on the 999 phone line, and what the caller's and the
    # handler's pages last reported about the caller's media (server.caller_state).
    """
    ALTER TABLE video_sessions ADD COLUMN phone_line INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE video_sessions ADD COLUMN caller_facts TEXT NOT NULL DEFAULT '{}';
    """,
    # Sign-in throttling by decaying counts (server.throttle; failed_logins and locked_until
    # are no longer used), and account generations: a password change or disable raises it
    # and every sign-in made under an older one is void.
    """
    CREATE TABLE sign_in_throttle (
        key TEXT PRIMARY KEY,
        score REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    ALTER TABLE staff ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE staff_sessions ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    """,
)


class Database:
    """An SQLite file reached only through one worker thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="erv-sqlite")
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self._run(self._open_sync)

    def _open_sync(self) -> None:
        if str(self.path) != ":memory:":
            # Private from the start: SQLite gives its -wal and -shm files the same mode.
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            os.chmod(self.path, 0o600)
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={number}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        def run() -> sqlite3.Row | None:
            row: sqlite3.Row | None = self.conn.execute(sql, params).fetchone()
            return row

        return await self._run(run)

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return await self._run(lambda: self.conn.execute(sql, params).fetchall())

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement in its own transaction; returns the number of rows changed."""
        return await self._run(lambda: self.conn.execute(sql, params).rowcount)

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` atomically on the database thread."""

        def run() -> T:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self._run(run)
