"""Invite links and victim credentials in Redis: `server.invites.InviteBook`, shared by every node.

Tokens and credentials are stored only as their SHA-256 (`secret_digest`), as in SQLite.
Issuing (which revokes the earlier links), looking, redeeming and revoking are each one Lua
script, so a link is redeemed once however many nodes receive the tap at the same moment.
Key layout: `server.redis_backend.calls`.

Invite hashes stay (the session's status and history show them). What only serves a finished
link or credential expires: a token's lookup key and a credential live `REFUSAL_MEMORY` seconds
past their expiry, so until then a late tap gets the same answer as from SQLite ("timed out",
"already used"), and after it "not recognised".
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping

from redis.asyncio import Redis

from server.invites import (
    MAX_TOKEN_LENGTH,
    TOKEN_BYTES,
    Credential,
    Invite,
    LinkProblem,
    LinkRefused,
    secret_digest,
)
from server.redis_backend.calls import CallKeys, as_fields, opt_float, stamp, text

REFUSAL_MEMORY = 86400  # seconds a dead token or credential is still recognised

# Revokes the session's live (unrevoked, unredeemed) links. Needs KEYS[1] the session's invite
# list, ARGV[1] the invite key base; sets `count`.
_REVOKE_LIVE = """
local function revoke_live(now, reason)
  local count = 0
  for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
    local key = ARGV[1] .. id
    local f = redis.call('HMGET', key, 'revoked_at', 'redeemed_at', 'id')
    if f[3] and not f[1] and not f[2] then
      redis.call('HSET', key, 'revoked_at', now, 'revoke_reason', reason)
      count = count + 1
    end
  end
  return count
end
"""

# KEYS: session invites, new invite, token lookup.
# ARGV: invite base, now, id, session id, token hash, expires_at, lookup lifetime (ms).
ISSUE = _REVOKE_LIVE + """
revoke_live(ARGV[2], 'replaced')
redis.call('HSET', KEYS[2], 'id', ARGV[3], 'session_id', ARGV[4], 'token_hash', ARGV[5],
  'created_at', ARGV[2], 'expires_at', ARGV[6], 'sms_status', 'pending')
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[7])
redis.call('RPUSH', KEYS[1], ARGV[3])
return 1
"""

# Checks the link behind KEYS[1] (token lookup) like `check_usable`; sets `id`, `key`, `f`.
_CHECK = """
local id = redis.call('GET', KEYS[1])
if not id then return {'unknown'} end
local key = ARGV[1] .. id
local f = redis.call('HMGET', key, 'redeemed_at', 'revoked_at', 'revoke_reason', 'expires_at',
  'session_id', 'opened_at')
if not f[5] then return {'unknown'} end
if f[1] then return {'used'} end
if f[2] then
  if f[3] == 'ended' then return {'ended'} end
  return {'revoked'}
end
if tonumber(f[4]) <= tonumber(ARGV[2]) then return {'expired'} end
"""

# KEYS: token lookup. ARGV: invite base, now.
LOOK = _CHECK + """
redis.call('HSETNX', key, 'opened_at', ARGV[2])
return {'ok', id}
"""

# KEYS: token lookup, new credential. ARGV: invite base, now, credential hash, expires_at,
# credential key lifetime end (unix ms), session credentials base.
REDEEM = _CHECK + """
redis.call('HSET', key, 'redeemed_at', ARGV[2])
redis.call('HSETNX', key, 'opened_at', ARGV[2])
redis.call('HSET', KEYS[2], 'session_id', f[5], 'invite_id', id, 'role', 'victim',
  'created_at', ARGV[2], 'expires_at', ARGV[4])
redis.call('PEXPIREAT', KEYS[2], ARGV[5])
local set = ARGV[6] .. f[5]
redis.call('SADD', set, ARGV[3])
local until_ms = redis.call('PEXPIRETIME', set)
if until_ms == -1 or until_ms < tonumber(ARGV[5]) then
  redis.call('PEXPIREAT', set, ARGV[5])
end
return {'ok', id}
"""

# KEYS: session invites, session credentials. ARGV: invite base, now, reason, credential base.
REVOKE = _REVOKE_LIVE + """
local count = revoke_live(ARGV[2], ARGV[3])
if ARGV[3] == 'ended' then
  for _, h in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    local key = ARGV[4] .. h
    if redis.call('EXISTS', key) == 1 and not redis.call('HGET', key, 'revoked_at') then
      redis.call('HSET', key, 'revoked_at', ARGV[2])
    end
  end
end
return count
"""

# KEYS: session credentials. ARGV: credential base, now, kept digests...
END_CREDENTIALS = """
local kept = {}
for i = 3, #ARGV do kept[ARGV[i]] = true end
local count = 0
for _, h in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. h
  if not kept[h] and redis.call('EXISTS', key) == 1
      and not redis.call('HGET', key, 'revoked_at') then
    redis.call('HSET', key, 'revoked_at', ARGV[2])
    count = count + 1
  end
end
return count
"""

# KEYS: credential. ARGV: now.
END_CREDENTIAL = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HGET', KEYS[1], 'revoked_at') then
  return 0
end
redis.call('HSET', KEYS[1], 'revoked_at', ARGV[1])
return 1
"""

# KEYS: invite. ARGV: sms lookup base, invite id, gateway, status, has-id flag, message id,
# has-error flag, error.
RECORD_SMS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local old = redis.call('HGET', KEYS[1], 'sms_message_id')
if old and redis.call('GET', ARGV[1] .. old) == ARGV[2] then
  redis.call('DEL', ARGV[1] .. old)
end
redis.call('HSET', KEYS[1], 'sms_gateway', ARGV[3], 'sms_status', ARGV[4])
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], 'sms_message_id', ARGV[6])
  redis.call('SET', ARGV[1] .. ARGV[6], ARGV[2])
else
  redis.call('HDEL', KEYS[1], 'sms_message_id')
end
if ARGV[7] == '1' then
  redis.call('HSET', KEYS[1], 'sms_error', ARGV[8])
else
  redis.call('HDEL', KEYS[1], 'sms_error')
end
return 1
"""

# KEYS: sms lookup. ARGV: invite base, status.
RECORD_DELIVERY = """
local id = redis.call('GET', KEYS[1])
if not id or redis.call('EXISTS', ARGV[1] .. id) == 0 then return false end
redis.call('HSET', ARGV[1] .. id, 'sms_status', ARGV[2])
return id
"""


def invite_from(fields: Mapping[str, str]) -> Invite:
    expires = opt_float(fields, "expires_at")
    created = opt_float(fields, "created_at")
    assert expires is not None and created is not None
    return Invite(
        id=fields["id"],
        session_id=fields["session_id"],
        created_at=created,
        expires_at=expires,
        opened_at=opt_float(fields, "opened_at"),
        redeemed_at=opt_float(fields, "redeemed_at"),
        revoked_at=opt_float(fields, "revoked_at"),
        revoke_reason=fields.get("revoke_reason"),
        sms_gateway=fields.get("sms_gateway"),
        sms_message_id=fields.get("sms_message_id"),
        sms_status=fields.get("sms_status", "pending"),
        sms_error=fields.get("sms_error"),
    )


class RedisInviteBook:
    """`server.invites.InviteBook` kept in Redis."""

    def __init__(
        self, redis: Redis, ttl: int, credential_ttl: int, prefix: str = "erv:"
    ) -> None:
        self.redis = redis
        self.ttl = ttl
        self.credential_ttl = credential_ttl
        self.refusal_memory = REFUSAL_MEMORY
        self.keys = CallKeys(prefix)
        self._issue = redis.register_script(ISSUE)
        self._look = redis.register_script(LOOK)
        self._redeem = redis.register_script(REDEEM)
        self._revoke = redis.register_script(REVOKE)
        self._record_sms = redis.register_script(RECORD_SMS)
        self._record_delivery = redis.register_script(RECORD_DELIVERY)
        self._end_credentials = redis.register_script(END_CREDENTIALS)
        self._end_credential = redis.register_script(END_CREDENTIAL)

    async def issue(self, session_id: str) -> tuple[Invite, str]:
        """A new link for the session; any earlier live link is revoked as replaced."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        invite_id = secrets.token_hex(8)
        now = time.time()
        token_hash = secret_digest(token)
        await self._issue(
            keys=[self.keys.session_invites_base + session_id,
                  self.keys.invite_base + invite_id, self.keys.token_base + token_hash],
            args=[self.keys.invite_base, stamp(now), invite_id, session_id, token_hash,
                  stamp(now + self.ttl), int((self.ttl + self.refusal_memory) * 1000)],
        )
        invite = await self.get(invite_id)
        assert invite is not None
        return invite, token

    async def get(self, invite_id: str) -> Invite | None:
        raw = await self.redis.hgetall(self.keys.invite_base + invite_id)
        return invite_from(as_fields(raw)) if raw else None

    async def latest(self, session_id: str) -> Invite | None:
        last = await self.redis.lindex(self.keys.session_invites_base + session_id, -1)
        return None if last is None else await self.get(text(last))

    async def record_sms(
        self, invite_id: str, gateway: str, message_id: str | None, status: str,
        error: str | None = None,
    ) -> None:
        await self._record_sms(
            keys=[self.keys.invite_base + invite_id],
            args=[self.keys.sms_base, invite_id, gateway, status,
                  "1" if message_id is not None else "0", message_id or "",
                  "1" if error is not None else "0", error or ""],
        )

    async def record_delivery(self, message_id: str, status: str) -> Invite | None:
        """A provider's delivery report; returns the invite it concerns, if any."""
        invite_id = await self._record_delivery(
            keys=[self.keys.sms_base + message_id], args=[self.keys.invite_base, status]
        )
        return None if invite_id is None else await self.get(text(invite_id))

    async def look(self, token: str, now: float | None = None) -> Invite:
        """The GET of a link: checks it and notes the first opening, never redeems."""
        now = time.time() if now is None else now
        invite_id = self._outcome(await self._look(
            keys=[self._token_key(token)], args=[self.keys.invite_base, stamp(now)]
        ))
        invite = await self.get(invite_id)
        assert invite is not None
        return invite

    async def redeem(self, token: str, now: float | None = None) -> tuple[Invite, Credential]:
        """The victim's tap: uses the link up, once, for a session-bound credential."""
        now = time.time() if now is None else now
        secret = secrets.token_urlsafe(32)
        secret_hash = secret_digest(secret)
        expires = now + self.credential_ttl
        invite_id = self._outcome(await self._redeem(
            keys=[self._token_key(token), self.keys.credential_base + secret_hash],
            args=[self.keys.invite_base, stamp(now), secret_hash, stamp(expires),
                  int((expires + self.refusal_memory) * 1000),
                  self.keys.session_credentials_base],
        ))
        redeemed = await self.get(invite_id)
        assert redeemed is not None
        return redeemed, Credential(secret, redeemed.session_id, "victim", expires)

    async def revoke(self, session_id: str, reason: str) -> int:
        """Revoke the live, unused link(s); when the session ended, its credentials too.

        A handler revoking a link stops it being redeemed; a caller already in the call
        stays in it (the handler ends the session to stop that)."""
        changed = await self._revoke(
            keys=[self.keys.session_invites_base + session_id,
                  self.keys.session_credentials_base + session_id],
            args=[self.keys.invite_base, stamp(time.time()), reason,
                  self.keys.credential_base],
        )
        return int(changed)

    async def check_credential(self, token: str, now: float | None = None) -> Credential:
        now = time.time() if now is None else now
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise LinkRefused(LinkProblem.UNKNOWN)
        raw = await self.redis.hgetall(self.keys.credential_base + secret_digest(token))
        if not raw:
            raise LinkRefused(LinkProblem.UNKNOWN)
        fields = as_fields(raw)
        if "revoked_at" in fields:
            raise LinkRefused(LinkProblem.ENDED)
        expires = float(fields["expires_at"])
        if expires <= now:
            raise LinkRefused(LinkProblem.EXPIRED)
        return Credential(token, fields["session_id"], fields["role"], expires)

    async def credential_session(self, token: str) -> str | None:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        session = await self.redis.hget(self.keys.credential_base + secret_digest(token),
                                        "session_id")
        return None if session is None else text(session)

    async def end_credentials(self, session_id: str, keep: frozenset[str] = frozenset()) -> int:
        return int(await self._end_credentials(
            keys=[self.keys.session_credentials_base + session_id],
            args=[self.keys.credential_base, stamp(time.time()), *sorted(keep)],
        ))

    async def end_credential(self, digest: str) -> bool:
        return bool(await self._end_credential(
            keys=[self.keys.credential_base + digest], args=[stamp(time.time())]))

    def _token_key(self, token: str) -> str:
        # Out-of-range input never matches: the empty hash is no stored token's.
        valid = 0 < len(token) <= MAX_TOKEN_LENGTH
        return self.keys.token_base + (secret_digest(token) if valid else "")

    @staticmethod
    def _outcome(reply: list[bytes | str]) -> str:
        """The invite id from a LOOK or REDEEM reply, or the LinkRefused it stands for."""
        outcome = text(reply[0])
        if outcome != "ok":
            raise LinkRefused(LinkProblem(outcome))
        return text(reply[1])
