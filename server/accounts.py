"""Staff accounts: scrypt password hashes, roles, sign-in throttling and cutting an account off.

Sign-in is throttled by decaying failure counts (server.throttle), never by a lock a stranger
could set off: a browser that signed in as the user before (a device cookie) is judged only by
its own failures. The same answer, after the same work (one scrypt run), is given for a wrong
password, an unknown name and a throttled name, so sign-in cannot be used to find out who
works here. A password change or a disable raises the account's `generation`: every sign-in
made before it stops working, and the running service closes that account's sockets.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import os
import sqlite3
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from server.db import Database
from server.throttle import (
    SqliteThrottle,
    ThrottlePolicy,
    ThrottleStore,
    retry_after,
    throttle_key,
)


class StaffRole(StrEnum):
    HANDLER = "handler"
    SPECIALIST = "specialist"
    SUPERVISOR = "supervisor"
    AUDITOR = "auditor"
    ADMIN = "admin"


# OWASP's password storage guidance (2023): scrypt N=2^17, r=8, p=1 (128 MiB per hash).
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
KDF_SLOTS = 2  # hashes at once per store: each holds 128 * r * N bytes while it runs
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
MAX_DELAY = 8.0


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(salt: bytes, n: int, r: int = SCRYPT_R, p: int = SCRYPT_P) -> Scrypt:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p)


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    salt = os.urandom(16)
    key = _scrypt(salt, n).derive(password.encode())
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        _scrypt(base64.b64decode(salt), int(n), int(r), int(p)).verify(
            password.encode(), base64.b64decode(key))
    except (ValueError, InvalidKey):
        return False
    return True


def weaker_than(stored: str, n: int) -> bool:
    """Whether a stored hash costs less than the configured parameters (rehash it)."""
    try:
        _, stored_n, r, p, _, _ = stored.split("$")
        return (int(stored_n), int(r), int(p)) != (n, SCRYPT_R, SCRYPT_P) and int(stored_n) <= n
    except ValueError:
        return False


@dataclass(frozen=True)
class Staff:
    id: int
    username: str
    display_name: str
    role: StaffRole
    available: bool = False
    # Raised by a password change or a disable: sign-ins made under an older one are void.
    generation: int = field(default=0, compare=False)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Staff:
        return cls(
            id=row["id"],
            username=row["username"],
            display_name=row["display_name"],
            role=StaffRole(row["role"]),
            available=bool(row["available"]),
            generation=int(row["generation"]),
        )


class AccountError(ValueError):
    """A new account or password is refused; the message says why."""


@dataclass(frozen=True)
class SignInResult:
    staff: Staff | None
    delay: float  # seconds the caller must wait before answering
    retry_after: float = 0.0  # > 0: throttled, answer 429 with Retry-After

    @property
    def throttled(self) -> bool:
        return self.retry_after > 0


def failure_delay(failures: float) -> float:
    """The pause after the n-th recent failure: 0.25 s, 0.5 s, 1 s ... up to 8 s."""
    failures = round(failures)
    if failures <= 0:
        return 0.0
    # Cap the exponent first: 2 ** n for a large n is too big a float.
    return float(min(MAX_DELAY, 0.25 * 2 ** min(failures - 1, 16)))


class SignInRules:
    """The sign-in decision both stores share; each supplies the throttle and the look-ups."""

    policy: ThrottlePolicy
    throttle: ThrottleStore
    scrypt_n: int
    kdf_runs: int  # how many key derivations sign-in has run (one per try, whatever the name)

    def _init_rules(self, policy: ThrottlePolicy | None, scrypt_n: int) -> None:
        self.policy = policy or ThrottlePolicy()
        self.scrypt_n = scrypt_n
        self.kdf_runs = 0
        self._dummy: str | None = None
        self._slots: asyncio.Semaphore | None = None

    async def _credentials(self, username: str) -> tuple[Staff, str] | None:
        """The active account of that (normalized) name and its stored hash."""
        raise NotImplementedError

    async def _store_hash(self, staff_id: int, old: str, new: str) -> None:
        """Replace the hash, unless it changed meanwhile (a password change wins)."""
        raise NotImplementedError

    @property
    def dummy_hash(self) -> str:
        """Verified against for unknown names, at the configured cost, so they take as long."""
        if self._dummy is None:
            self._dummy = hash_password("not a real password, only for timing", n=self.scrypt_n)
        return self._dummy

    async def _kdf(self, fn: object, *args: str) -> object:
        if self._slots is None:
            self._slots = asyncio.Semaphore(KDF_SLOTS)
        async with self._slots:
            return await asyncio.to_thread(fn, *args)  # type: ignore[arg-type]

    async def hash_new(self, password: str) -> str:
        return str(await self._kdf(self._hash, password))

    def _hash(self, password: str) -> str:
        return hash_password(password, n=self.scrypt_n)

    async def sign_in(
        self, username: str, password: str, now: float | None = None, *,
        client: str = "", device: str = "",
    ) -> SignInResult:
        """`device` is the verified device-cookie id of this browser for this user, if any."""
        now = time.time() if now is None else now
        if len(password) > MAX_PASSWORD_LENGTH:
            return SignInResult(None, MAX_DELAY)
        name = normalize_username(username)
        policy = self.policy
        account_key = throttle_key("account", name)
        client_key = throttle_key("client", client)
        device_key = throttle_key("device", f"{name}:{device}")
        # Each try is counted before it is judged (take), so tries sent in parallel cannot
        # all slip under a limit; a success gives its count back.
        taken = False
        if device:
            keys, limits = [device_key], [policy.device_limit]
            taken, scores = await self.throttle.take(keys, limits, now)
        if not taken:
            # No device cookie, or that device has spent its own allowance: untrusted.
            keys = [account_key, client_key]
            limits = [policy.account_limit, policy.client_limit]
            taken, scores = await self.throttle.take(keys, limits, now)
            wait = retry_after(scores[1], policy.client_limit, policy.half_life)
            if not taken and wait:
                # About the address, not the name: refused before any work is spent on it.
                return SignInResult(None, 0.0, wait)
        found = await self._credentials(name)
        stored = found[1] if found else self.dummy_hash
        self.kdf_runs += 1
        ok = bool(await self._kdf(check_password, password, stored))
        if not taken:
            # The same work was done whatever the name; a right password is refused too.
            return SignInResult(None, 0.0, retry_after(scores[0], limits[0], policy.half_life))
        if found is not None and ok:
            staff, old = found
            await self.throttle.clear(keys[:1])
            await self.throttle.give_back(keys[1:], now)
            if weaker_than(old, self.scrypt_n):
                await self._store_hash(staff.id, old, await self.hash_new(password))
            return SignInResult(staff, 0.0)
        return SignInResult(None, failure_delay(scores[0]))

    async def _clear_account_throttle(self, username: str) -> None:
        await self.throttle.clear([throttle_key("account", normalize_username(username))])


_CUT_OFFS = {
    "password": "UPDATE staff SET password_hash = ?, generation = generation + 1 WHERE id = ?",
    "disable": "UPDATE staff SET disabled = 1, available = 0, generation = generation + 1"
               " WHERE id = ?",
}


class StaffAccounts(SignInRules):
    def __init__(self, db: Database, policy: ThrottlePolicy | None = None,
                 scrypt_n: int = SCRYPT_N) -> None:
        self.db = db
        self._init_rules(policy, scrypt_n)
        self.throttle = SqliteThrottle(db, self.policy.half_life)

    async def add(
        self, username: str, display_name: str, role: StaffRole | str, password: str
    ) -> Staff:
        new = check_new_account(username, display_name, role, password)
        password_hash = await self.hash_new(password)

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

    async def _cut_off(self, username: str, change: str, params: tuple[object, ...]) -> None:
        """Update the account, raise its generation and drop its sign-ins, in one transaction."""

        def run(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT id FROM staff WHERE username = ?",
                               (normalize_username(username),)).fetchone()
            if row is None:
                raise no_such_account(username)
            conn.execute(_CUT_OFFS[change], (*params, row["id"]))
            conn.execute("DELETE FROM staff_sessions WHERE staff_id = ?", (row["id"],))

        await self.db.transaction(run)

    async def set_password(self, username: str, password: str) -> None:
        validate_password(password)
        password_hash = await self.hash_new(password)
        await self._cut_off(username, "password", (password_hash,))
        await self._clear_account_throttle(username)

    async def set_disabled(self, username: str, disabled: bool) -> None:
        if disabled:
            await self._cut_off(username, "disable", ())
            return
        changed = await self.db.execute("UPDATE staff SET disabled = 0 WHERE username = ?",
                                        (normalize_username(username),))
        if not changed:
            raise no_such_account(username)

    async def unlock(self, username: str) -> None:
        row = await self.db.fetchone("SELECT id FROM staff WHERE username = ?",
                                     (normalize_username(username),))
        if row is None:
            raise no_such_account(username)
        await self._clear_account_throttle(username)

    async def generations(self) -> dict[int, int]:
        rows = await self.db.fetchall("SELECT id, generation FROM staff")
        return {int(row["id"]): int(row["generation"]) for row in rows}

    async def _credentials(self, username: str) -> tuple[Staff, str] | None:
        row = await self.db.fetchone(
            "SELECT * FROM staff WHERE username = ? AND disabled = 0", (username,))
        return None if row is None else (Staff.from_row(row), str(row["password_hash"]))

    async def _store_hash(self, staff_id: int, old: str, new: str) -> None:
        await self.db.execute(
            "UPDATE staff SET password_hash = ? WHERE id = ? AND password_hash = ?",
            (new, staff_id, old))

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

    async def set_password(self, username: str, password: str) -> None:
        """Change the password and end every sign-in of the account."""

    async def set_disabled(self, username: str, disabled: bool) -> None:
        """Disable (ending every sign-in) or enable an account."""

    async def unlock(self, username: str) -> None:
        """Clear the account's sign-in throttle."""

    async def generations(self) -> dict[int, int]:
        """Every account's generation, to notice cut-offs made by another process."""

    async def get(self, staff_id: int) -> Staff | None: ...

    async def by_username(self, username: str) -> Staff | None: ...

    async def exists(self, username: str) -> bool: ...

    async def sign_in(
        self, username: str, password: str, now: float | None = None, *,
        client: str = "", device: str = "",
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
