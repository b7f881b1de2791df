"""Staff accounts and staff sign-in sessions kept in Redis, for several server nodes at once.

The same rules and answers as the SQLite stores (server.accounts, server.auth); only the place
the data lives differs. Keys, after the prefix (`erv:` by default):

    staff:next_id          counter giving each new account its integer id
    staff:usernames        hash: lower-cased username -> id (a disabled account keeps its name)
    staff:<id>             hash: username, display_name, role, password_hash, disabled,
                           failed_logins, locked_until, available, available_since, created_at
    staff:available        set of the ids that said they are available (any role)
    staff_session:<sha256> hash: staff_id, csrf_token, created_at, expires_at; Redis TTL = ttl

Adding an account, counting a failed sign-in and changing availability are Lua scripts, so two
nodes can never both take a username, and a parallel wrong guess can never undo a lock.
Timestamps are written as Python's `repr` of the float (read back exactly); Lua only compares
them, never formats them.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import redis.asyncio as aioredis

from server import accounts as rules
from server.accounts import (
    Staff,
    StaffAccountStore,
    StaffRole,
    check_new_account,
    check_password,
    failure_delay,
    hash_password,
    no_such_account,
    normalize_username,
    username_taken,
    validate_password,
)
from server.auth import StaffSession, token_hash

Fields = dict[str, str]

# KEYS: usernames, next_id. ARGV: username, staff key prefix, display name, role, password
# hash, created_at. The account's own key is built here from the new id (single Redis only).
_ADD = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
local id = redis.call('INCR', KEYS[2])
redis.call('HSET', ARGV[2] .. id,
  'username', ARGV[1], 'display_name', ARGV[3], 'role', ARGV[4], 'password_hash', ARGV[5],
  'disabled', '0', 'failed_logins', '0', 'locked_until', '0', 'available', '0',
  'available_since', '0', 'created_at', ARGV[6])
redis.call('HSET', KEYS[1], ARGV[1], id)
return id
"""

# KEYS: usernames. ARGV: username, staff key prefix, password hash.
_CHANGE_HASH_LUA = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then return 0 end
redis.call('HSET', ARGV[2] .. id,
  'password_hash', ARGV[3], 'failed_logins', '0', 'locked_until', '0')
return 1
"""

# KEYS: the account. ARGV: now, max_failures, the lock's end (now + lock_seconds).
# Returns {failures, locked}. As SQLite's record_failure: a lock already in force is kept.
_RECORD_FAILURE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {1, 0} end
local locked_until = tonumber(redis.call('HGET', KEYS[1], 'locked_until')) or 0
if locked_until > tonumber(ARGV[1]) then return {tonumber(ARGV[2]), 1} end
local failures = (tonumber(redis.call('HGET', KEYS[1], 'failed_logins')) or 0) + 1
if failures >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'failed_logins', '0', 'locked_until', ARGV[3])
  return {failures, 1}
end
redis.call('HSET', KEYS[1], 'failed_logins', tostring(failures), 'locked_until', '0')
return {failures, 0}
"""

# KEYS: the account. Clears the failure record of an account that exists (never creates one).
_RESET_FAILURES = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'failed_logins', '0', 'locked_until', '0')
return 1
"""

# KEYS: the account, the available set. ARGV: id, '1' or '0', available_since.
_SET_AVAILABLE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'available', ARGV[2], 'available_since', ARGV[3])
if ARGV[2] == '1' then
  redis.call('SADD', KEYS[2], ARGV[1])
else
  redis.call('SREM', KEYS[2], ARGV[1])
end
return 1
"""


def _decode(raw: dict[bytes | str, bytes | str]) -> Fields:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }


def _staff(staff_id: int, fields: Fields) -> Staff:
    return Staff(
        id=staff_id,
        username=fields["username"],
        display_name=fields["display_name"],
        role=StaffRole(fields["role"]),
        available=fields.get("available") == "1",
    )


def _active(fields: Fields) -> bool:
    return bool(fields) and fields.get("disabled", "0") == "0"


class RedisStaffAccounts:
    """`StaffAccounts` in Redis: same methods, answers, errors and throttling."""

    def __init__(
        self,
        redis: aioredis.Redis,
        max_failures: int = 5,
        lock_seconds: int = 900,
        prefix: str = "erv:",
    ) -> None:
        self.redis = redis
        self.max_failures = max_failures
        self.lock_seconds = lock_seconds
        self.prefix = prefix
        self._usernames = f"{prefix}staff:usernames"
        self._next_id = f"{prefix}staff:next_id"
        self._available = f"{prefix}staff:available"
        self._add = redis.register_script(_ADD)
        self._set_password = redis.register_script(_CHANGE_HASH_LUA)
        self._record_failure = redis.register_script(_RECORD_FAILURE)
        self._reset_failures = redis.register_script(_RESET_FAILURES)
        self._set_available = redis.register_script(_SET_AVAILABLE)

    def _key(self, staff_id: int) -> str:
        return f"{self.prefix}staff:{staff_id}"

    async def _fields(self, staff_id: int) -> Fields:
        return _decode(await self.redis.hgetall(self._key(staff_id)))

    async def _id_of(self, username: str) -> int | None:
        raw = await self.redis.hget(self._usernames, normalize_username(username))
        return None if raw is None else int(raw)

    async def add(
        self, username: str, display_name: str, role: StaffRole | str, password: str
    ) -> Staff:
        new = check_new_account(username, display_name, role, password)
        password_hash = await asyncio.to_thread(hash_password, password)
        staff_id = int(
            await self._add(
                keys=[self._usernames, self._next_id],
                args=[new.username, f"{self.prefix}staff:", new.display_name, new.role.value,
                      password_hash, repr(time.time())],
            )
        )
        if staff_id == 0:
            raise username_taken(new.username)
        return Staff(staff_id, new.username, new.display_name, new.role)

    async def set_password(self, username: str, password: str) -> None:
        validate_password(password)
        password_hash = await asyncio.to_thread(hash_password, password)
        changed = await self._set_password(
            keys=[self._usernames],
            args=[normalize_username(username), f"{self.prefix}staff:", password_hash],
        )
        if not changed:
            raise no_such_account(username)

    async def get(self, staff_id: int) -> Staff | None:
        fields = await self._fields(staff_id)
        return _staff(staff_id, fields) if _active(fields) else None

    async def by_username(self, username: str) -> Staff | None:
        staff_id = await self._id_of(username)
        return None if staff_id is None else await self.get(staff_id)

    async def exists(self, username: str) -> bool:
        return await self.by_username(username) is not None

    async def sign_in(
        self, username: str, password: str, now: float | None = None
    ) -> rules.SignInResult:
        now = time.time() if now is None else now
        if len(password) > rules.MAX_PASSWORD_LENGTH:
            return rules.SignInResult(None, rules.MAX_DELAY)
        staff_id = await self._id_of(username)
        fields = await self._fields(staff_id) if staff_id is not None else {}
        if staff_id is None or not _active(fields):
            # Verified all the same, so an unknown name takes as long as a wrong password.
            await asyncio.to_thread(check_password, password, rules._DUMMY_HASH)
            return rules.SignInResult(None, failure_delay(1))
        ok = await asyncio.to_thread(check_password, password, fields["password_hash"])
        if float(fields.get("locked_until", "0")) > now:
            return rules.SignInResult(None, rules.MAX_DELAY, locked=True)
        if ok:
            await self._reset_failures(keys=[self._key(staff_id)])
            return rules.SignInResult(_staff(staff_id, fields), 0.0)
        failures, locked = await self._record_failure(
            keys=[self._key(staff_id)],
            args=[repr(now), self.max_failures, repr(now + self.lock_seconds)],
        )
        return rules.SignInResult(None, failure_delay(int(failures)), locked=bool(locked))

    async def set_available(self, staff_id: int, available: bool) -> None:
        await self._set_available(
            keys=[self._key(staff_id), self._available],
            args=[staff_id, "1" if available else "0", repr(time.time()) if available else "0"],
        )

    async def available_specialists(self) -> list[Staff]:
        """Available specialists, longest-waiting first (then by id, as SQLite orders them)."""
        ids = sorted(int(raw) for raw in await self.redis.smembers(self._available))
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for staff_id in ids:
                pipe.hgetall(self._key(staff_id))
            rows = [_decode(raw) for raw in await pipe.execute()]
        waiting = [
            (float(fields["available_since"]), staff_id, _staff(staff_id, fields))
            for staff_id, fields in zip(ids, rows, strict=True)
            if _active(fields)
            and fields["role"] == StaffRole.SPECIALIST.value
            and fields["available"] == "1"
        ]
        waiting.sort(key=lambda item: (item[0], item[1]))
        return [staff for _, _, staff in waiting]


class RedisStaffSessions:
    """`StaffSessions` in Redis: the cookie token's hash only, gone at expires_at and by TTL."""

    def __init__(
        self, redis: aioredis.Redis, accounts: StaffAccountStore, ttl: int, prefix: str = "erv:"
    ) -> None:
        self.redis = redis
        self.accounts = accounts
        self.ttl = ttl
        self.prefix = prefix

    def _key(self, token: str) -> str:
        return f"{self.prefix}staff_session:{token_hash(token)}"

    async def create(self, staff: Staff) -> tuple[str, StaffSession]:
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = time.time()
        key = self._key(token)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={
                "staff_id": str(staff.id),
                "csrf_token": csrf,
                "created_at": repr(now),
                "expires_at": repr(now + self.ttl),
            })
            pipe.expire(key, max(1, self.ttl))
            await pipe.execute()
        return token, StaffSession(staff, csrf)

    async def lookup(self, token: str) -> StaffSession | None:
        if not token or len(token) > 128:
            return None
        staff_id, csrf, expires_at = await self.redis.hmget(
            self._key(token), ["staff_id", "csrf_token", "expires_at"]
        )
        if staff_id is None or csrf is None or expires_at is None:
            return None
        if float(expires_at) < time.time():
            return None
        staff = await self.accounts.get(int(staff_id))
        if staff is None:
            return None
        return StaffSession(staff, csrf.decode() if isinstance(csrf, bytes) else csrf)

    async def end(self, token: str) -> None:
        await self.redis.delete(self._key(token))
