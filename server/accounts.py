"""Staff accounts: scrypt password hashes, roles, and sign-in throttling.

Repeated failures on one account slow every further try down (a growing delay) and then lock
the account for a while. The same answer is given for a wrong password, an unknown name and a
locked account, so sign-in cannot be used to find out who works here.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import os
import sqlite3
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from server.db import Database


class StaffRole(StrEnum):
    HANDLER = "handler"
    SPECIALIST = "specialist"
    SUPERVISOR = "supervisor"
    AUDITOR = "auditor"
    ADMIN = "admin"


SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
MAX_DELAY = 8.0


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    salt = os.urandom(16)
    key = Scrypt(salt=salt, length=32, n=n, r=SCRYPT_R, p=SCRYPT_P).derive(password.encode())
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        kdf = Scrypt(
            salt=base64.b64decode(salt), length=32, n=int(n), r=int(r), p=int(p)
        )
        kdf.verify(password.encode(), base64.b64decode(key))
    except (ValueError, InvalidKey):
        return False
    return True


# Verified against when the name is unknown, so that takes as long as a real check.
_DUMMY_HASH = hash_password("not a real password, only for timing")


@dataclass(frozen=True)
class Staff:
    id: int
    username: str
    display_name: str
    role: StaffRole
    available: bool = False

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Staff:
        return cls(
            id=row["id"],
            username=row["username"],
            display_name=row["display_name"],
            role=StaffRole(row["role"]),
            available=bool(row["available"]),
        )


class AccountError(ValueError):
    """A new account or password is refused; the message says why."""


@dataclass(frozen=True)
class SignInResult:
    staff: Staff | None
    delay: float  # seconds the caller must wait before answering
    locked: bool = False


def failure_delay(failures: int) -> float:
    """The pause after the n-th failure in a row: 0.25 s, 0.5 s, 1 s ... up to 8 s."""
    if failures <= 0:
        return 0.0
    # Cap the exponent first: 2 ** n for a large n is too big a float (ERV_LOGIN_MAX_FAILURES
    # has no upper bound).
    return float(min(MAX_DELAY, 0.25 * 2 ** min(failures - 1, 16)))


class StaffAccounts:
    def __init__(self, db: Database, max_failures: int = 5, lock_seconds: int = 900) -> None:
        self.db = db
        self.max_failures = max_failures
        self.lock_seconds = lock_seconds

    async def add(
        self, username: str, display_name: str, role: StaffRole | str, password: str
    ) -> Staff:
        new = check_new_account(username, display_name, role, password)
        password_hash = await asyncio.to_thread(hash_password, password)

        def insert(conn: sqlite3.Connection) -> int:
            try:
                cursor = conn.execute(
                    "INSERT INTO staff (username, display_name, role, password_hash, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (new.username, new.display_name, new.role.value, password_hash, time.time()),
                )
            except sqlite3.IntegrityError as exc:
                raise username_taken(new.username) from exc
            return int(cursor.lastrowid or 0)

        staff_id = await self.db.transaction(insert)
        return Staff(staff_id, new.username, new.display_name, new.role)

    async def set_password(self, username: str, password: str) -> None:
        validate_password(password)
        password_hash = await asyncio.to_thread(hash_password, password)
        changed = await self.db.execute(
            "UPDATE staff SET password_hash = ?, failed_logins = 0, locked_until = 0"
            " WHERE username = ?",
            (password_hash, normalize_username(username)),
        )
        if not changed:
            raise no_such_account(username)

    async def get(self, staff_id: int) -> Staff | None:
        row = await self.db.fetchone(
            "SELECT * FROM staff WHERE id = ? AND disabled = 0", (staff_id,)
        )
        return Staff.from_row(row) if row else None

    async def by_username(self, username: str) -> Staff | None:
        row = await self.db.fetchone(
            "SELECT * FROM staff WHERE username = ? AND disabled = 0",
            (normalize_username(username),),
        )
        return Staff.from_row(row) if row else None

    async def exists(self, username: str) -> bool:
        return await self.by_username(username) is not None

    async def sign_in(self, username: str, password: str, now: float | None = None) -> SignInResult:
        now = time.time() if now is None else now
        if len(password) > MAX_PASSWORD_LENGTH:
            return SignInResult(None, MAX_DELAY)
        row = await self.db.fetchone(
            "SELECT * FROM staff WHERE username = ? AND disabled = 0",
            (normalize_username(username),),
        )
        stored = row["password_hash"] if row else _DUMMY_HASH
        ok = await asyncio.to_thread(check_password, password, stored)
        if row is None:
            return SignInResult(None, failure_delay(1))
        if row["locked_until"] > now:
            return SignInResult(None, MAX_DELAY, locked=True)
        if ok:
            await self.db.execute(
                "UPDATE staff SET failed_logins = 0, locked_until = 0 WHERE id = ?", (row["id"],)
            )
            return SignInResult(Staff.from_row(row), 0.0)

        def record_failure(conn: sqlite3.Connection) -> tuple[int, bool]:
            current = conn.execute(
                "SELECT failed_logins, locked_until FROM staff WHERE id = ?", (row["id"],)
            ).fetchone()
            if current["locked_until"] > now:
                # A parallel try locked the account after `row` was read: keep the lock.
                return self.max_failures, True
            failures = current["failed_logins"] + 1
            lock = failures >= self.max_failures
            conn.execute(
                "UPDATE staff SET failed_logins = ?, locked_until = ? WHERE id = ?",
                (0 if lock else failures, now + self.lock_seconds if lock else 0, row["id"]),
            )
            return failures, lock

        failures, locked = await self.db.transaction(record_failure)
        return SignInResult(None, failure_delay(failures), locked=locked)

    async def set_available(self, staff_id: int, available: bool) -> None:
        await self.db.execute(
            "UPDATE staff SET available = ?, available_since = ? WHERE id = ?",
            (int(available), time.time() if available else 0, staff_id),
        )

    async def available_specialists(self) -> list[Staff]:
        """Available specialists, longest-waiting first."""
        rows = await self.db.fetchall(
            "SELECT * FROM staff WHERE role = ? AND available = 1 AND disabled = 0"
            " ORDER BY available_since, id",
            (StaffRole.SPECIALIST.value,),
        )
        return [Staff.from_row(row) for row in rows]


class StaffAccountStore(Protocol):
    """What the rest of the service uses of an account store (SQLite or Redis)."""

    async def add(
        self, username: str, display_name: str, role: StaffRole | str, password: str
    ) -> Staff: ...

    async def set_password(self, username: str, password: str) -> None: ...

    async def get(self, staff_id: int) -> Staff | None: ...

    async def by_username(self, username: str) -> Staff | None: ...

    async def exists(self, username: str) -> bool: ...

    async def sign_in(
        self, username: str, password: str, now: float | None = None
    ) -> SignInResult: ...

    async def set_available(self, staff_id: int, available: bool) -> None: ...

    async def available_specialists(self) -> list[Staff]: ...


@dataclass(frozen=True)
class NewAccount:
    """A checked new account, as it will be stored (the password is hashed separately)."""

    username: str
    display_name: str
    role: StaffRole


def normalize_username(username: str) -> str:
    return username.strip().lower()


def check_new_account(
    username: str, display_name: str, role: StaffRole | str, password: str
) -> NewAccount:
    """Apply the account rules shared by every store; raise AccountError if one is broken."""
    username = normalize_username(username)
    plain = username.replace(".", "").replace("-", "").replace("_", "")
    if not username or not plain.isascii() or not plain.isalnum():
        raise AccountError("Usernames use letters, digits, '.', '-' and '_' only.")
    if len(username) > 64 or len(display_name) > 120:
        raise AccountError("Username or display name is too long.")
    try:
        role = StaffRole(role)
    except ValueError as exc:
        raise AccountError(f"Unknown role {role!r}.") from exc
    validate_password(password)
    return NewAccount(username, display_name.strip() or username, role)


def username_taken(username: str) -> AccountError:
    return AccountError(f"The username {username!r} is taken.")


def no_such_account(username: str) -> AccountError:
    return AccountError(f"No account {username!r}.")


def validate_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"Passwords need at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError("That password is too long.")


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
