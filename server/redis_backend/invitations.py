"""Specialist invitations in Redis: `server.specialists.SpecialistInvitations` for every node.

Ringing, answering, finishing, expiring and cancelling are each one Lua script that checks the
state and changes it together, so a late accept after a time-out (on another node, say) cannot
win. Invitation hashes are kept (the case history needs them). Key layout:
`server.redis_backend.calls`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

from redis.asyncio import Redis

from server.redis_backend.calls import CallKeys, as_fields, opt_float, pairs, stamp, text
from server.specialists import InvitationState, SpecialistInvitation

# Moves invitation `id` (hash `key`, specialist `spid`, session `sid`) out of ringing, keeping
# the indexes in step. ARGV[1..3]: invitation base, specialist ringing base, accepted base;
# KEYS[1]: the ringing set.
_SETTLE = """
local function settle(id, state, at)
  local key = ARGV[1] .. id
  local f = redis.call('HMGET', key, 'specialist_id', 'session_id')
  redis.call('HSET', key, 'state', state, 'answered_at', at)
  if state ~= 'ringing' then
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', ARGV[2] .. f[1], id)
  end
  if state == 'accepted' then
    redis.call('SADD', ARGV[3] .. f[2], f[1])
  end
end
"""

# KEYS: ringing, session invitations, new invitation, invited set, specialist's ringing,
# specialist's sessions, the video session. ARGV: bases (3), now, id, session id, specialist
# id, invited by, expires_at.
RING = _SETTLE + """
for _, id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  if redis.call('HGET', ARGV[1] .. id, 'state') == 'ringing' then
    settle(id, 'cancelled', ARGV[4])
  end
end
redis.call('HSET', KEYS[3], 'id', ARGV[5], 'session_id', ARGV[6], 'specialist_id', ARGV[7],
  'invited_by', ARGV[8], 'state', 'ringing', 'created_at', ARGV[4], 'expires_at', ARGV[9])
redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('SADD', KEYS[4], ARGV[7])
redis.call('ZADD', KEYS[1], ARGV[9], ARGV[5])
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[5])
local created = redis.call('HGET', KEYS[7], 'created_at') or ARGV[4]
redis.call('ZADD', KEYS[6], created, ARGV[6])
return 1
"""

# KEYS: ringing. ARGV: bases (3), id, specialist id ('' for any), state, now, check expiry.
SETTLE_ONE = _SETTLE + """
local f = redis.call('HMGET', ARGV[1] .. ARGV[4], 'state', 'specialist_id', 'expires_at')
if f[1] ~= 'ringing' then return 0 end
if ARGV[5] ~= '' and f[2] ~= ARGV[5] then return 0 end
if ARGV[8] == '1' and tonumber(f[3]) <= tonumber(ARGV[7]) then return 0 end
settle(ARGV[4], ARGV[6], ARGV[7])
return 1
"""

# KEYS: ringing. ARGV: bases (3), now.
EXPIRE_STALE = _SETTLE + """
local count = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])) do
  local f = redis.call('HMGET', ARGV[1] .. id, 'state', 'expires_at')
  if f[1] == 'ringing' then
    settle(id, 'timed_out', f[2])
    count = count + 1
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return count
"""

# KEYS: ringing, session invitations. ARGV: bases (3), now. Returns the invitations as they
# were before cancelling (as the SQLite store does).
CANCEL_SESSION = _SETTLE + """
local cancelled = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local key = ARGV[1] .. id
  if redis.call('HGET', key, 'state') == 'ringing' then
    table.insert(cancelled, redis.call('HGETALL', key))
    settle(id, 'cancelled', ARGV[4])
  end
end
return cancelled
"""


def invitation_from(fields: Mapping[str, str]) -> SpecialistInvitation:
    return SpecialistInvitation(
        id=fields["id"],
        session_id=fields["session_id"],
        specialist_id=int(fields["specialist_id"]),
        invited_by=int(fields["invited_by"]),
        state=InvitationState(fields["state"]),
        created_at=float(fields["created_at"]),
        expires_at=float(fields["expires_at"]),
        answered_at=opt_float(fields, "answered_at"),
    )


class RedisSpecialistInvitations:
    """`server.specialists.SpecialistInvitations` kept in Redis."""

    def __init__(self, redis: Redis, ring_seconds: int, prefix: str = "erv:") -> None:
        self.redis = redis
        self.ring_seconds = ring_seconds
        self.keys = CallKeys(prefix)
        self._bases = [self.keys.invitation_base, self.keys.specialist_ringing_base,
                       self.keys.accepted_base]
        self._ring = redis.register_script(RING)
        self._settle_one = redis.register_script(SETTLE_ONE)
        self._expire_stale = redis.register_script(EXPIRE_STALE)
        self._cancel_session = redis.register_script(CANCEL_SESSION)

    async def ring(self, session_id: str, specialist_id: int, invited_by: int) -> (
        SpecialistInvitation
    ):
        """Start ringing; any invitation still ringing for the session is cancelled."""
        invitation_id = secrets.token_hex(8)
        now = time.time()
        specialist = str(int(specialist_id))
        await self._ring(
            keys=[self.keys.ringing, self.keys.session_invitations_base + session_id,
                  self.keys.invitation_base + invitation_id,
                  self.keys.invited_base + session_id,
                  self.keys.specialist_ringing_base + specialist,
                  self.keys.specialist_sessions_base + specialist,
                  self.keys.session(session_id)],
            args=[*self._bases, stamp(now), invitation_id, session_id, specialist,
                  str(int(invited_by)), stamp(now + self.ring_seconds)],
        )
        invitation = await self.get(invitation_id)
        assert invitation is not None
        return invitation

    async def get(self, invitation_id: str) -> SpecialistInvitation | None:
        raw = await self.redis.hgetall(self.keys.invitation_base + invitation_id)
        return invitation_from(as_fields(raw)) if raw else None

    async def latest(self, session_id: str) -> SpecialistInvitation | None:
        last = await self.redis.lindex(self.keys.session_invitations_base + session_id, -1)
        return None if last is None else await self.get(text(last))

    async def tried(self, session_id: str) -> set[int]:
        """Specialists already asked in this session (the next 'first available' skips them)."""
        members = await self.redis.smembers(self.keys.invited_base + session_id)
        return {int(text(m)) for m in members}

    async def ringing_for(self, specialist_id: int) -> list[SpecialistInvitation]:
        ids = await self.redis.zrange(
            self.keys.specialist_ringing_base + str(int(specialist_id)), 0, -1
        )
        now = time.time()
        return [
            i for i in await self._load(ids)
            if i.state is InvitationState.RINGING and i.expires_at > now
        ]

    async def has_accepted(self, session_id: str, specialist_id: int) -> bool:
        return bool(await self.redis.sismember(
            self.keys.accepted_base + session_id, str(int(specialist_id))
        ))

    async def was_invited(self, session_id: str, specialist_id: int) -> bool:
        return bool(await self.redis.sismember(
            self.keys.invited_base + session_id, str(int(specialist_id))
        ))

    async def answer(
        self, invitation_id: str, specialist_id: int, state: InvitationState,
        now: float | None = None,
    ) -> SpecialistInvitation | None:
        """Accept or decline while still ringing; None if it no longer rings."""
        now = time.time() if now is None else now
        changed = await self._settle(invitation_id, str(int(specialist_id)), state, now, True)
        return await self.get(invitation_id) if changed else None

    async def finish(self, invitation_id: str, state: InvitationState) -> bool:
        """Time out or cancel a ringing invitation; False if it was already answered."""
        return await self._settle(invitation_id, "", state, time.time(), False)

    async def expire_stale(self, now: float | None = None) -> int:
        """Mark invitations whose ring time passed (e.g. across a restart) timed out."""
        count = await self._expire_stale(
            keys=[self.keys.ringing],
            args=[*self._bases, stamp(time.time() if now is None else now)],
        )
        return int(count)

    async def overdue(self, before: float, limit: int = 100) -> list[SpecialistInvitation]:
        ids = await self.redis.zrangebyscore(self.keys.ringing, "-inf", f"({before!r}",
                                             start=0, num=limit)
        found = [await self.get(text(raw)) for raw in ids if isinstance(raw, bytes | str)]
        return [inv for inv in found
                if inv is not None and inv.state is InvitationState.RINGING]

    async def cancel_session(self, session_id: str) -> list[SpecialistInvitation]:
        snapshots = await self._cancel_session(
            keys=[self.keys.ringing, self.keys.session_invitations_base + session_id],
            args=[*self._bases, stamp(time.time())],
        )
        return [invitation_from(pairs(flat)) for flat in snapshots]

    async def _settle(
        self, invitation_id: str, specialist: str, state: InvitationState, now: float,
        check_expiry: bool,
    ) -> bool:
        changed = await self._settle_one(
            keys=[self.keys.ringing],
            args=[*self._bases, invitation_id, specialist, state.value, stamp(now),
                  "1" if check_expiry else "0"],
        )
        return int(changed) == 1

    async def _load(self, ids: Iterable[Any]) -> list[SpecialistInvitation]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for invitation_id in ids:
                pipe.hgetall(self.keys.invitation_base + text(invitation_id))
            replies = await pipe.execute()
        return [invitation_from(as_fields(raw)) for raw in replies if raw]
