"""Staff accounts and staff sign-in sessions kept in Redis, for several server nodes at once.

The same rules and answers as the SQLite stores (server.accounts, server.auth); only the place
the data lives differs. Keys, after the prefix (`erv:` by default):

    staff:next_id          counter giving each new account its integer id
    staff:usernames        hash: lower-cased username -> id (a disabled account keeps its name)
    staff:<id>             hash: username, display_name, role, password_hash, disabled,
                           generation, available, available_since, created_at
    staff:generations      hash: id -> generation (what every node watches for cut-offs)
    staff:available        set of the ids that said they are available (any role)
    staff_session:<sha256> hash: staff_id, csrf_token, created_at, expires_at, generation;
                           Redis TTL = ttl
    throttle:<sha256>      sign-in failure counts (server.redis_backend.throttle)

Adding an account, a password change or disable (which raise the generation) and changing
availability are Lua scripts, so two nodes can never both take a username. Timestamps are
written as Python's `repr` of the float (read back exactly); Lua only compares them, never
formats them.
"""

from __future__ import annotations

import secrets
import time

import redis.asyncio as aioredis

from server.accounts import (
    SCRYPT_N,
    SignInRules,
    Staff,
    StaffAccountStore,
    StaffRole,
    check_new_account,
    no_such_account,
    normalize_username,
    username_taken,
    validate_password,
)
from server.auth import StaffSession, token_hash
from server.redis_backend.throttle import RedisThrottle
from server.throttle import ThrottlePolicy

Fields = dict[str, str]

# KEYS: usernames, next_id, generations. ARGV: username, staff key prefix, display name, role,
# password hash, created_at. The account's own key is built here from the new id (single
# Redis only).
_ADD = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
local id = redis.call('INCR', KEYS[2])
redis.call('HSET', ARGV[2] .. id,
  'username', ARGV[1], 'display_name', ARGV[3], 'role', ARGV[4], 'password_hash', ARGV[5],
  'disabled', '0', 'generation', '0', 'available', '0', 'available_since', '0',
  'created_at', ARGV[6])
redis.call('HSET', KEYS[1], ARGV[1], id)
redis.call('HSET', KEYS[3], id, '0')
return id
"""

# KEYS: usernames, generations, available set. ARGV: username, staff key prefix, what
# ('password' or 'disable'), the new password hash. Raises the generation; returns the id or 0.
_CUT_OFF = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then return 0 end
local key = ARGV[2] .. id
if ARGV[3] == 'password' then
  redis.call('HSET', key, 'password_hash', ARGV[4])
else
  redis.call('HSET', key, 'disabled', '1', 'available', '0')
  redis.call('SREM', KEYS[3], id)
end
local generation = redis.call('HINCRBY', key, 'generation', 1)
redis.call('HSET', KEYS[2], id, generation)
return tonumber(id)
"""

# KEYS: usernames. ARGV: username, staff key prefix.
_ENABLE = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then return 0 end
redis.call('HSET', ARGV[2] .. id, 'disabled', '0')
return 1
"""

# KEYS: the account. ARGV: the hash read at sign-in, its stronger replacement.
_REHASH = """
if redis.call('HGET', KEYS[1], 'password_hash') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'password_hash', ARGV[2])
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
        generation=int(fields.get("generation", "0")),
    )


def _active(fields: Fields) -> bool:
    return bool(fields) and fields.get("disabled", "0") == "0"


class RedisStaffAccounts(SignInRules):
    """`StaffAccounts` in Redis: same methods, answers, errors and throttling."""

    def __init__(
        self,
        redis: aioredis.Redis,
        policy: ThrottlePolicy | None = None,
        scrypt_n: int = SCRYPT_N,
        prefix: str = "erv:",
    ) -> None:
        self.redis = redis
        self._init_rules(policy, scrypt_n)
        self.throttle = RedisThrottle(redis, self.policy.half_life, prefix=prefix)
        self.prefix = prefix
        self._usernames = f"{prefix}staff:usernames"
        self._next_id = f"{prefix}staff:next_id"
        self._generations = f"{prefix}staff:generations"
        self._available = f"{prefix}staff:available"
        self._add = redis.register_script(_ADD)
        self._cut = redis.register_script(_CUT_OFF)
        self._enable = redis.register_script(_ENABLE)
        self._rehash = redis.register_script(_REHASH)
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
        password_hash = await self.hash_new(password)
        staff_id = int(
            await self._add(
                keys=[self._usernames, self._next_id, self._generations],
                args=[new.username, f"{self.prefix}staff:", new.display_name, new.role.value,
                      password_hash, repr(time.time())],
            )
        )
        if staff_id == 0:
            raise username_taken(new.username)
        return Staff(staff_id, new.username, new.display_name, new.role)

    async def _cut_off(self, username: str, what: str, password_hash: str = "") -> None:
        changed = await self._cut(
            keys=[self._usernames, self._generations, self._available],
            args=[normalize_username(username), f"{self.prefix}staff:", what, password_hash],
        )
        if not changed:
            raise no_such_account(username)

    async def set_password(self, username: str, password: str) -> None:
        validate_password(password)
        await self._cut_off(username, "password", await self.hash_new(password))
        await self._clear_account_throttle(username)

    async def set_disabled(self, username: str, disabled: bool) -> None:
        if disabled:
            await self._cut_off(username, "disable")
            return
        changed = await self._enable(keys=[self._usernames],
                                     args=[normalize_username(username), f"{self.prefix}staff:"])
        if not changed:
            raise no_such_account(username)

    async def unlock(self, username: str) -> None:
        if await self._id_of(username) is None:
            raise no_such_account(username)
        await self._clear_account_throttle(username)

    async def generations(self) -> dict[int, int]:
        raw = await self.redis.hgetall(self._generations)
        return {int(k): int(v) for k, v in _decode(raw).items()}

    async def _credentials(self, username: str) -> tuple[Staff, str] | None:
        staff_id = await self._id_of(username)
        fields = await self._fields(staff_id) if staff_id is not None else {}
        if staff_id is None or not _active(fields):
            return None
        return _staff(staff_id, fields), fields["password_hash"]

    async def _store_hash(self, staff_id: int, old: str, new: str) -> None:
        await self._rehash(keys=[self._key(staff_id)], args=[old, new])

    async def get(self, staff_id: int) -> Staff | None:
        fields = await self._fields(staff_id)
        return _staff(staff_id, fields) if _active(fields) else None

    async def by_username(self, username: str) -> Staff | None:
        staff_id = await self._id_of(username)
        return None if staff_id is None else await self.get(staff_id)

    async def exists(self, username: str) -> bool:
        return await self.by_username(username) is not None

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
                "generation": str(staff.generation),
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
        staff_id, csrf, expires_at, generation = await self.redis.hmget(
            self._key(token), ["staff_id", "csrf_token", "expires_at", "generation"]
        )
        if staff_id is None or csrf is None or expires_at is None:
            return None
        if float(expires_at) < time.time():
            return None
        staff = await self.accounts.get(int(staff_id))
        if staff is None or staff.generation != int(generation or 0):
            return None  # disabled, or signed in before a password change
        return StaffSession(staff, csrf.decode() if isinstance(csrf, bytes) else csrf)

    async def end(self, token: str) -> None:
        await self.redis.delete(self._key(token))
