"""The relay load generator: pairs of WebSocket clients bouncing an SDP-sized message.

The same client code drives every server; only a `Dialect` differs (the URL, the first frame,
how "joined" and a relayed message look). Each pair member has its own address, so member A
can sit on one node and member B on another.

A pair's round trip: A sends the offer, the server relays it to B, B's reader sends its own
offer back at once, the server relays it to A. Two relayed messages per round trip. Closed
loop: A sends the next as soon as the last came back; paced: one round trip per `interval`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from bench.common import ServerProcess, cpu_seconds, percentile
from bench.sdp import SDP

try:
    import orjson

    def loads(text: str) -> Any:
        return orjson.loads(text)

    def dumps(obj: Any) -> str:
        return orjson.dumps(obj).decode()
except ImportError:  # pragma: no cover - the bench extra installs orjson
    def loads(text: str) -> Any:
        return json.loads(text)

    def dumps(obj: Any) -> str:
        return json.dumps(obj, separators=(",", ":"))


STALL_SECONDS = 5.0


class JoinRefused(RuntimeError):
    """The server answered the first frame with an error."""


class Dialect(Protocol):
    name: str

    def joined(self, message: dict[str, Any], endpoint: Endpoint) -> str | None:
        """The endpoint's own id once `message` shows it has joined; None to keep waiting."""

    def frame(self, to: str) -> str:
        """The text of one SDP-sized message to peer `to`."""

    def is_relay(self, message: dict[str, Any]) -> bool:
        """Whether `message` is a message relayed from the peer."""


class ErvDialect:
    """This server's protocol (docs/protocol.md): hello, welcome, signal."""

    name = "erv"

    def joined(self, message: dict[str, Any], endpoint: Endpoint) -> str | None:
        if message.get("type") == "welcome":
            return str(message["pid"])
        if message.get("type") == "error":
            raise JoinRefused(f"{message.get('code')}: {message.get('message')}")
        return None

    def frame(self, to: str) -> str:
        return dumps({"type": "signal", "to": to,
                      "description": {"type": "offer", "sdp": SDP}})

    def is_relay(self, message: dict[str, Any]) -> bool:
        return message.get("type") == "signal"


class FloorDialect(ErvDialect):
    """The minimal relay (bench/floor_relay.py) speaks a subset of ours."""

    name = "floor"


class PeerJsDialect:
    """PeerJS server: id and token in the query, OPEN, then {type, dst, payload} frames."""

    name = "peerjs"

    def joined(self, message: dict[str, Any], endpoint: Endpoint) -> str | None:
        kind = message.get("type")
        if kind == "OPEN":
            return endpoint.name
        if kind in ("ERROR", "ID-TAKEN"):
            raise JoinRefused(f"{kind}: {message.get('payload')}")
        return None

    def frame(self, to: str) -> str:
        # What the PeerJS client library sends for a media call's offer.
        return dumps({"type": "OFFER", "dst": to, "payload": {
            "sdp": {"type": "offer", "sdp": SDP}, "type": "media",
            "connectionId": "mc_bench", "metadata": None,
        }})

    def is_relay(self, message: dict[str, Any]) -> bool:
        return message.get("type") == "OFFER"


@dataclass
class Endpoint:
    """How one pair member reaches its server."""

    url: str
    dialect: Dialect
    headers: dict[str, str] = field(default_factory=dict)
    hello: str | None = None  # the first frame, if the dialect sends one
    name: str = ""  # the id the client chose, where the dialect lets it choose


class Link:
    """One connected socket and the task reading it."""

    def __init__(self, endpoint: Endpoint, ws: aiohttp.ClientWebSocketResponse, own_id: str,
                 first: list[dict[str, Any]]) -> None:
        self.endpoint = endpoint
        self.ws = ws
        self.id = own_id
        self.reply: str | None = None  # sent back at once on each relayed message (member B)
        self.waiter: asyncio.Future[float] | None = None  # a round trip in flight (member A)
        self.relayed = 0
        self.other = len(first)
        self.errors: list[str] = [f"{m.get('code')}" for m in first if m.get("type") == "error"]
        self.closed: str | None = None
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        is_relay = self.endpoint.dialect.is_relay
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                message = loads(msg.data)
                if not is_relay(message):
                    self.other += 1
                    if message.get("type") in ("error", "ERROR"):
                        self.errors.append(str(message.get("code") or message.get("payload")))
                    continue
                self.relayed += 1
                if self.reply is not None:
                    await self.ws.send_str(self.reply)
                elif self.waiter is not None and not self.waiter.done():
                    self.waiter.set_result(time.perf_counter())
        except (aiohttp.ClientError, ConnectionError) as exc:
            self.closed = f"{type(exc).__name__}: {exc}"
        finally:
            if self.closed is None:
                self.closed = f"closed (code {self.ws.close_code})"
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(ConnectionError(self.closed))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.reader


@dataclass
class Pair:
    a: Link
    b: Link
    frame: str = ""  # A's offer to B
    rtts: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds)
    failure: str | None = None

    def wire(self) -> None:
        self.frame = self.a.endpoint.dialect.frame(self.b.id)
        self.b.reply = self.b.endpoint.dialect.frame(self.a.id)


@dataclass
class RelayResult:
    pairs: int
    seconds: float
    relayed: int
    msgs_per_s: float
    cpu_seconds: float
    cpu_us_per_msg: float
    rtt_p50_ms: float
    rtt_p99_ms: float
    round_trips: int
    loadgen_cores: float  # CPU the load generator itself used, in cores (2 on this machine)
    server_rss_mb: float  # the servers' resident memory at the end of the window
    helper_cpu_us_per_msg: float | None  # CPU of helper processes (redis-server), if any
    failures: list[str]
    server_log: list[str] = field(default_factory=list)  # warnings the servers logged

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Fleet:
    """Every socket of a run, over one HTTP client with no connection cap."""

    def __init__(self) -> None:
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
        )
        self.links: list[Link] = []

    async def connect(self, endpoint: Endpoint, within: float = 30.0) -> Link:
        ws = await self.http.ws_connect(endpoint.url, headers=endpoint.headers, heartbeat=None,
                                        autoping=True, max_msg_size=1 << 20)
        first: list[dict[str, Any]] = []
        try:
            if endpoint.hello is not None:
                await ws.send_str(endpoint.hello)
            async with asyncio.timeout(within):
                while True:
                    msg = await ws.receive()
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        raise ConnectionError(f"{endpoint.url}: closed before joining "
                                              f"({msg.type.name}, code {ws.close_code})")
                    message = loads(msg.data)
                    own = endpoint.dialect.joined(message, endpoint)
                    if own is not None:
                        break
                    first.append(message)
        except BaseException:
            await ws.close()
            raise
        link = Link(endpoint, ws, own, first)
        self.links.append(link)
        return link

    async def connect_all(self, endpoints: Sequence[Endpoint], concurrency: int = 32) -> list[Link]:
        gate = asyncio.Semaphore(concurrency)

        async def one(endpoint: Endpoint) -> Link:
            async with gate:
                return await self.connect(endpoint)

        return list(await asyncio.gather(*(one(e) for e in endpoints)))

    async def pairs(self, members: Sequence[tuple[Endpoint, Endpoint]],
                    concurrency: int = 32) -> list[Pair]:
        """Connect A then B of every pair (A first: the handler is in before the caller)."""
        a_links = await self.connect_all([a for a, _ in members], concurrency)
        b_links = await self.connect_all([b for _, b in members], concurrency)
        pairs = [Pair(a, b) for a, b in zip(a_links, b_links, strict=True)]
        for pair in pairs:
            pair.wire()
        return pairs

    async def close(self) -> None:
        await asyncio.gather(*(link.close() for link in self.links))
        self.links.clear()
        await self.http.close()


async def _bounce(pair: Pair, stop: asyncio.Event, interval: float | None) -> None:
    loop = asyncio.get_running_loop()
    a = pair.a
    next_at = loop.time() + (random.random() * interval if interval else 0.0)  # noqa: S311
    try:
        while not stop.is_set():
            if interval:
                delay = next_at - loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    if stop.is_set():
                        return
                next_at = max(next_at + interval, loop.time())
            a.waiter = loop.create_future()
            start = time.perf_counter()
            await a.ws.send_str(pair.frame)
            end = await asyncio.wait_for(a.waiter, timeout=30)
            pair.rtts.append((start, end - start))
    except (ConnectionError, TimeoutError, aiohttp.ClientError) as exc:
        pair.failure = f"{type(exc).__name__}: {str(exc) or 'no answer within 30 s'}"


async def measure(pairs: Sequence[Pair], servers: Sequence[ServerProcess], *, seconds: float,
                  warmup: float, interval: float | None = None,
                  helpers: Sequence[ServerProcess] = (),
                  progress: Callable[[str], None] | None = None) -> RelayResult:
    """Run every pair for warmup + seconds; count what was relayed inside the window.
    CPU is the servers'; `helpers` (a redis-server, say) are counted on their own."""
    stop = asyncio.Event()
    for pair in pairs:
        pair.rtts.clear()
        pair.failure = None
    # The load generator's own heap is large with thousands of sockets: keep its full
    # collections out of the window, so its pauses do not count as the server's latency.
    gc.collect()
    gc.freeze()
    tasks = [asyncio.get_running_loop().create_task(_bounce(p, stop, interval)) for p in pairs]

    def relayed() -> int:
        return sum(p.a.relayed + p.b.relayed for p in pairs)

    await asyncio.sleep(warmup)
    own0 = cpu_seconds([os.getpid()])
    helper0 = sum(h.cpu() for h in helpers)
    count0, cpu0, t0 = relayed(), sum(s.cpu() for s in servers), time.perf_counter()
    await asyncio.sleep(seconds)
    count1, cpu1, t1 = relayed(), sum(s.cpu() for s in servers), time.perf_counter()
    own1 = cpu_seconds([os.getpid()])
    helper1 = sum(h.cpu() for h in helpers)
    rss = sum(s.rss() for s in servers)
    stop.set()
    # A pair still waiting a while after the window lost a message on the way.
    _, stalled = await asyncio.wait(tasks, timeout=STALL_SECONDS)
    for task in stalled:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for pair, task in zip(pairs, tasks, strict=True):
        if task in stalled and pair.failure is None:
            pair.failure = (f"a relayed message never arrived (no answer {STALL_SECONDS:.0f} s "
                            f"after the window)")
    gc.unfreeze()
    rtts = [rtt for p in pairs for start, rtt in p.rtts if t0 <= start and start + rtt <= t1]
    kinds = Counter(f for p in pairs if (f := p.failure))
    kinds.update(f"error frame {e}" for p in pairs for link in (p.a, p.b) for e in link.errors)
    failures = [f"{count} pairs: {kind}" for kind, count in kinds.most_common()]
    msgs = count1 - count0
    elapsed = t1 - t0
    cpu = cpu1 - cpu0
    if progress is not None:
        progress(f"{len(pairs)} pairs: {msgs / elapsed:.0f} msgs/s, "
                 f"p99 {percentile(rtts, 0.99) * 1000:.1f} ms, "
                 f"{cpu / msgs * 1e6 if msgs else float('nan'):.1f} us CPU/msg")
    return RelayResult(
        pairs=len(pairs), seconds=elapsed, relayed=msgs, msgs_per_s=msgs / elapsed,
        cpu_seconds=cpu, cpu_us_per_msg=cpu / msgs * 1e6 if msgs else float("nan"),
        rtt_p50_ms=percentile(rtts, 0.5) * 1000, rtt_p99_ms=percentile(rtts, 0.99) * 1000,
        round_trips=len(rtts), loadgen_cores=(own1 - own0) / elapsed,
        server_rss_mb=rss / 2**20,
        helper_cpu_us_per_msg=(helper1 - helper0) / msgs * 1e6 if helpers and msgs else None,
        failures=failures[:5],
    )


async def probe(pair: Pair, within: float = 5.0) -> str | None:
    """One round trip on `pair`; why it failed, or None."""
    a = pair.a
    a.waiter = asyncio.get_running_loop().create_future()
    try:
        await a.ws.send_str(pair.frame)
        await asyncio.wait_for(a.waiter, timeout=within)
    except (ConnectionError, TimeoutError, aiohttp.ClientError) as exc:
        errors = ", ".join(a.errors + pair.b.errors) or "none"
        return f"no round trip within {within:.0f} s ({type(exc).__name__}; errors: {errors})"
    return None
