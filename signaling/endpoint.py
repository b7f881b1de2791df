"""The WebSocket endpoint (`/ws`): reads frames, enforces the rules, hands work to the Hub.

What a participant may do depends on its role and is checked here for every frame; who a
participant is (and control operations that touch sessions) is decided by the server through
`SessionHooks`, so this package never needs to know about HTTP pages, SMS or SQL.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import WSMsgType, web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from signaling.direct_send import direct_sender
from signaling.hub import ADMIT, Hub, Knock, PlaceTaken
from signaling.participant import Admission, Connection, Participant, is_lobby
from signaling.protocol import (
    PROTOCOL_VERSION,
    Advice,
    Chat,
    ClientMessage,
    Control,
    ErrorCode,
    Hello,
    Location,
    Ping,
    ProtocolError,
    Role,
    Signal,
    encode,
    error_frame,
    parse,
)

log = logging.getLogger("erv.signaling")

HELLO_TIMEOUT = 10.0
# What a store that cannot be reached raises (Redis in the scale-out mode): a moment's
# outage, to be told to the client as `unavailable`, not a bug.
STORE_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)
MAX_STRIKES = 10  # protocol errors within STRIKE_WINDOW before the socket is closed (1008)
STRIKE_WINDOW = 60.0
RATE_PER_SECOND = 20.0
RATE_BURST = 60.0
# aiohttp drops frames over this by itself (1009); ours (64 KiB) is checked on each frame so a
# client gets an `error` it can act on rather than a dead socket.
TRANSPORT_MAX_BYTES = 256 * 1024
STAFF_ROLES = (Role.HANDLER, Role.SPECIALIST, Role.OBSERVER)
# Errors that only a broken or hostile client causes. Refusals an honest client can meet
# (a peer that just left, no specialist free, a session that ended) never count as strikes.
ABUSE_CODES = frozenset({
    ErrorCode.BAD_JSON, ErrorCode.BAD_FRAME, ErrorCode.TOO_LARGE, ErrorCode.UNKNOWN_TYPE,
    ErrorCode.UNKNOWN_OP, ErrorCode.BAD_FIELD, ErrorCode.BAD_VERSION, ErrorCode.HELLO_FIRST,
    ErrorCode.ALREADY_JOINED, ErrorCode.UNAUTHORIZED, ErrorCode.RATE_LIMITED,
    ErrorCode.RESUME_FAILED,
})


class SessionHooks(Protocol):
    """What the server decides for the signalling core."""

    async def admit(self, request: web.Request, hello: Hello) -> Admission:
        """Authenticate a hello; raise ProtocolError to refuse it."""

    async def welcome(self, request: web.Request, participant: Participant) -> dict[str, Any]:
        """Extra welcome fields (ice_servers, status); raise ProtocolError to refuse a
        participant (a resumed staff member who has since signed out, say)."""

    async def joined(self, participant: Participant, resumed: bool) -> None:
        """After the welcome was queued."""

    async def control(self, participant: Participant, control: Control) -> None:
        """Carry out a control operation; raise ProtocolError to refuse it."""

    async def said(self, participant: Participant, message: dict[str, Any]) -> None:
        """A chat, advice or location message was delivered (for the case record)."""

    async def knocked(self, knock: Knock) -> None:
        """A device is waiting to join as the caller: tell the handler, write it down."""

    async def withdrawn(self, knock: Knock) -> None:
        """A waiting device went away before the handler answered."""


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class EndpointCounts:
    """Running totals for /metrics."""

    relayed: int = 0  # signal, chat, advice and location messages passed on
    resumes: int = 0


class SignalingEndpoint:
    def __init__(self, hub: Hub, hooks: SessionHooks, heartbeat: float = 20.0) -> None:
        self.hub = hub
        self.hooks = hooks
        self.heartbeat = heartbeat
        self.counts = EndpointCounts()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(
            heartbeat=self.heartbeat, max_msg_size=TRANSPORT_MAX_BYTES, compress=False
        )
        await ws.prepare(request)
        connection = Connection(ws, direct_sender(ws))
        session = _SocketSession(self, request, connection)
        connection.on_close = session.stop_reading
        try:
            await session.run(ws)
        finally:
            await session.leave_door()
            if session.participant is not None:
                try:
                    await self.hub.detach(session.participant, connection)
                except Exception:
                    # The hub's store is away; its housekeeping marks the participant away
                    # once it is back. The socket is gone either way.
                    log.warning("could not mark participant %s away", session.participant.pid)
            if not connection.closing:
                connection.close(1000, "closed")
            try:
                await asyncio.wait_for(connection.wait_closed(), timeout=5)
            except TimeoutError:
                connection.cancel()
            # Closed from this task, with no read pending, so the client's close reply is
            # read and it sees our code and reason.
            await ws.close(code=connection.close_code, message=connection.close_reason)
        return ws


    async def leave(self, body: Any) -> web.Response:
        """`POST /ws/leave {pid, secret}`: leave the call for good when the socket cannot say
        so (the caller's quick exit while the socket is reconnecting, a tab being closed).
        Proved by the participant's own resume secret, like a resume; sent with
        `fetch(..., {keepalive: true})`, which outlives the page. `body` is the request's
        JSON, read by the server's bounded body reader (server/json_body.py)."""
        pid = body.get("pid") if isinstance(body, dict) else None
        secret = body.get("secret") if isinstance(body, dict) else None
        if not (isinstance(pid, str) and isinstance(secret, str) and 0 < len(pid) <= 64
                and 0 < len(secret) <= 128):
            return web.json_response(
                {"error": "bad_field", "message": "pid and secret are required"}, status=400)
        try:
            await self.hub.dismiss(pid, secret, "left")
        except ProtocolError:
            # Gone already (left, timed out, the call ended) or not this secret: either way
            # there is nothing of this participant to remove.
            return web.json_response(
                {"error": "not_found", "message": "nothing to leave"}, status=404)
        return web.Response(status=204)


class _SocketSession:
    """The life of one socket: hello, then frames until it closes."""

    def __init__(
        self, endpoint: SignalingEndpoint, request: web.Request, connection: Connection
    ) -> None:
        self.endpoint = endpoint
        self.hub = endpoint.hub
        self.hooks = endpoint.hooks
        self.request = request
        self.connection = connection
        self.participant: Participant | None = None
        self.bucket = TokenBucket(RATE_PER_SECOND, RATE_BURST)
        self.strikes: deque[float] = deque()
        self._reader: asyncio.Task[Any] | None = None  # set while waiting for a frame
        # A caller's device held at the door until the handler answers (decision 38).
        self.knock: Knock | None = None
        self._door: asyncio.Task[None] | None = None

    def stop_reading(self) -> None:
        """The connection is closing: stop waiting for the client's next frame."""
        if self._reader is not None:
            self._reader.cancel()

    async def run(self, ws: web.WebSocketResponse) -> None:
        loop = asyncio.get_running_loop()
        this_task = asyncio.current_task()  # once: each call costs a system call on 3.11
        # The hello limit runs from when the socket had no participant, not from its last
        # frame: otherwise pings (or failed hellos) would keep a socket open without joining.
        deadline: float | None = None
        while not self.connection.closing:
            timeout: float | None = None
            if self.participant is None and self.knock is None:
                if deadline is None:
                    deadline = loop.time() + HELLO_TIMEOUT
                timeout = deadline - loop.time()
            else:
                deadline = None
            try:
                if timeout is not None and timeout <= 0:
                    raise TimeoutError
                self._reader = this_task
                try:
                    msg = await ws.receive(timeout=timeout)
                finally:
                    self._reader = None
            except asyncio.CancelledError:
                if self.connection.closing and this_task is not None \
                        and this_task.uncancel() == 0:
                    return  # our own stop_reading: the socket is being closed
                raise
            except TimeoutError:
                self.send_error(ErrorCode.HELLO_FIRST, "no hello received in time")
                self.connection.close(1008, "hello_timeout")
                return
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED,
                            WSMsgType.ERROR):
                return
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            await self.on_frame(msg.data)

    def send_error(self, code: ErrorCode, message: str, detail: str | None = None) -> None:
        extra = {"detail": detail} if detail else {}
        self.connection.send(encode(error_frame(code, message, **extra)))

    async def on_frame(self, data: str | bytes) -> None:
        try:
            if not self.bucket.take():
                raise ProtocolError(ErrorCode.RATE_LIMITED, "slow down")
            message = parse(data)
            await self.dispatch(message)
        except ProtocolError as exc:
            self.strike(exc)
        except STORE_UNREACHABLE as exc:
            # The shared store is away (scale-out mode): nothing was delivered; say so.
            log.warning("store unreachable handling a frame (%s)", type(exc).__name__)
            self.send_error(ErrorCode.UNAVAILABLE,
                            "the service is briefly unavailable; send that again in a moment")
        except Exception:
            # Nothing a client sends may take the server down; log without its content.
            log.exception("unexpected error handling a frame")
            self.send_error(ErrorCode.UNAVAILABLE, "the server could not handle that")

    def strike(self, exc: ProtocolError) -> None:
        self.send_error(exc.code, exc.message, exc.detail)
        if exc.code not in ABUSE_CODES:
            return
        now = time.monotonic()
        self.strikes.append(now)
        while self.strikes and self.strikes[0] < now - STRIKE_WINDOW:
            self.strikes.popleft()
        if len(self.strikes) >= MAX_STRIKES:
            log.warning(
                "closing socket after %d protocol errors (last %s, participant %s)",
                len(self.strikes), exc.code.value,
                self.participant.pid if self.participant else "-",
            )
            self.connection.close(1008, "policy_violation")

    async def dispatch(self, message: ClientMessage) -> None:
        participant = self.participant
        if isinstance(message, Ping):
            self.connection.send('{"type":"pong"}')
            return
        if self.knock is not None:
            raise ProtocolError(ErrorCode.FORBIDDEN, "wait until the handler lets you in")
        if isinstance(message, Hello):
            if participant is not None:
                raise ProtocolError(ErrorCode.ALREADY_JOINED, "this socket has already joined")
            await self.hello(message)
            return
        if participant is None:
            raise ProtocolError(ErrorCode.HELLO_FIRST, "send hello first")
        if not isinstance(message, Control):
            self.endpoint.counts.relayed += 1
        if isinstance(message, Signal):
            body: dict[str, Any] = {"type": "signal", "from": participant.pid}
            if message.description is not None:
                body["description"] = message.description
            else:
                body["candidate"] = message.candidate
            await self.hub.route(participant, message.to, body)
        elif isinstance(message, Chat):
            self.require_session(participant)
            chat: dict[str, Any] = {
                "type": "chat", "id": secrets.token_hex(6), "from": participant.pid,
                "role": participant.role.value, "name": participant.admission.display_name,
                "ts": time.time(),
            }
            chat.update({"text": message.text} if message.text is not None
                        else {"canned": message.canned})
            if message.cid is not None:
                chat["cid"] = message.cid
            await self.hub.broadcast(participant.session, chat)
            await self.hub.remember(participant.session, chat)
            await self.hooks.said(participant, chat)
        elif isinstance(message, Advice):
            self.require_session(participant)
            if not participant.role.is_staff:
                raise ProtocolError(ErrorCode.FORBIDDEN, "advice is for staff only")
            advice = {
                "type": "advice", "id": secrets.token_hex(6), "from": participant.pid,
                "role": participant.role.value, "name": participant.admission.display_name,
                "text": message.text, "ts": time.time(),
            }
            if message.cid is not None:
                advice["cid"] = message.cid
            await self.hub.broadcast(participant.session, advice, roles=STAFF_ROLES)
            await self.hub.remember(participant.session, advice)
            await self.hooks.said(participant, advice)
        elif isinstance(message, Location):
            self.require_session(participant)
            if participant.role is not Role.VICTIM:
                raise ProtocolError(ErrorCode.FORBIDDEN, "only the caller shares a location")
            location = {
                "type": "location", "from": participant.pid, "lat": message.lat,
                "lon": message.lon, "accuracy": message.accuracy, "ts": message.ts,
            }
            await self.hub.broadcast(participant.session, location, roles=STAFF_ROLES)
            await self.hub.remember(participant.session, location)
            await self.hooks.said(participant, location)
        elif isinstance(message, Control):
            if message.op == "leave":
                await self.hub.leave(participant, "left")
                self.participant = None
                return
            await self.hooks.control(participant, message)

    @staticmethod
    def require_session(participant: Participant) -> None:
        if is_lobby(participant.session):
            raise ProtocolError(ErrorCode.FORBIDDEN, "join a session first")

    async def hello(self, hello: Hello) -> None:
        resumed = hello.resume is not None
        if hello.resume is not None:
            resume = hello.resume
            # Vetted before it is attached, so a refused resume leaves the old socket alone.
            extra = await self.hooks.welcome(
                self.request, await self.hub.check_resume(resume.pid, resume.secret)
            )
            # Messages for the participant wait behind the welcome and the replayed frames.
            self.connection.hold()
            try:
                participant, missed = await self.hub.resume(
                    resume.pid, resume.secret, resume.last_seq, self.connection
                )
            except BaseException:
                self.connection.release([])
                raise
            self.participant = participant
            self.endpoint.counts.resumes += 1
        else:
            admission = await self.hooks.admit(self.request, hello)
            # A caller's fresh hello replaces the caller's place only when it proves that
            # place's own secret (the same page, reloaded); any other device waits.
            replace = admission.role is not Role.VICTIM or await self._proves_place(
                hello, admission)
            try:
                await self.enter(admission, replace=replace)
            except PlaceTaken:
                await self.wait_at_door(admission)
            return
        await self._welcome(participant, resumed, extra, missed)

    async def _proves_place(self, hello: Hello, admission: Admission) -> bool:
        if hello.replaces is None:
            return False
        try:
            earlier = await self.hub.check_resume(hello.replaces.pid, hello.replaces.secret)
        except ProtocolError:
            return False
        return earlier.session == admission.session and earlier.role is admission.role

    async def enter(self, admission: Admission, *, replace: bool) -> None:
        """A fresh place in the session for this socket, welcomed."""
        self.connection.hold()
        try:
            participant = await self.hub.admit(admission, self.connection, replace=replace)
        except BaseException:
            self.connection.release([])
            raise
        try:
            extra = await self.hooks.welcome(self.request, participant)
        except BaseException:
            # Refused after all: it leaves the session; this socket stays open for the
            # error and another hello.
            participant.connection = None
            await self.hub.leave(participant, "refused")
            self.connection.release([])
            raise
        self.participant = participant
        await self._welcome(participant, False, extra, [])

    # -- a second device at the door (decision 38) ------------------------------------------

    async def wait_at_door(self, admission: Admission) -> None:
        """Hold this socket, with nothing of the call, until the handler admits or refuses."""
        decided: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def answer(decision: str) -> None:
            if not decided.done():
                decided.set_result(decision)

        self.knock = await self.hub.knock(admission.session, admission.credential, answer)
        self.connection.send(encode({"type": "waiting", "reason": "caller_in_call"}))
        self._door = asyncio.get_running_loop().create_task(self._at_door(admission, decided))
        await self.hooks.knocked(self.knock)

    async def _at_door(self, admission: Admission, decided: asyncio.Future[str]) -> None:
        decision = await decided
        try:
            if decision == ADMIT:
                await self.enter(admission, replace=True)
                return
        except ProtocolError as exc:
            self.send_error(exc.code, exc.message, exc.detail)
            decision = "refused"
        except Exception:
            log.exception("could not admit a waiting device")
            decision = "unavailable"
        finally:
            self.knock = None
        self.connection.send(encode({"type": "bye", "reason": decision}))
        self.connection.close(1000, decision)

    async def leave_door(self) -> None:
        """The socket closes: a device still waiting withdraws."""
        knock, self.knock = self.knock, None
        if self._door is not None and not self._door.done():
            self._door.cancel()
        if knock is None:
            return
        try:
            if await self.hub.withdraw_knock(knock):
                await self.hooks.withdrawn(knock)
        except Exception:
            log.warning("could not withdraw waiting device %s", knock.id)

    async def _welcome(self, participant: Participant, resumed: bool, extra: dict[str, Any],
                       missed: list[str]) -> None:
        welcome = encode({
            "type": "welcome",
            "v": PROTOCOL_VERSION,
            "pid": participant.pid,
            "role": participant.role.value,
            "session": None if is_lobby(participant.session) else participant.session,
            "resume_secret": participant.resume_secret,
            "resumed": resumed,
            "peers": await self.hub.peers_of(participant)
            if not is_lobby(participant.session) else [],
            **extra,
        })
        self.connection.release([welcome, *missed])
        await self.hooks.joined(participant, resumed)
