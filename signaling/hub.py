"""The Hub: who is in which session, and getting messages to them.

`Hub` is the interface the endpoint and the control room use; `LocalHub` is the embedded,
single-node implementation kept in this process (signaling/redis_hub.py has the scale-out one).
A participant whose socket drops stays in its session as "away" for the resume window, so
peers keep their media (it is peer to peer) and the participant can pick up where it left off;
after the window it leaves for good.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from signaling.participant import Admission, Connection, Participant, is_lobby
from signaling.protocol import ErrorCode, ProtocolError, Role, encode

log = logging.getLogger("erv.signaling")

HISTORY_MESSAGES = 200
KNOCK_TTL = 15 * 60  # a waiting device nobody answered is forgotten (its socket stays open)
LeftListener = Callable[[Participant, str], Coroutine[Any, Any, None]]
# Told, on the node holding a waiting device's socket, what the handler decided: ADMIT, or
# the reason its `bye` gives (refused, credential_ended, session_ended).
Decided = Callable[[str], None]
ADMIT = "admit"


class PlaceTaken(Exception):
    """A fresh caller hello while the session has a caller (present or resumable): it must
    not replace them without the handler's say (decision 38)."""


@dataclass(frozen=True)
class Knock:
    """A device waiting to join as the caller until the handler admits or refuses it."""

    id: str
    session: str
    credential: str  # the digest of the credential it showed
    since: float

    def describe(self) -> dict[str, Any]:
        """What the handler's console is told of it (never the credential)."""
        return {"device": self.id, "reason": "caller_in_call", "since": self.since}


@dataclass(frozen=True)
class PeerInfo:
    """What the hub knows of a participant that may live on another node."""

    pid: str
    session: str
    role: Role
    present: bool


@dataclass(frozen=True)
class HubStats:
    live_sessions: int  # sessions (not staff desks) with someone in them
    sockets: int  # participants connected to this node


class Hub(Protocol):
    """Membership and delivery, whichever node holds each participant's socket."""

    resume_window: float
    on_left: LeftListener | None

    async def admit(self, admission: Admission, connection: Connection, *,
                    replace: bool = True) -> Participant:
        """A fresh participant; with replace=False, PlaceTaken if its identity already has a
        place in the session (instead of replacing it)."""

    async def caller_credentials(self, session: str) -> frozenset[str]:
        """The credential digests of the session's caller participants (present or away)."""

    async def end_callers(self, session: str, keep: frozenset[str], reason: str) -> int:
        """Remove the session's caller participants whose credential is not in `keep`."""

    async def knock(self, session: str, credential: str, decided: Decided) -> Knock:
        """Hold a device at the door; `decided` runs on this node when it is answered."""

    async def knocks(self, session: str) -> list[Knock]: ...

    async def answer_knock(self, session: str, knock_id: str, decision: str) -> Knock | None:
        """Answer a waiting device of `session` (once: None if it is gone or was answered)."""

    async def withdraw_knock(self, knock: Knock) -> bool:
        """The waiting device went away; True if it was still waiting."""

    async def check_resume(self, pid: str, secret: str) -> Participant:
        """The participant a resume names (a stand-in on this node), if the secret is right;
        changes nothing."""

    async def resume(self, pid: str, secret: str, last_seq: int, connection: Connection) -> (
        tuple[Participant, list[str]]
    ): ...

    async def detach(self, participant: Participant, connection: Connection) -> None: ...

    async def leave(self, participant: Participant, reason: str) -> None: ...

    async def dismiss(self, pid: str, secret: str, reason: str) -> None:
        """Remove a participant proved by its resume secret, wherever its socket is (a bye
        and a close go to that socket, if any); ProtocolError resume_failed if none."""

    async def remember(self, session: str, message: dict[str, Any]) -> None: ...

    async def deliver(self, participant: Participant, message: dict[str, Any]) -> None: ...

    async def broadcast(
        self, session: str, message: dict[str, Any], *, roles: Iterable[Role] | None = None,
        exclude: Participant | None = None,
    ) -> int: ...

    async def route(self, sender: Participant, to: str, message: dict[str, Any]) -> None: ...

    async def peers_of(self, participant: Participant) -> list[dict[str, Any]]:
        """How the participant's peers look (`describe()`), for its welcome."""

    async def roster(self, session: str) -> list[dict[str, Any]]:
        """Everyone in the session (`describe()`: pid, role, name, present or away)."""

    async def lookup(self, pid: str) -> PeerInfo | None: ...

    async def occupied(self, session: str) -> bool:
        """Is anyone (present or away) in the session?"""

    async def online(self, session: str) -> bool:
        """Is anyone in the session connected right now?"""

    async def has_history(self, session: str) -> bool: ...

    async def end_session(self, session: str, reason: str) -> int: ...

    async def kick_staff(self, staff_id: int, reason: str) -> int: ...

    def stats(self) -> HubStats:
        """Sockets and sessions held by this node."""

    def held(self) -> list[Participant]:
        """The participants whose socket this node holds."""

    async def close(self) -> None: ...


class LocalHub:
    """The embedded hub: everything in this process's memory."""

    def __init__(self, resume_window: float = 60.0) -> None:
        self.resume_window = resume_window
        self.sessions: dict[str, dict[str, Participant]] = {}
        self.participants: dict[str, Participant] = {}
        self.ended: set[str] = set()
        # What was said and where the caller was, kept in memory for the session's life, so
        # someone joining late (a specialist, a reloaded console) is not missing "they are here".
        self.history: dict[str, deque[dict[str, Any]]] = {}
        self.last_location: dict[str, dict[str, Any]] = {}
        self.on_left: LeftListener | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._knocks: dict[str, tuple[Knock, Decided]] = {}

    # -- membership -------------------------------------------------------------------------

    async def admit(self, admission: Admission, connection: Connection, *,
                    replace: bool = True) -> Participant:
        """A fresh participant. One identity holds one place per session: a second tab
        replaces the first, whose socket is told why and closed (with replace=False, raises
        PlaceTaken instead)."""
        if admission.session in self.ended:
            raise ProtocolError(ErrorCode.SESSION_ENDED, "this session has ended")
        members = self.sessions.get(admission.session, {})
        if not is_lobby(admission.session):
            # The mesh is small on purpose: one caller, one handler, one specialist, one
            # observer. The same person coming in again replaces their old place.
            for old in list(members.values()):
                if old.role is admission.role and old.admission.identity != admission.identity:
                    raise ProtocolError(
                        ErrorCode.CONFLICT, f"this call already has a {admission.role.value}"
                    )
            same = [old for old in members.values()
                    if old.admission.identity == admission.identity]
            if same and not replace:
                raise PlaceTaken(admission.session)
            for old in same:
                self._remove(old, "replaced")
        participant = Participant(admission, joined_at=time.time())
        participant.connection = connection
        self.sessions.setdefault(admission.session, {})[participant.pid] = participant
        self._replay_history(participant)
        self.participants[participant.pid] = participant
        if not is_lobby(admission.session):
            self._broadcast(
                admission.session,
                {"type": "peer", "op": "joined", **participant.describe()},
                exclude=participant,
            )
        log.info("participant %s joined as %s", participant.pid, participant.role.value)
        return participant

    async def check_resume(self, pid: str, secret: str) -> Participant:
        return self.resumable(pid, secret)

    async def caller_credentials(self, session: str) -> frozenset[str]:
        return frozenset(p.admission.credential for p in self.members(session)
                         if p.role is Role.VICTIM)

    async def end_callers(self, session: str, keep: frozenset[str], reason: str) -> int:
        gone = [p for p in self.members(session)
                if p.role is Role.VICTIM and p.admission.credential not in keep]
        for participant in gone:
            self._remove(participant, reason)
        return len(gone)

    # -- devices waiting at the door --------------------------------------------------------

    async def knock(self, session: str, credential: str, decided: Decided) -> Knock:
        knock = Knock(secrets.token_hex(8), session, credential, time.time())
        self._knocks[knock.id] = (knock, decided)
        return knock

    async def knocks(self, session: str) -> list[Knock]:
        return [k for k, _ in self._knocks.values() if k.session == session]

    async def answer_knock(self, session: str, knock_id: str, decision: str) -> Knock | None:
        held = self._knocks.get(knock_id)
        if held is None or held[0].session != session:
            return None
        del self._knocks[knock_id]
        held[1](decision)
        return held[0]

    async def withdraw_knock(self, knock: Knock) -> bool:
        return self._knocks.pop(knock.id, None) is not None

    def resumable(self, pid: str, secret: str) -> Participant:
        """The participant a resume names, if the secret is right; changes nothing."""
        participant = self.participants.get(pid)
        if participant is None or not participant.secret_matches(secret):
            raise ProtocolError(
                ErrorCode.RESUME_FAILED, "nothing to resume; join again with your credential"
            )
        return participant

    async def remember(self, session: str, message: dict[str, Any]) -> None:
        """Keep a chat, advice or location message for participants who join later."""
        if message["type"] == "location":
            self.last_location[session] = message
        else:
            self.history.setdefault(session, deque(maxlen=HISTORY_MESSAGES)).append(message)

    def _replay_history(self, participant: Participant) -> None:
        """A fresh participant gets the conversation so far (never advice, for the caller)."""
        staff = participant.role.is_staff
        for message in self.history.get(participant.session, ()):
            if message["type"] == "advice" and not staff:
                continue
            participant.deliver({**message, "replay": True})
        location = self.last_location.get(participant.session)
        if location is not None and staff:
            participant.deliver({**location, "replay": True})

    async def resume(self, pid: str, secret: str, last_seq: int, connection: Connection) -> tuple[
        Participant, list[str]
    ]:
        """Re-attach a participant to a new socket; returns it and the frames it missed."""
        participant = self.resumable(pid, secret)
        missed = participant.missed_since(last_seq)
        if missed is None:
            raise ProtocolError(
                ErrorCode.RESUME_FAILED, "too much was missed; join again with your credential"
            )
        if participant.expiry is not None:
            participant.expiry.cancel()
            participant.expiry = None
        was_away = participant.connection is None
        if participant.connection is not None:
            participant.connection.close(4000, "resumed_elsewhere")
        participant.connection = connection
        participant.away_since = None
        if was_away and not is_lobby(participant.session):
            self._broadcast(
                participant.session,
                {"type": "peer", "op": "updated", **participant.describe()},
                exclude=participant,
            )
        log.info("participant %s resumed after seq %d", pid, last_seq)
        return participant, missed

    async def detach(self, participant: Participant, connection: Connection) -> None:
        """The socket went away; keep the place for the resume window."""
        if participant.connection is not connection or participant.pid not in self.participants:
            return
        participant.connection = None
        participant.away_since = time.time()
        loop = asyncio.get_running_loop()
        participant.expiry = loop.call_later(
            self.resume_window, self._expire, participant.pid
        )
        if not is_lobby(participant.session):
            self._broadcast(
                participant.session,
                {"type": "peer", "op": "updated", **participant.describe()},
                exclude=participant,
            )

    def _expire(self, pid: str) -> None:
        participant = self.participants.get(pid)
        if participant is not None and participant.connection is None:
            self._remove(participant, "timeout")

    async def leave(self, participant: Participant, reason: str) -> None:
        """The participant said goodbye (or was removed): it leaves now, no resume."""
        if participant.pid in self.participants:
            self._remove(participant, reason)

    async def dismiss(self, pid: str, secret: str, reason: str) -> None:
        self._remove(self.resumable(pid, secret), reason)

    def _remove(self, participant: Participant, reason: str) -> None:
        self.participants.pop(participant.pid, None)
        members = self.sessions.get(participant.session, {})
        members.pop(participant.pid, None)
        if not members:
            self.sessions.pop(participant.session, None)
        if participant.expiry is not None:
            participant.expiry.cancel()
        if participant.connection is not None:
            participant.send_unsequenced({"type": "bye", "reason": reason})
            participant.connection.close(1000, reason)
            participant.connection = None
        if not is_lobby(participant.session):
            self._broadcast(
                participant.session,
                {"type": "peer", "op": "left", "pid": participant.pid,
                 "role": participant.role.value, "reason": reason},
            )
        log.info("participant %s left (%s)", participant.pid, reason)
        if self.on_left is not None:
            task = asyncio.get_running_loop().create_task(self.on_left(participant, reason))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def end_session(self, session: str, reason: str) -> int:
        """Everyone leaves with a `bye`; nobody can join again. Returns how many were in."""
        self.ended.add(session)
        for knock in await self.knocks(session):
            await self.answer_knock(session, knock.id, reason)
        self.history.pop(session, None)
        self.last_location.pop(session, None)
        members = list(self.sessions.get(session, {}).values())
        for participant in members:
            self._remove(participant, reason)
        return len(members)

    async def kick_staff(self, staff_id: int, reason: str) -> int:
        """Remove every participant of one staff member (signed out, disabled)."""
        gone = [p for p in self.participants.values() if p.admission.staff_id == staff_id]
        for participant in gone:
            self._remove(participant, reason)
        return len(gone)

    # -- delivery ---------------------------------------------------------------------------

    def members(self, session: str) -> Iterable[Participant]:
        return list(self.sessions.get(session, {}).values())

    async def peers_of(self, participant: Participant) -> list[dict[str, Any]]:
        return [p.describe() for p in self.members(participant.session) if p is not participant]

    async def roster(self, session: str) -> list[dict[str, Any]]:
        return [p.describe() for p in self.members(session)]

    async def deliver(self, participant: Participant, message: dict[str, Any]) -> None:
        participant.deliver(message)

    async def lookup(self, pid: str) -> PeerInfo | None:
        participant = self.participants.get(pid)
        if participant is None:
            return None
        return PeerInfo(pid, participant.session, participant.role, participant.present)

    async def occupied(self, session: str) -> bool:
        return bool(self.sessions.get(session))

    async def online(self, session: str) -> bool:
        return any(p.present for p in self.members(session))

    async def has_history(self, session: str) -> bool:
        return session in self.history or session in self.last_location

    def held(self) -> list[Participant]:
        return [p for p in self.participants.values() if p.present]

    def stats(self) -> HubStats:
        return HubStats(
            live_sessions=sum(1 for key in self.sessions if not is_lobby(key)),
            sockets=sum(1 for p in self.participants.values() if p.present),
        )

    async def broadcast(
        self,
        session: str,
        message: dict[str, Any],
        *,
        roles: Iterable[Role] | None = None,
        exclude: Participant | None = None,
    ) -> int:
        return self._broadcast(session, message, roles=roles, exclude=exclude)

    def _broadcast(
        self,
        session: str,
        message: dict[str, Any],
        *,
        roles: Iterable[Role] | None = None,
        exclude: Participant | None = None,
    ) -> int:
        allowed = set(roles) if roles is not None else None
        body = encode(message)  # once, however many receive it
        count = 0
        for participant in self.sessions.get(session, {}).values():
            if participant is exclude:
                continue
            if allowed is not None and participant.role not in allowed:
                continue
            participant.deliver_encoded(body)
            count += 1
        return count

    async def route(self, sender: Participant, to: str, message: dict[str, Any]) -> None:
        """Deliver to one peer of the sender's own session, or refuse."""
        target = self.participants.get(to)
        if target is None or target is sender or target.session != sender.session \
                or is_lobby(sender.session):
            raise ProtocolError(ErrorCode.UNKNOWN_PEER, "no such peer in your session")
        target.deliver(message)

    async def close(self) -> None:
        for participant in list(self.participants.values()):
            if participant.expiry is not None:
                participant.expiry.cancel()
            if participant.connection is not None:
                participant.send_unsequenced({"type": "bye", "reason": "server_shutdown"})
                participant.connection.close(1001, "server_shutdown")
        for task in list(self._tasks):
            task.cancel()
