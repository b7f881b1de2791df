"""Property-based fuzzing of the running server: thousands of generated frames at /ws and
generated bodies at every POST/PUT route, on both backends.

What must hold whatever comes in: no 500 (and no error the server logs as unexpected), the
server keeps answering, and another session's caller and handler notice nothing: they get no
frame while the fuzz runs and can still talk to each other afterwards.

The fuzz runs Hypothesis in a worker thread; each example is run on the test's event loop,
where the server and the sockets live, so one server and its sockets serve every example.
Sockets the server rightly closes (ten protocol errors, a frame over the transport limit, a
call the fuzz ended) are resumed or replaced. The client keeps to the per-socket rate limit,
so every frame it sends is really parsed; rate limiting itself is tested in
test_malformed_frames.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signaling.endpoint import ABUSE_CODES, MAX_STRIKES, RATE_BURST, RATE_PER_SECOND
from signaling.protocol import SERVER_TYPES, ErrorCode
from tests.support.calls import Call, barrier, chat_round_trip, open_call
from tests.support.fuzz_inputs import CONTENT_TYPES, bodies, frames
from tests.support.live import LiveServer, SignalClient, StaffClient

FRAMES = 2000
BODIES = 2000
BODIES_PER_EXAMPLE = 4
FRAMES_PER_EXAMPLE = (3, 8)
BARRIER_SECONDS = 30.0  # a socket that does not answer a ping by then has stopped serving


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)


OnLoop = Callable[[Coroutine[Any, Any, None]], None]


async def in_thread(run: Callable[[OnLoop], None]) -> None:
    """Run Hypothesis (`run`) off the loop; it hands each example's coroutine back to it."""
    loop = asyncio.get_running_loop()

    def on_loop(coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    await asyncio.to_thread(run, on_loop)


def unexpected_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the server logged as a failure of its own (a 500, an unhandled frame)."""
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records
            if r.levelno >= logging.ERROR and r.name.startswith("erv")]


# -- /ws -----------------------------------------------------------------------------------

class Pacer:
    """The server's token bucket, mirrored a little more strictly on the client's side."""

    def __init__(self) -> None:
        self.rate = RATE_PER_SECOND * 0.8
        self.tokens = RATE_BURST - 10
        self.stamp = time.monotonic()

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(RATE_BURST - 10, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await asyncio.sleep((1 - self.tokens) / self.rate)


@dataclass
class Actor:
    """One fuzzed socket: the fuzz call's caller or handler, a specialist's lobby socket, or
    a socket that never joined."""

    kind: str
    ws: aiohttp.ClientWebSocketResponse | None = None
    pid: str = ""
    secret: str = ""
    last_seq: int = 0
    pacer: Pacer = field(default_factory=Pacer)
    strikes: int = 0  # errors on this socket that count towards its close (MAX_STRIKES)

    @property
    def alive(self) -> bool:
        return self.ws is not None and not self.ws.closed

    def fresh(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.pacer, self.strikes = ws, Pacer(), 0

    def adopt(self, client: SignalClient) -> None:
        self.fresh(client.ws)
        self.pid, self.secret = client.pid, str(client.welcome["resume_secret"])
        self.last_seq = client.last_seq


class FrameFuzz:
    """The fuzz call (its handler, caller and a specialist) and what came back."""

    def __init__(self, live: LiveServer) -> None:
        self.live = live
        self.actors = {kind: Actor(kind) for kind in ("caller", "handler", "specialist", "anon")}
        self.sent = 0
        self.unread = 0  # sent on a socket closed before it could read them all
        self.problems: list[str] = []
        self.credential = ""
        self.calls = 0
        self.reconnects = 0
        self.answers: Counter[str] = Counter()  # what came back: frame types, error codes

    async def start(self) -> None:
        self.handler_staff = await self.live.staff_client("fiona", "handler")
        self.specialist_staff = await self.live.staff_client("sofia", "specialist")
        await self.new_call()

    async def new_call(self) -> None:
        """A fresh session for the fuzz: the last one was ended, or its places are gone."""
        for kind in ("caller", "handler"):
            await self.drop(self.actors[kind])
        staff = self.handler_staff
        session = await staff.create_session(ref=f"CAD-F{self.calls}")
        handler = await staff.signal(session)
        redeemed = await self.live.redeem(self.live.latest_token())
        caller = await SignalClient.connect(self.live, self.live.new_http())
        await caller.hello(credential=redeemed["credential"])
        self.credential = str(redeemed["credential"])
        self.actors["handler"].adopt(handler)
        self.actors["caller"].adopt(caller)
        self.calls += 1

    async def drop(self, actor: Actor) -> None:
        if actor.ws is not None:
            with contextlib.suppress(Exception):
                await actor.ws.close()
        actor.ws = None

    async def revive(self, actor: Actor) -> None:
        """Resume a closed participant with its own secret, or start over."""
        self.reconnects += 1
        await self.drop(actor)
        if actor.kind == "anon":
            actor.fresh(await self.live.new_http().ws_connect(f"{self.live.url}/ws",
                                                              heartbeat=None))
            return
        http = (self.handler_staff.http if actor.kind == "handler" else
                self.specialist_staff.http if actor.kind == "specialist" else
                self.live.new_http())
        if actor.pid:
            ws = await http.ws_connect(f"{self.live.url}/ws", heartbeat=None)
            await ws.send_str(json.dumps({"type": "hello", "v": 1, "resume": {
                "pid": actor.pid, "secret": actor.secret, "last_seq": actor.last_seq}}))
            welcome = await self.first_reply(ws)
            if welcome.get("type") == "welcome":
                actor.fresh(ws)
                return
            await ws.close()
        if actor.kind == "specialist":
            lobby = await self.specialist_staff.signal(None)
            actor.adopt(lobby)
        else:
            await self.new_call()

    async def first_reply(self, ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
        """The welcome or the error that answers a hello (replayed frames come after)."""
        while True:
            msg = await ws.receive(timeout=BARRIER_SECONDS)
            if msg.type != aiohttp.WSMsgType.TEXT:
                return {}
            frame = self.check(json.loads(msg.data))
            if frame.get("type") in ("welcome", "error"):
                return frame

    def check(self, frame: dict[str, Any]) -> dict[str, Any]:
        self.answers[str(frame.get("code") or frame.get("type"))] += 1
        if frame.get("type") not in SERVER_TYPES:
            self.problems.append(f"undocumented frame type: {frame!r:.200}")
        if frame.get("type") == "error" and (
            frame.get("code") not in {code.value for code in ErrorCode}
            or frame.get("code") == ErrorCode.UNAVAILABLE
        ):
            self.problems.append(f"server failure answered to the fuzz: {frame!r:.200}")
        return frame

    async def throw(self, kind: str, batch: list[str | bytes]) -> None:
        actor = self.actors[kind]
        if not actor.alive:
            await self.revive(actor)
        assert actor.ws is not None
        ws = actor.ws
        sent = 0
        # Never more frames than the socket has strikes left: each may be one, and the server
        # reads nothing after the one that closes the socket. So every frame counted is read.
        batch = batch[:max(1, MAX_STRIKES - actor.strikes)]
        try:
            for frame in batch:
                await actor.pacer.take()
                if isinstance(frame, bytes):
                    await ws.send_bytes(frame)
                else:
                    await ws.send_str(frame)
                sent += 1
            await actor.pacer.take()
            await ws.send_str('{"type":"ping"}')
            answered = await self.barrier(actor, ws)
        except (ConnectionError, RuntimeError):
            answered = False  # the server closed it meanwhile
        self.sent += sent
        if not answered and actor.strikes < MAX_STRIKES:
            # Closed before the pong, and not for the tenth strike (which the batch's length
            # makes its last frame): the call ended, say. Frames after that were not read.
            self.unread += sent

    async def barrier(self, actor: Actor, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """Read until the ping's pong (every frame before it was handled: True) or the
        close (False)."""
        while True:
            try:
                msg = await ws.receive(timeout=BARRIER_SECONDS)
            except TimeoutError:
                self.problems.append(f"{actor.kind}'s socket stopped answering")
                await self.drop(actor)
                return False
            if msg.type != aiohttp.WSMsgType.TEXT:
                if ws.close_code not in (1000, 1008, 1009, None):
                    self.problems.append(f"{actor.kind}'s socket closed with {ws.close_code}")
                return False
            frame = self.check(json.loads(msg.data))
            if frame.get("type") == "error" and frame.get("code") in ABUSE_CODES:
                actor.strikes += 1
            if isinstance(frame.get("seq"), int):
                actor.last_seq = frame["seq"]
            if frame.get("type") == "pong":
                return True


@dataclass
class Witness:
    """Another session's caller and handler, read all through the fuzz (reading also answers
    the server's heartbeat pings): what they get meanwhile is kept, up to a pong of their own."""

    call: Call
    watchers: list[asyncio.Task[list[Any]]] = field(default_factory=list)

    @classmethod
    async def join(cls, live: LiveServer) -> Witness:
        call = await open_call(live, "wendy", ref="CAD-W")

        def joined(frame: dict[str, Any]) -> bool:
            return frame["type"] == "status" and frame.get("caller", {}).get("state") == "joined"

        while not any(joined(f) for f in call.handler.received):
            await call.handler.expect("status")
        witness = cls(call)
        for client in (call.caller, call.handler):
            await barrier(client)  # settled: nothing of its own joining is still on the way
            witness.watchers.append(asyncio.create_task(witness.watch(client)))
        return witness

    @staticmethod
    async def watch(client: SignalClient) -> list[Any]:
        got: list[Any] = []
        while True:
            msg = await client.ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                return [*got, f"closed {client.ws.close_code}"]
            frame = json.loads(msg.data)
            if frame.get("type") == "pong":
                return got
            got.append(frame)

    async def quiet_and_talking(self) -> None:
        """Nothing reached the other session during the fuzz, and it still talks."""
        for client, watcher in zip((self.call.caller, self.call.handler), self.watchers,
                                   strict=True):
            if not watcher.done():
                await client.send({"type": "ping"})
            assert await watcher == [], "another session was disturbed"
        await chat_round_trip(self.call.caller, self.call.handler, "after the fuzz")
        await chat_round_trip(self.call.handler, self.call.caller, "and back")


async def test_generated_frames_break_nothing(live: LiveServer,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    witness = await Witness.join(live)
    fuzz = FrameFuzz(live)
    await fuzz.start()
    pids = [witness.call.caller.pid, witness.call.handler.pid, fuzz.actors["caller"].pid,
            fuzz.actors["handler"].pid]
    low, high = FRAMES_PER_EXAMPLE
    examples = FRAMES // low + 20

    def run(on_loop: OnLoop) -> None:
        @fuzz_settings(examples)
        @given(st.sampled_from(sorted(fuzz.actors)),
               st.lists(frames(pids, [fuzz.credential, "x" * 43]), min_size=low, max_size=high))
        def one(kind: str, batch: list[str | bytes]) -> None:
            on_loop(fuzz.throw(kind, batch))

        one()

    await in_thread(run)
    print(f"frames: {fuzz.sent} sent ({fuzz.unread} maybe unread), {fuzz.reconnects} "
          f"reconnects, {fuzz.calls} calls, answers {dict(fuzz.answers.most_common())}")
    assert fuzz.sent - fuzz.unread >= FRAMES, (fuzz.sent, fuzz.unread)
    assert not fuzz.problems, fuzz.problems[:20]
    assert not unexpected_errors(caplog), unexpected_errors(caplog)[:20]
    await witness.quiet_and_talking()
    # Still serving: a new call starts and connects.
    fresh = await open_call(live, "nina", ref="CAD-N")
    await chat_round_trip(fresh.caller, fresh.handler, "new call after the fuzz")


# -- HTTP bodies ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Route:
    method: str
    template: str  # the router's canonical path: /api/sessions/{session_id}/end

    def fill(self, values: dict[str, str]) -> str:
        path = self.template
        for name, value in values.items():
            path = path.replace("{" + name + "}", quote(value, safe=""))
        return path


def state_changing_routes(live: LiveServer) -> list[Route]:
    routes = {Route(r.method, r.resource.canonical) for r in live.app.router.routes()
              if r.method in ("POST", "PUT", "PATCH", "DELETE") and r.resource is not None}
    return sorted(routes, key=lambda r: (r.template, r.method))


class BodyFuzz:
    """Signed-in staff of every role, a live session of the fuzz's own, and what came back.

    Each route is mostly sent by a role it lets in (found by asking it, below), so the body
    is really read; now and then by any role, and now and then without the CSRF header.
    """

    ROLES = ("handler", "specialist", "supervisor", "auditor", "admin")
    LIVE = "<the fuzz session>"  # stands for the fuzz's current session in a path
    FRESH_EVERY = 50  # a new session this often: the fuzz ends sessions, which stops routes

    def __init__(self, live: LiveServer, routes: list[Route]) -> None:
        self.live = live
        self.all_routes = routes
        self.sent = 0
        self.problems: list[str] = []
        self.routes: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.seconds: Counter[str] = Counter()  # time spent on each route
        self.allowed: dict[Route, list[str]] = {}

    async def start(self) -> None:
        self.staff: dict[str, StaffClient] = {
            role: await self.live.staff_client(f"fuzz-{role}", role) for role in self.ROLES}
        self.anonymous = self.live.new_http()
        await self.fresh_session()
        for route in self.all_routes:
            roles = []
            for role in self.ROLES:
                status, _ = await self.request(route, role, {}, b"[", "application/json",
                                               with_csrf=True)
                if status not in (401, 403):
                    roles.append(role)
            self.allowed[route] = roles or list(self.ROLES)
        await self.fresh_session()

    async def fresh_session(self) -> None:
        self.session = await self.staff["handler"].create_session(ref="CAD-FZ")
        redeemed = await self.live.redeem(self.live.latest_token())
        self.credential = str(redeemed["credential"])

    async def request(self, route: Route, role: str, params: dict[str, str], body: bytes,
                      content_type: str, *, with_csrf: bool) -> tuple[int, str]:
        # Signing in and out are for a browser without a staff cookie: with one, /logout
        # would end the fuzz's own sign-in.
        cookieless = route.template in ("/login", "/logout")
        staff = self.staff[role]
        http = self.anonymous if cookieless else staff.http
        headers = {"Origin": self.live.url, "Accept": "application/json"}
        if with_csrf and not cookieless:
            headers["X-CSRF-Token"] = staff.csrf
        if content_type:
            headers["Content-Type"] = content_type
        if route.template.startswith("/j/"):
            headers["Authorization"] = f"Bearer {self.credential}"
        values = {name: self.session if value == self.LIVE else value
                  for name, value in params.items()}
        values.setdefault("session_id", self.session)
        async with http.request(route.method, self.live.url + route.fill(values), data=body,
                                headers=headers, allow_redirects=False) as response:
            return response.status, await response.text(errors="replace")

    async def post(self, route: Route, pick: int, params: dict[str, str], body: bytes,
                   content_type: str, with_csrf: bool) -> None:
        if self.sent and self.sent % self.FRESH_EVERY == 0:
            await self.fresh_session()
        roles = self.allowed[route] if pick < 90 else self.ROLES
        role = roles[pick % len(roles)]
        began = time.monotonic()
        status, text = await self.request(route, role, params, body, content_type,
                                          with_csrf=with_csrf)
        self.seconds[route.template] += time.monotonic() - began
        self.sent += 1
        self.routes[route.template] += 1
        self.statuses[status] += 1
        if status >= 500:
            self.problems.append(f"{route.method} {route.template} {params} ({role}, "
                                 f"{content_type!r}, {body[:120]!r}): {status} {text[:200]}")


async def test_generated_bodies_break_nothing(live: LiveServer,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    witness = await Witness.join(live)
    routes = state_changing_routes(live)
    assert any(r.template == "/api/sessions" for r in routes), routes
    fuzz = BodyFuzz(live, routes)
    await fuzz.start()
    placeholders = {"session_id": [BodyFuzz.LIVE], "answer": ["accept", "decline"],
                    "action": ["end", "resend", "revoke", "call-mode"]}

    def param_values(route: Route) -> st.SearchStrategy[dict[str, str]]:
        names = [part[1:-1].split(":")[0] for part in route.template.split("/")
                 if part.startswith("{")]
        return st.fixed_dictionaries({
            name: st.sampled_from(placeholders.get(name) or ["x"]) | st.text(max_size=80)
            for name in names})

    one_request = st.tuples(
        st.sampled_from(routes).flatmap(lambda r: st.tuples(st.just(r), param_values(r))),
        st.integers(0, 99), bodies(), st.sampled_from(CONTENT_TYPES),
        st.integers(0, 9).map(lambda n: n != 0))

    async def send(batch: list[Any]) -> None:
        for (route, params), pick, body, content_type, with_csrf in batch:
            await fuzz.post(route, pick, params, body, content_type, with_csrf)

    def run(on_loop: OnLoop) -> None:
        # A few requests per example: Hypothesis's own cost is per example.
        @fuzz_settings(BODIES // BODIES_PER_EXAMPLE)
        @given(st.lists(one_request, min_size=BODIES_PER_EXAMPLE, max_size=BODIES_PER_EXAMPLE))
        def one(batch: list[Any]) -> None:
            on_loop(send(batch))

        one()

    await in_thread(run)
    print(f"bodies: {fuzz.sent} sent, statuses {dict(fuzz.statuses.most_common())}, "
          f"slowest routes {[(r, round(s, 1)) for r, s in fuzz.seconds.most_common(4)]}, "
          f"roles {({r.template: roles for r, roles in fuzz.allowed.items()})}")
    assert fuzz.sent >= BODIES, fuzz.sent
    assert not fuzz.problems, fuzz.problems[:20]
    assert not unexpected_errors(caplog), unexpected_errors(caplog)[:20]
    missed = [r.template for r in routes if r.template not in fuzz.routes]
    assert not missed, f"routes the fuzz never reached: {missed}"
    await witness.quiet_and_talking()
    async with fuzz.anonymous.get(f"{live.url}/healthz") as response:
        assert response.status == 200
