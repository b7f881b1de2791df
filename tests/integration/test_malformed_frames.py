"""Malformed, oversized and abusive frames: each gets a stable error code, one mistake does not
cost the caller the call, repeated abuse and floods close the socket with 1008, and no other
session notices any of it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import pytest

import signaling.endpoint
from signaling.endpoint import MAX_STRIKES
from signaling.protocol import MAX_FRAME_BYTES
from tests.support.calls import (
    Call,
    chat_round_trip,
    expect_error,
    open_call,
    padded_frame,
    raw_socket,
)
from tests.support.live import LiveServer, SignalClient

LOCATION = {"type": "location", "lat": 51.5, "lon": -0.12, "accuracy": 10.0, "ts": 1.7e12}
CANDIDATE = {"candidate": "candidate:1 1 udp 1 192.0.2.1 9 typ host", "sdpMid": "0",
             "sdpMLineIndex": 0}


def j(message: Any) -> str:
    return json.dumps(message)


# (frame, expected error code): sent by a caller that has already joined.
AFTER_HELLO: list[Any] = [
    pytest.param(b'{"type":"chat","text":"hi"}', "bad_frame", id="binary-frame"),
    pytest.param('{"type": "chat", "text": "unterminated', "bad_json", id="not-json"),
    pytest.param("hello there", "bad_json", id="plain-text"),
    pytest.param(j([{"type": "chat", "text": "hi"}]), "bad_json", id="json-array"),
    pytest.param(j("chat"), "bad_json", id="json-string"),
    pytest.param("[" * 20000 + "]" * 20000, "bad_json", id="deeply-nested"),
    pytest.param(j({"type": "chat", "text": "x" * (MAX_FRAME_BYTES + 10)}), "too_large",
                 id="over-64k"),
    pytest.param(j({"type": "shout", "text": "hi"}), "unknown_type", id="unknown-type"),
    pytest.param(j({"text": "hi"}), "bad_field", id="type-missing"),
    pytest.param(j({"type": 5}), "bad_field", id="type-not-string"),
    pytest.param(j({"type": "chat", "text": 42}), "bad_field", id="chat-text-number"),
    pytest.param(j({"type": "chat", "text": "a", "canned": "yes"}), "bad_field",
                 id="chat-text-and-canned"),
    pytest.param(j({"type": "chat", "text": "   "}), "bad_field", id="chat-empty"),
    pytest.param(j({"type": "chat", "text": "x" * 2001}), "bad_field", id="chat-too-long"),
    pytest.param(j({"type": "chat", "text": "hi", "html": "<b>"}), "bad_field",
                 id="chat-extra-field"),
    pytest.param(j({**LOCATION, "lat": "51.5"}), "bad_field", id="location-lat-string"),
    pytest.param('{"type":"location","lat":NaN,"lon":0,"accuracy":1,"ts":1}', "bad_field",
                 id="location-nan"),
    pytest.param(j({**LOCATION, "lat": 91}), "bad_field", id="location-out-of-range"),
    pytest.param(j({**LOCATION, "accuracy": True}), "bad_field", id="location-bool"),
    pytest.param(j({**LOCATION, "altitude": 3}), "bad_field", id="location-extra-field"),
    pytest.param(j({"type": "signal", "to": 7, "candidate": None}), "bad_field",
                 id="signal-to-number"),
    pytest.param(j({"type": "signal", "to": "p", "description": {"type": "offer", "sdp": "v=0"},
                    "candidate": None}), "bad_field", id="signal-description-and-candidate"),
    pytest.param(j({"type": "signal", "to": "p",
                    "description": {"type": "offer", "sdp": "v=0", "x": 1}}), "bad_field",
                 id="description-extra-field"),
    pytest.param(j({"type": "signal", "to": "p", "description": {"type": "hack", "sdp": ""}}),
                 "bad_field", id="description-bad-type"),
    pytest.param(j({"type": "signal", "to": "p",
                    "candidate": {**CANDIDATE, "sdpMLineIndex": True}}), "bad_field",
                 id="candidate-index-bool"),
    pytest.param(j({"type": "ping", "x": 1}), "bad_field", id="ping-extra-field"),
    pytest.param(j({"type": "control"}), "bad_field", id="control-without-op"),
    pytest.param(j({"type": "control", "op": "media", **{f"k{i}": i for i in range(9)}}),
                 "bad_field", id="control-too-many-fields"),
    pytest.param(j({"type": "hello", "v": "1"}), "bad_field", id="hello-v-string"),
    pytest.param(j({"type": "hello", "v": 1, "credential": "another"}), "already_joined",
                 id="second-hello"),
]

# (frame, expected error code): sent on a fresh socket before any hello.
BEFORE_HELLO: list[Any] = [
    pytest.param(j({"type": "hello", "v": 2}), "bad_version", id="wrong-version"),
    pytest.param(j({"type": "hello", "v": 0, "credential": "x"}), "bad_version",
                 id="old-version"),
    pytest.param(j({"type": "chat", "text": "hi"}), "hello_first", id="chat-before-hello"),
    pytest.param(j({"type": "signal", "to": "p", "candidate": None}), "hello_first",
                 id="signal-before-hello"),
    pytest.param(j({"type": "control", "op": "end"}), "hello_first", id="control-before-hello"),
    pytest.param(j({"type": "hello", "v": 1, "credential": "not-a-credential"}),
                 "unauthorized", id="bad-credential"),
    pytest.param(j({"type": "hello", "v": 1, "resume": {"pid": "p", "secret": "s",
                                                       "last_seq": -1}}), "bad_field",
                 id="resume-negative-seq"),
    pytest.param(b"\x00\x01", "bad_frame", id="binary-before-hello"),
]


async def send_raw(client: SignalClient, frame: str | bytes) -> None:
    if isinstance(frame, bytes):
        await client.ws.send_bytes(frame)
    else:
        await client.ws.send_str(frame)


async def two_calls(live: LiveServer, *, join_caller: bool = True) -> tuple[Call, Call]:
    a = await open_call(live, "hannah", ref="CAD-A", join_caller=join_caller)
    b = await open_call(live, "harry", ref="CAD-B")
    return a, b


async def still_in_the_call(call: Call, text: str) -> None:
    """The caller's socket and place survived: a chat reaches the handler from the same pid
    and comes back to the caller."""
    await call.caller.send({"type": "chat", "text": text})
    got = await call.handler.expect("chat", text=text)
    assert got["from"] == call.caller.pid
    await call.caller.expect("chat", text=text)


@pytest.mark.parametrize(("frame", "code"), AFTER_HELLO)
async def test_one_bad_frame_gets_an_error_and_the_call_goes_on(
    live: LiveServer, frame: str | bytes, code: str
) -> None:
    a, b = await two_calls(live)
    await send_raw(a.caller, frame)
    error = await expect_error(a.caller, code)
    assert isinstance(error["message"], str) and error["message"]
    await chat_round_trip(b.caller, b.handler, "session B unaffected")
    await still_in_the_call(a, "still here")
    # Nothing of the bad frame reached the handler.
    assert not [f for f in a.handler.received if f["type"] in ("signal", "location")]


@pytest.mark.parametrize(("frame", "code"), BEFORE_HELLO)
async def test_a_bad_frame_before_hello_still_lets_the_caller_join(
    live: LiveServer, frame: str | bytes, code: str
) -> None:
    a, b = await two_calls(live, join_caller=False)
    await send_raw(a.caller, frame)
    await expect_error(a.caller, code)
    await chat_round_trip(b.handler, b.caller, "session B unaffected")
    welcome = await a.caller.hello(credential=a.credential)
    assert welcome["role"] == "victim"
    await still_in_the_call(a, "joined after a mistake")


async def test_exactly_64_kib_is_accepted_one_byte_more_is_not(live: LiveServer) -> None:
    """The limit is 65536 UTF-8 bytes, counted as bytes: an exactly-64-KiB frame is handled,
    65537 bytes is too_large, also when multi-byte text keeps the character count low."""
    call = await open_call(live, "hannah")
    handler = call.handler.pid

    exact = padded_frame({"type": "chat", "text": "exactly 64 KiB"}, MAX_FRAME_BYTES)
    await call.caller.ws.send_str(exact)
    assert (await call.handler.expect("chat", text="exactly 64 KiB"))["from"] == call.caller.pid

    over = padded_frame({"type": "chat", "text": "one byte over"}, MAX_FRAME_BYTES + 1)
    await call.caller.ws.send_str(over)
    await expect_error(call.caller, "too_large")

    # "€" is 3 bytes: 21000 of them fit; the frame is exactly 65536 bytes, ~21100 characters.
    sdp = "v=0 " + "€" * 21000
    message = {"type": "signal", "to": handler, "description": {"type": "offer", "sdp": sdp}}
    exact_multibyte = padded_frame(message, MAX_FRAME_BYTES)
    assert len(exact_multibyte) < MAX_FRAME_BYTES
    await call.caller.ws.send_str(exact_multibyte)
    got = await call.handler.expect("signal")
    assert got["description"]["sdp"] == sdp

    # Fewer than 65536 characters but more than 65536 bytes: refused.
    big = {"type": "signal", "to": handler,
           "description": {"type": "offer", "sdp": "v=0 " + "€" * 21900}}
    text = json.dumps(big, ensure_ascii=False)
    assert len(text) < MAX_FRAME_BYTES < len(text.encode())
    await call.caller.ws.send_str(text)
    await expect_error(call.caller, "too_large")
    await still_in_the_call(call, "after the big frames")


async def test_repeated_abuse_closes_the_socket_with_1008(
    live: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """MAX_STRIKES errors close the socket with 1008 and a log line; one fewer does not."""
    caplog.set_level(logging.WARNING, logger="erv.signaling")
    a, b = await two_calls(live)
    for _ in range(MAX_STRIKES - 1):
        await a.caller.send({"type": "shout"})
        await expect_error(a.caller, "unknown_type")
    await still_in_the_call(a, "not closed yet")

    await a.caller.send({"type": "shout"})
    await expect_error(a.caller, "unknown_type")
    code, _ = await a.caller.expect_closed()
    assert code == 1008
    assert any("protocol errors" in r.getMessage() for r in caplog.records
               if r.name == "erv.signaling" and r.levelno == logging.WARNING)
    await chat_round_trip(b.caller, b.handler, "session B unaffected")
    await chat_round_trip(b.handler, b.caller, "and back")


async def test_a_flood_is_rate_limited_then_closed_while_others_talk(live: LiveServer) -> None:
    """Hundreds of chats as fast as possible: rate_limited errors, then 1008; the other
    session keeps exchanging messages in order meanwhile."""
    a, b = await two_calls(live)
    flood = 400

    async def abuse() -> None:
        with contextlib.suppress(ConnectionError):
            for i in range(flood):
                await a.caller.ws.send_str(j({"type": "chat", "text": f"flood-{i}"}))

    async def talk() -> None:
        for i in range(10):
            await chat_round_trip(b.caller, b.handler, f"b-caller-{i}")
            await chat_round_trip(b.handler, b.caller, f"b-handler-{i}")

    await asyncio.gather(abuse(), talk())
    code, _ = await a.caller.expect_closed()
    assert code == 1008
    codes = {f["code"] for f in a.caller.received if f["type"] == "error"}
    assert codes == {"rate_limited"}

    # The handler of A got some of the flood, far from all of it.
    await a.handler.expect("peer", op="updated", pid=a.caller.pid, state="away")
    relayed = [f for f in a.handler.received if f["type"] == "chat"
               and str(f.get("text", "")).startswith("flood-")]
    assert 0 < len(relayed) < flood
    await chat_round_trip(b.caller, b.handler, "after the flood")


async def test_no_hello_in_time_closes_with_1008(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A socket that never says hello gets hello_first, then close 1008; joined sockets are
    not subject to that limit."""
    monkeypatch.setattr(signaling.endpoint, "HELLO_TIMEOUT", 0.3)
    b = await open_call(live, "harry", ref="CAD-B")
    idle = await raw_socket(live)
    await expect_error(idle, "hello_first", timeout=5)
    code, _ = await idle.expect_closed()
    assert code == 1008
    # B's sockets have been open for longer than the limit and still work.
    await chat_round_trip(b.caller, b.handler, "still talking")
    await chat_round_trip(b.handler, b.caller, "me too")


async def test_pings_do_not_stretch_the_hello_time_limit(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hello limit counts from the connection, not from the last frame: a socket that
    only pings is still closed with 1008."""
    monkeypatch.setattr(signaling.endpoint, "HELLO_TIMEOUT", 0.5)
    idle = await raw_socket(live)

    async def keep_pinging() -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while not idle.ws.closed:
                await idle.send({"type": "ping"})
                await asyncio.sleep(0.1)  # pacing, well inside the limit

    pinger = asyncio.create_task(keep_pinging())
    try:
        await expect_error(idle, "hello_first", timeout=3)
        code, _ = await idle.expect_closed(timeout=3)
        assert code == 1008
    finally:
        pinger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pinger
