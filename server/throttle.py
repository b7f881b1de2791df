"""Sign-in throttling that a stranger cannot turn against a real user.

Failures are counted under keys: the account name (for browsers without a device cookie), the
client address, and the device cookie (for a browser that signed in as that user before, the
OWASP "device cookie" pattern). Each count decays by half every `half_life` seconds, so
nothing locks for good and nothing needs a clean-up run. A try is refused (429, Retry-After)
while one of its keys is at its limit; a trusted device is judged by its own key only, so a
stranger's guesses from elsewhere never stop it.

Keys are stored as SHA-256 hashes: no client address or typed user name is kept as typed.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
from dataclasses import dataclass
from typing import Protocol

from server.db import Database

KEEP_HALF_LIVES = 20  # a count older than this is worth less than a millionth of a failure


@dataclass(frozen=True)
class ThrottlePolicy:
    account_limit: int = 5  # failures per account name from untrusted browsers
    client_limit: int = 20  # failures per client address (many names from one place)
    device_limit: int = 5  # failures per device cookie
    half_life: float = 600.0  # seconds for every count to halve


def throttle_key(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()


def decayed(score: float, updated_at: float, now: float, half_life: float) -> float:
    if score <= 0:
        return 0.0
    return float(score * 0.5 ** (max(0.0, now - updated_at) / half_life))


def retry_after(score: float, limit: int, half_life: float) -> float:
    """Whole seconds until `score` has decayed to where one more failure stays within the
    limit (0 when a try is allowed now)."""
    allowed = allowed_score(limit)
    if score <= allowed:
        return 0.0
    return float(max(1, math.ceil(half_life * math.log2(score / allowed))))


def allowed_score(limit: int) -> float:
    """The highest count at which one more try is still allowed."""
    return max(limit - 1, 0.5)


class ThrottleStore(Protocol):
    async def scores(self, keys: list[str], now: float) -> list[float]:
        """Each key's decayed count, as of `now`."""

    async def take(
        self, keys: list[str], limits: list[int], now: float
    ) -> tuple[bool, list[float]]:
        """Atomically: if every key is within its limit, count one try on each and return
        (True, the new counts); otherwise count nothing and return (False, the counts). A try is
        counted before it is judged, so tries sent in parallel cannot all slip under a limit."""

    async def give_back(self, keys: list[str], now: float) -> None:
        """Un-count one try on each key (the try succeeded)."""

    async def clear(self, keys: list[str]) -> None: ...


class SqliteThrottle:
    def __init__(self, db: Database, half_life: float) -> None:
        self.db = db
        self.half_life = half_life

    async def scores(self, keys: list[str], now: float) -> list[float]:
        def read(conn: sqlite3.Connection) -> list[float]:
            return [self._score(conn, key, now) for key in keys]

        return await self.db.transaction(read)

    def _score(self, conn: sqlite3.Connection, key: str, now: float) -> float:
        row = conn.execute(
            "SELECT score, updated_at FROM sign_in_throttle WHERE key = ?", (key,)
        ).fetchone()
        return 0.0 if row is None else decayed(row["score"], row["updated_at"], now,
                                               self.half_life)

    def _set(self, conn: sqlite3.Connection, key: str, score: float, now: float) -> None:
        conn.execute(
            "INSERT INTO sign_in_throttle (key, score, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET score = excluded.score,"
            " updated_at = excluded.updated_at",
            (key, score, now),
        )

    async def take(
        self, keys: list[str], limits: list[int], now: float
    ) -> tuple[bool, list[float]]:
        def count(conn: sqlite3.Connection) -> tuple[bool, list[float]]:
            scores = [self._score(conn, key, now) for key in keys]
            if any(score > allowed_score(limit)
                   for score, limit in zip(scores, limits, strict=True)):
                return False, scores
            for key, score in zip(keys, scores, strict=True):
                self._set(conn, key, score + 1, now)
            conn.execute("DELETE FROM sign_in_throttle WHERE updated_at < ?",
                         (now - KEEP_HALF_LIVES * self.half_life,))
            return True, [score + 1 for score in scores]

        return await self.db.transaction(count)

    async def give_back(self, keys: list[str], now: float) -> None:
        def uncount(conn: sqlite3.Connection) -> None:
            for key in keys:
                self._set(conn, key, max(0.0, self._score(conn, key, now) - 1), now)

        await self.db.transaction(uncount)

    async def clear(self, keys: list[str]) -> None:
        def drop(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM sign_in_throttle WHERE key = ?",
                             [(key,) for key in keys])

        await self.db.transaction(drop)
