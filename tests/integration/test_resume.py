"""Resuming after a dropped socket: exactly what was missed, in order, once; then live again."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.support.calls import Call, expect_error, open_call, raw_socket
from tests.support.live import LiveServer, SignalClient, start_server

OFFER = {"type": "offer", "sdp": "v=0\r\ns=restart\r\n"}


def resume_fields(client: SignalClient, last_seq: int | None = None) -> dict[str, Any]:
    return {"pid": client.pid, "secret": client.welcome["resume_secret"],
            "last_seq": client.last_seq if last_seq is None else last_seq}


async def drop_caller(call: Call) -> None:
    """Close the caller's socket; the handler sees it go away."""
    await call.caller.close()
    away = await call.handler.expect("peer", op="updated", pid=call.caller.pid)
    assert away["state"] == "away" and away["role"] == "victim"


async def reconnect(server: LiveServer, last_seq: int) -> SignalClient:
    """A new socket that expects the sequence to go on after `last_seq`."""
    client = await raw_socket(server)
    client.last_seq = last_seq
    return client


async def test_resume_replays_exactly_what_was_missed(live: LiveServer) -> None:
    """Messages sent while away come back in order with their original seq, no duplicates,
    then new ones follow; peers see away, then present."""
    call = await open_call(live, "hannah")
    await call.handler.send({"type": "chat", "text": "before"})
    await call.caller.expect("chat", text="before")
    old = call.caller
    fields = resume_fields(old)
    last = old.last_seq
    await drop_caller(call)

    await call.handler.send({"type": "signal", "to": old.pid, "description": OFFER})
    missed_ids = []
    for i in range(3):
        await call.handler.send({"type": "chat", "text": f"missed-{i}"})
        missed_ids.append((await call.handler.expect("chat", text=f"missed-{i}"))["id"])

    back = await reconnect(live, last)
    welcome = await back.hello(resume=fields)
    assert welcome["pid"] == old.pid and welcome["resumed"] is True
    assert welcome["role"] == "victim" and welcome["session"] == call.session_id

    replayed = [await back.next() for _ in range(4)]
    assert [f["seq"] for f in replayed] == [last + 1, last + 2, last + 3, last + 4]
    assert replayed[0]["type"] == "signal" and replayed[0]["from"] == call.handler.pid
    assert replayed[0]["description"] == OFFER
    assert [f["text"] for f in replayed[1:]] == ["missed-0", "missed-1", "missed-2"]
    assert [f["id"] for f in replayed[1:]] == missed_ids  # the same messages, not copies

    present = await call.handler.expect("peer", op="updated", pid=old.pid)
    assert present["state"] == "present"

    await call.handler.send({"type": "chat", "text": "after"})
    after = await back.next()
    assert (after["type"], after["text"], after["seq"]) == ("chat", "after", last + 5)
    await back.send({"type": "chat", "text": "I am back"})
    assert (await call.handler.expect("chat", text="I am back"))["from"] == old.pid


async def test_resume_from_the_middle_replays_only_the_rest(live: LiveServer) -> None:
    """last_seq in the middle of what was received replays the later frames byte for byte."""
    call = await open_call(live, "hannah")
    seen = []
    for i in range(4):
        await call.handler.send({"type": "chat", "text": f"live-{i}"})
        seen.append(await call.caller.expect("chat", text=f"live-{i}"))
    await drop_caller(call)
    await call.handler.send({"type": "chat", "text": "while-away"})
    await call.handler.expect("chat", text="while-away")

    middle = seen[1]["seq"]
    back = await reconnect(live, middle)
    await back.hello(resume=resume_fields(call.caller, last_seq=middle))
    replayed = [await back.next() for _ in range(3)]
    assert replayed[:2] == seen[2:]
    assert replayed[2]["text"] == "while-away" and replayed[2]["seq"] == seen[3]["seq"] + 1
    await call.handler.send({"type": "chat", "text": "now"})
    assert (await back.next())["text"] == "now"


async def test_resume_with_wrong_secret_or_unknown_pid_fails(live: LiveServer) -> None:
    """A wrong secret, an unknown pid or a seq from the future is resume_failed; the socket
    and the away participant are untouched, so the right resume still works after."""
    call = await open_call(live, "hannah")
    fields = resume_fields(call.caller)
    await drop_caller(call)

    back = await reconnect(live, fields["last_seq"])
    attempts = [
        {**fields, "secret": fields["secret"][:-2] + "xx"},
        {**fields, "pid": "0123456789abcdef"},
        {**fields, "pid": call.handler.pid},  # a real pid, not the secret's owner
        {**fields, "last_seq": fields["last_seq"] + 5},
    ]
    for attempt in attempts:
        await back.send({"type": "hello", "v": 1, "resume": attempt})
        await expect_error(back, "resume_failed")

    welcome = await back.hello(resume=fields)
    assert welcome["pid"] == fields["pid"]
    present = await call.handler.expect("peer", op="updated", pid=fields["pid"])
    assert present["state"] == "present"


async def test_after_the_window_the_caller_starts_fresh(backend: dict[str, Any],
                                                        tmp_path: Path) -> None:
    """Past the resume window peers get `peer left` (timeout), resume fails, and the
    credential joins again as a new participant whose seq starts at 1."""
    server = await start_server(tmp_path, resume_window=1, **backend)
    try:
        call = await open_call(server, "hannah")
        fields = resume_fields(call.caller)
        dropped = time.monotonic()
        await drop_caller(call)
        left = await call.handler.expect("peer", op="left", pid=fields["pid"], timeout=5)
        assert left["reason"] == "timeout" and left["role"] == "victim"
        assert time.monotonic() - dropped >= 0.9  # not before the window

        back = await raw_socket(server)
        await back.send({"type": "hello", "v": 1, "resume": fields})
        await expect_error(back, "resume_failed")

        welcome = await back.hello(credential=call.credential)
        assert welcome["resumed"] is False and welcome["pid"] != fields["pid"]
        assert welcome["resume_secret"] != fields["secret"]
        joined = await call.handler.expect("peer", op="joined", role="victim")
        assert joined["pid"] == welcome["pid"]
        await call.handler.send({"type": "chat", "text": "hello again"})
        first = await back.next()
        assert (first["type"], first["text"], first["seq"]) == ("chat", "hello again", 1)
    finally:
        await server.stop()


async def test_resume_while_the_old_socket_is_open_moves_the_participant(
    live: LiveServer,
) -> None:
    """A second socket resuming takes over: the old socket is closed, the new one gets the
    messages, and peers never see the participant go away."""
    call = await open_call(live, "hannah")
    await call.handler.send({"type": "chat", "text": "one"})
    await call.caller.expect("chat", text="one")
    old = call.caller
    fields = resume_fields(old)

    new = await reconnect(live, old.last_seq)
    welcome = await new.hello(resume=fields)
    assert welcome["pid"] == old.pid and welcome["resumed"] is True
    code, _ = await old.expect_closed()
    assert code == 4000

    await new.send({"type": "chat", "text": "from the new socket"})
    echo = await new.expect("chat", text="from the new socket")
    assert echo["seq"] == fields["last_seq"] + 1
    assert (await call.handler.expect("chat", text="from the new socket"))["from"] == old.pid
    await call.handler.send({"type": "chat", "text": "two"})
    got = await new.expect("chat", text="two")
    assert got["seq"] == fields["last_seq"] + 2
    await call.handler.expect("chat", text="two")
    # The old socket's end must not mark the moved participant away: peers saw only its join.
    moved = [f for f in call.handler.received if f["type"] == "peer" and f["pid"] == old.pid]
    assert [f["op"] for f in moved] == ["joined"], moved
    assert not [f for f in old.received if f.get("text") in ("from the new socket", "two")]


async def test_leaving_over_http_when_the_socket_cannot_say_so(live: LiveServer) -> None:
    """POST /ws/leave with the participant's own resume secret: it leaves for good, at once
    (peers see `left`, not a resume window running out); a socket it still had gets bye."""
    from tests.support.calls import open_call

    call = await open_call(live, "hannah")
    http = live.new_http()

    async def leave(body: object) -> int:
        async with http.post(f"{live.url}/ws/leave", json=body) as response:
            return response.status

    secret = call.caller.welcome["resume_secret"]
    for bad in ({}, {"pid": call.caller.pid}, {"pid": 1, "secret": secret}, [], "x",
                {"pid": "p" * 65, "secret": secret}):
        assert await leave(bad) == 400
    assert await leave({"pid": call.caller.pid, "secret": "wrong" * 4}) == 404
    assert await leave({"pid": "0123456789abcdef", "secret": secret}) == 404
    # A staff member's secret does not remove the caller, nor the reverse.
    assert await leave({"pid": call.caller.pid,
                        "secret": call.handler.welcome["resume_secret"]}) == 404

    assert await leave({"pid": call.caller.pid, "secret": secret}) == 204
    left = await call.handler.expect("peer", op="left", pid=call.caller.pid)
    assert left["reason"] == "left"
    assert await call.caller.expect_closed() == (1000, "left")
    assert await leave({"pid": call.caller.pid, "secret": secret}) == 404  # once only
