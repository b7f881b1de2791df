"""Video sessions in Redis, and the key layout of every call store (sessions, links, invitations).

Same behaviour as `server.sessions.VideoSessions`. Keys (P is the prefix, `erv:` by default):

    P call:session:<id>                  hash, one video session (kept: the case history needs it);
                                         its `fact:<name>` fields are the caller's facts, as JSON
    P call:sessions                      sorted set of session ids by created_at
    P call:sessions:handler:<staff id>   the same, one handler's sessions
    P call:sessions:specialist:<id>      sessions a specialist was invited to (written by ring)
    P call:sessions:contact:<link>       sessions from one number, by its keyed hash
    P call:invite:<id>                   hash, one invite link (server.redis_backend.links)
    P call:invite-token:<sha256>         invite id; expires a while after the link
    P call:invite-sms:<message id>       invite id, for delivery reports
    P call:invites:<session id>          list of the session's invite ids, oldest first
    P call:credential:<sha256>           hash, one victim credential; expires after it
    P call:credentials:<session id>      set of the session's credential hashes
    P call:invitation:<id>               hash, one specialist invitation (.invitations)
    P call:invitations:<session id>      list of the session's invitation ids, oldest first
    P call:invited:<session id>          set of specialist ids asked in the session
    P call:accepted:<session id>         set of specialist ids who accepted
    P call:ringing                       sorted set of ringing invitation ids by expires_at
    P call:ringing:<specialist id>       the same for one specialist, by created_at

Absent hash fields are SQL NULLs. Times are stored as `repr(float)`, which reads back as the
very same float in Python and in Lua; Lua only compares them, never computes with them.
Each state change is one Lua script, so it is atomic across every node.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from server.sessions import (
    TRANSITIONS,
    IllegalTransition,
    SessionState,
    VideoSession,
    validate_new_session,
    walk_forward,
)


class CallKeys:
    """Key names; the `*_base` strings are completed with an id (also inside Lua scripts)."""

    def __init__(self, prefix: str) -> None:
        p = prefix + "call:"
        self.session_base = p + "session:"
        self.sessions = p + "sessions"
        self.handler_base = p + "sessions:handler:"
        self.specialist_sessions_base = p + "sessions:specialist:"
        self.contact_base = p + "sessions:contact:"
        self.invite_base = p + "invite:"
        self.token_base = p + "invite-token:"
        self.sms_base = p + "invite-sms:"
        self.session_invites_base = p + "invites:"
        self.credential_base = p + "credential:"
        self.session_credentials_base = p + "credentials:"
        self.invitation_base = p + "invitation:"
        self.session_invitations_base = p + "invitations:"
        self.invited_base = p + "invited:"
        self.accepted_base = p + "accepted:"
        self.ringing = p + "ringing"
        self.specialist_ringing_base = p + "ringing:"

    def session(self, session_id: str) -> str:
        return self.session_base + session_id


# --- decoding what Redis returns (bytes, or str on a client with decode_responses) ------------


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def as_fields(raw: Mapping[Any, Any]) -> dict[str, str]:
    """An HGETALL reply as str -> str."""
    return {text(k): text(v) for k, v in raw.items()}


def pairs(flat: Sequence[Any]) -> dict[str, str]:
    """An HGETALL made inside Lua (a flat list) as str -> str."""
    return {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat), 2)}


def opt_float(fields: Mapping[str, str], name: str) -> float | None:
    value = fields.get(name)
    return None if value is None else float(value)


def stamp(value: float) -> str:
    """A time as stored: the shortest text that reads back as exactly this float."""
    return repr(float(value))


def upto(limit: int) -> int | None:
    """The last ZRANGE index for an SQL LIMIT (negative: no limit); None for LIMIT 0."""
    return None if limit == 0 else (limit - 1 if limit > 0 else -1)


FACT_PREFIX = "fact:"


def session_from(fields: Mapping[str, str]) -> VideoSession:
    facts = {k[len(FACT_PREFIX):]: json.loads(v) for k, v in fields.items()
             if k.startswith(FACT_PREFIX)}
    return VideoSession(
        id=fields["id"],
        incident_ref=fields["incident_ref"],
        phone=fields["phone"],
        handler_id=int(fields["handler_id"]),
        language=fields["language"],
        state=SessionState(fields["state"]),
        created_at=float(fields["created_at"]),
        invited_at=opt_float(fields, "invited_at"),
        opened_at=opt_float(fields, "opened_at"),
        joined_at=opt_float(fields, "joined_at"),
        connected_at=opt_float(fields, "connected_at"),
        ended_at=opt_float(fields, "ended_at"),
        end_reason=fields.get("end_reason"),
        phone_line=fields.get("phone_line", "1") == "1",
        facts=facts,
    )


# States from which each target may be entered (the inverse of TRANSITIONS).
SOURCES: dict[SessionState, tuple[str, ...]] = {
    target: tuple(s.value for s, nexts in TRANSITIONS.items() if target in nexts)
    for target in SessionState
}

# KEYS[1] the session. ARGV: target, now, has-reason flag, reason, states allowed to move.
ADVANCE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'missing'} end
local allowed = false
for i = 5, #ARGV do
  if ARGV[i] == state then allowed = true end
end
if not allowed then return {'illegal', state} end
redis.call('HSET', KEYS[1], 'state', ARGV[1], ARGV[1] .. '_at', ARGV[2])
if ARGV[1] == 'ended' then
  if ARGV[3] == '1' then
    redis.call('HSET', KEYS[1], 'end_reason', ARGV[4])
  else
    redis.call('HDEL', KEYS[1], 'end_reason')
  end
end
return {'ok', redis.call('HGETALL', KEYS[1])}
"""

# Only an existing session: HSET alone would create a stub hash.
FORGET_PHONE = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'phone', '') end
return 0
"""

# KEYS[1] the session. ARGV: field, value, field, value, ...; an empty value deletes the field.
SET_FIELDS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[1], ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
"""


class RedisVideoSessions:
    """`server.sessions.VideoSessions` kept in Redis, shared by every node."""

    def __init__(self, redis: Redis, prefix: str = "erv:") -> None:
        self.redis = redis
        self.keys = CallKeys(prefix)
        self._advance = redis.register_script(ADVANCE)
        self._forget_phone = redis.register_script(FORGET_PHONE)
        self._set_fields = redis.register_script(SET_FIELDS)

    async def create(
        self, incident_ref: str, phone_e164: str, handler_id: int, language: str = "en",
        contact_link: str | None = None, phone_line: bool = True,
    ) -> VideoSession:
        ref = validate_new_session(incident_ref, language)
        session_id = secrets.token_hex(8)
        now = time.time()
        fields = {
            "id": session_id, "incident_ref": ref, "phone": phone_e164,
            "handler_id": str(int(handler_id)), "language": language,
            "state": SessionState.CREATED.value, "created_at": stamp(now),
            "phone_line": "1" if phone_line else "0",
        }
        if contact_link is not None:
            fields["contact_link"] = contact_link
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.session(session_id), mapping=fields)  # type: ignore[arg-type]
            pipe.zadd(self.keys.sessions, {session_id: now})
            pipe.zadd(self.keys.handler_base + str(int(handler_id)), {session_id: now})
            if contact_link is not None:
                pipe.zadd(self.keys.contact_base + contact_link, {session_id: now})
            await pipe.execute()
        return session_from(fields)

    async def get(self, session_id: str) -> VideoSession | None:
        raw = await self.redis.hgetall(self.keys.session(session_id))
        return session_from(as_fields(raw)) if raw else None

    async def for_handler(self, handler_id: int, limit: int = 50) -> list[VideoSession]:
        return await self._newest(self.keys.handler_base + str(int(handler_id)), limit)

    async def for_specialist(self, specialist_id: int, limit: int = 50) -> list[VideoSession]:
        return await self._newest(
            self.keys.specialist_sessions_base + str(int(specialist_id)), limit
        )

    async def recent(self, limit: int = 100) -> list[VideoSession]:
        return await self._newest(self.keys.sessions, limit)

    async def earlier_contacts(self, session_id: str) -> list[VideoSession]:
        """Sessions from the same number (by keyed hash) created before this one."""
        link, created = await self.redis.hmget(
            self.keys.session(session_id), ["contact_link", "created_at"]
        )
        if link is None or created is None:
            return []
        ids = await self.redis.zrevrangebyscore(
            self.keys.contact_base + text(link), "(" + text(created), "-inf"
        )
        return await self._load(ids)

    async def advance(
        self, session_id: str, target: SessionState, reason: str | None = None
    ) -> VideoSession:
        """Move one step to `target`, or raise IllegalTransition."""
        reply = await self._advance(
            keys=[self.keys.session(session_id)],
            args=[target.value, stamp(time.time()), "1" if reason is not None else "0",
                  reason or "", *SOURCES[target]],
        )
        outcome = text(reply[0])
        if outcome == "missing":
            raise KeyError(session_id)
        if outcome == "illegal":
            raise IllegalTransition(SessionState(text(reply[1])), target)
        return session_from(pairs(reply[1]))

    async def reach(self, session_id: str, target: SessionState) -> VideoSession:
        """Walk forward step by step until `target`; a no-op if already there or beyond.

        Never moves an ended session.
        """
        return await walk_forward(self, session_id, target)

    async def forget_phone(self, session_id: str) -> None:
        """Blank the (masked) number kept on the session, as retention does on purge."""
        await self._forget_phone(keys=[self.keys.session(session_id)])

    async def set_phone_line(self, session_id: str, phone_line: bool) -> None:
        await self._set_fields(keys=[self.keys.session(session_id)],
                               args=["phone_line", "1" if phone_line else "0"])

    async def update_facts(self, session_id: str, facts: Mapping[str, Any]) -> None:
        args: list[str] = []
        for name, value in facts.items():
            args += [FACT_PREFIX + name,
                     "" if value is None else json.dumps(value, separators=(",", ":"))]
        if args:
            await self._set_fields(keys=[self.keys.session(session_id)], args=args)

    async def _newest(self, index: str, limit: int) -> list[VideoSession]:
        stop = upto(limit)
        if stop is None:
            return []
        return await self._load(await self.redis.zrevrange(index, 0, stop))

    async def _load(self, ids: Iterable[Any]) -> list[VideoSession]:
        """Sessions by id, in the given order, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for session_id in ids:
                pipe.hgetall(self.keys.session(text(session_id)))
            replies = await pipe.execute()
        return [session_from(as_fields(raw)) for raw in replies if raw]
