"""A real SQLite Database in a temporary directory, for unit tests of the stores."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from server.db import Database

DB_NAME = "erv.sqlite3"


@asynccontextmanager
async def temporary_database(directory: Path) -> AsyncIterator[Database]:
    """Open a fresh, migrated database under `directory`; close it afterwards."""
    db = Database(directory / DB_NAME)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


async def insert_staff(db: Database, username: str = "hannah", role: str = "handler") -> int:
    """A staff row without hashing a password, for stores that only need a staff id."""

    def run(conn: sqlite3.Connection) -> int:
        cursor = conn.execute(
            "INSERT INTO staff (username, display_name, role, password_hash, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (username, username.title(), role, "unusable", time.time()),
        )
        return int(cursor.lastrowid or 0)

    return await db.transaction(run)


def database_bytes(directory: Path) -> bytes:
    """Everything SQLite has written for the database: main file, WAL and shared memory."""
    return b"".join(
        path.read_bytes() for path in sorted(directory.glob(DB_NAME + "*")) if path.is_file()
    )
