"""Part 2: connect time, from the caller's redeem request to the handler's first decoded video
frame, with real aiortc peers on loopback signalling through `erv run`.

The order is the browsers' (web/static/js/mesh.js): the caller redeems its link and joins;
the handler, told `peer joined`, offers (receive-only audio and video); the caller answers with
its camera; both trickle their ICE candidates. Both peers live in this process, so the time a
signal frame spends between them (send to receipt) is measured on one clock: that, plus the
redeem request and the join, is the part the server adds.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import env_int, log, percentile
from bench.erv_setup import Control, redeem, ws_url
from bench.servers import start_erv
from tests.support.live import SignalClient
from tests.support.peers import Pump


def _key(sender: str, message: dict[str, Any]) -> tuple[str, str]:
    if message.get("description"):
        return sender, "d:" + str(message["description"]["type"])
    candidate = message.get("candidate")
    return sender, "c:" + (str(candidate["candidate"]) if candidate else "end")


@dataclass
class Clock:
    """When each signal frame left one peer and reached the other."""

    sent: dict[tuple[str, str], float] = field(default_factory=dict)
    received: dict[tuple[str, str], float] = field(default_factory=dict)

    def relay_ms(self, key: tuple[str, str]) -> float:
        return (self.received[key] - self.sent[key]) * 1000

    def relays_ms(self) -> list[float]:
        return [self.relay_ms(k) for k in self.sent if k in self.received]


class TimedClient(SignalClient):
    """A SignalClient that notes when signal frames go out and come in."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, clock: Clock) -> None:
        super().__init__(ws)
        self.clock = clock

    async def send(self, message: dict[str, Any]) -> None:
        if message.get("type") == "signal":
            self.clock.sent[_key(self.welcome.get("pid", ""), message)] = time.perf_counter()
        await self.ws.send_str(json.dumps(message))

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109
        message = await super().next(timeout)
        if message.get("type") == "signal":
            self.clock.received[_key(message["from"], message)] = time.perf_counter()
        return message


async def _socket(http: aiohttp.ClientSession, url: str, clock: Clock,
                  headers: dict[str, str] | None = None, **hello: Any) -> TimedClient:
    ws = await http.ws_connect(ws_url(url), headers=headers or {}, heartbeat=None)
    client = TimedClient(ws, clock)
    await client.hello(**hello)
    return client


async def one_call(control: Control, http: aiohttp.ClientSession) -> dict[str, float]:
    clock = Clock()
    session, invite = await control.handler.create_session()
    token = await control.handler.token_for(invite)
    handler = await _socket(http, control.base_url, clock, control.handler.headers(),
                            session=session)
    handler_pump = Pump(handler)
    caller_pump: Pump | None = None
    try:
        start = time.perf_counter()
        credential = (await redeem(http, control.base_url, token))["credential"]
        redeemed = time.perf_counter()
        caller = await _socket(http, control.base_url, clock, credential=credential)
        welcomed = time.perf_counter()
        caller_pump = Pump(caller, send_video=True)
        joined = await handler_pump.expect("peer", op="joined", role="victim")
        heard = time.perf_counter()
        to_caller = handler_pump.peer(joined["pid"])
        to_caller.counter.wanted = 1
        to_caller.pc.addTransceiver("audio", direction="recvonly")
        to_caller.pc.addTransceiver("video", direction="recvonly")
        await to_caller.offer()
        await asyncio.wait_for(to_caller.counter.enough.wait(), timeout=30)
        first_frame = time.perf_counter()
        offer = (handler.pid, "d:offer")
        answer = (caller.pid, "d:answer")
        server_ms = ((redeemed - start) + (welcomed - redeemed)
                     + max(0.0, heard - welcomed)) * 1000
        server_ms += clock.relay_ms(offer) + clock.relay_ms(answer)
        relays = clock.relays_ms()
        await handler.send({"type": "control", "op": "end", "reason": "resolved"})
        return {
            "total_ms": (first_frame - start) * 1000,
            "redeem_ms": (redeemed - start) * 1000,
            "join_ms": (welcomed - redeemed) * 1000,
            "peer_joined_ms": max(0.0, heard - welcomed) * 1000,
            "offer_relay_ms": clock.relay_ms(offer),
            "answer_relay_ms": clock.relay_ms(answer),
            "server_ms": server_ms,
            "signal_frames": float(len(relays)),
            "relay_median_ms": statistics.median(relays),
        }
    finally:
        for pump in (handler_pump, caller_pump):
            if pump is not None:
                await pump.close()
                await pump.socket.close()


async def connect_time(tmp: Path, logs: Path) -> dict[str, Any]:
    calls = env_int("ERV_BENCH_CALLS", 20)
    log(f"connect time: {calls} calls with aiortc peers")
    server = await start_erv("erv-connect", tmp / "connect", logs)
    control = await Control(server.url).open()
    samples: list[dict[str, float]] = []
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(calls):
                samples.append(await one_call(control, http))
    finally:
        await control.close()
        server.stop()

    def column(name: str) -> list[float]:
        return [s[name] for s in samples]

    summary: dict[str, Any] = {"calls": len(samples)}
    for name in ("total_ms", "server_ms", "redeem_ms", "join_ms", "peer_joined_ms",
                 "offer_relay_ms", "answer_relay_ms", "relay_median_ms"):
        values = column(name)
        summary[name] = {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95)}
    summary["signal_frames_per_call"] = statistics.median(column("signal_frames"))
    log(f"  connect: p50 {summary['total_ms']['p50']:.0f} ms, p95 "
        f"{summary['total_ms']['p95']:.0f} ms; server part p50 "
        f"{summary['server_ms']['p50']:.1f} ms")
    return summary
