"""The signalling rules over real sockets: who may address whom, who may see what, who may
control the session, and how chat and heartbeats behave."""

from __future__ import annotations

from server.accounts import StaffRole
from signaling.protocol import CANNED_REPLIES
from tests.support.calls import (
    barrier,
    bring_specialist,
    chat_round_trip,
    expect_error,
    frames_until,
    mentions,
    open_call,
    raw_socket,
)
from tests.support.live import LiveServer, SignalClient

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
CANDIDATE = {
    "candidate": "candidate:1 1 udp 2122260223 192.0.2.10 54321 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
    "usernameFragment": "abcd",
}


def signals(frames: list[dict[str, object]]) -> list[dict[str, object]]:
    return [f for f in frames if f["type"] == "signal"]


# -- addressing ---------------------------------------------------------------------------------


async def test_signal_cannot_cross_into_another_session(live: LiveServer) -> None:
    """A pid of another session is unknown_peer, for caller and handler; nothing arrives there."""
    a = await open_call(live, "hannah", ref="CAD-A")
    b = await open_call(live, "harry", ref="CAD-B")

    await a.caller.send({"type": "signal", "to": b.caller.pid, "description": OFFER})
    await expect_error(a.caller, "unknown_peer")
    await a.caller.send({"type": "signal", "to": b.handler.pid, "candidate": CANDIDATE})
    await expect_error(a.caller, "unknown_peer")
    await a.handler.send({"type": "signal", "to": b.caller.pid, "description": OFFER})
    await expect_error(a.handler, "unknown_peer")
    await a.handler.send({"type": "signal", "to": "0123456789abcdef", "candidate": None})
    await expect_error(a.handler, "unknown_peer")

    # Session B, read up to a chat sent after all of the above: no signal got in.
    await b.handler.send({"type": "chat", "text": "marker-b"})
    for client in (b.caller, b.handler):
        frames = await frames_until(client, "chat", text="marker-b")
        assert signals(frames) == [], frames
        assert not any(mentions(f, "192.0.2.10") or mentions(f, a.caller.pid) for f in frames)


async def test_signal_to_self_is_refused(live: LiveServer) -> None:
    """Nobody can signal themselves."""
    call = await open_call(live, "hannah")
    await call.caller.send({"type": "signal", "to": call.caller.pid, "description": OFFER})
    await expect_error(call.caller, "unknown_peer")
    await call.handler.send({"type": "signal", "to": call.handler.pid, "candidate": CANDIDATE})
    await expect_error(call.handler, "unknown_peer")


async def test_signal_within_the_session_is_relayed_intact(live: LiveServer) -> None:
    """Descriptions and candidates reach the addressed peer as {type, from, ...} unchanged;
    a null candidate arrives as the end-of-candidates marker."""
    call = await open_call(live, "hannah")
    await call.handler.send({"type": "signal", "to": call.caller.pid, "description": OFFER})
    got = await call.caller.expect("signal")
    assert {k: v for k, v in got.items() if k != "seq"} == {
        "type": "signal", "from": call.handler.pid, "description": OFFER,
    }

    answer = {"type": "answer", "sdp": "v=0\r\ns=answer\r\n"}
    await call.caller.send({"type": "signal", "to": call.handler.pid, "description": answer})
    got = await call.handler.expect("signal")
    assert got["from"] == call.caller.pid and got["description"] == answer

    await call.caller.send({"type": "signal", "to": call.handler.pid, "candidate": CANDIDATE})
    got = await call.handler.expect("signal")
    assert {k: v for k, v in got.items() if k != "seq"} == {
        "type": "signal", "from": call.caller.pid, "candidate": CANDIDATE,
    }

    await call.caller.send({"type": "signal", "to": call.handler.pid, "candidate": None})
    got = await call.handler.expect("signal")
    assert got["from"] == call.caller.pid
    # The browser's addIceCandidate treats an empty candidate string as end-of-candidates.
    assert got["candidate"]["candidate"] == ""
    assert got["candidate"]["sdpMid"] is None and got["candidate"]["sdpMLineIndex"] is None

    # Nothing was echoed back to the senders.
    await call.handler.send({"type": "chat", "text": "after-signals"})
    frames = await frames_until(call.caller, "chat", text="after-signals")
    assert [f["from"] for f in signals(call.caller.received)] == [call.handler.pid]
    assert signals(frames) == []


# -- advice and location ------------------------------------------------------------------------


async def test_advice_reaches_staff_and_never_the_caller(live: LiveServer) -> None:
    """Advice from the handler or the specialist goes to both staff; the caller's socket gets
    no advice frame and nothing carrying the advice text."""
    call = await open_call(live, "hannah")
    _, specialist = await bring_specialist(live, call, "sam")

    handler_advice = "ADVICE-FROM-HANDLER perpetrator has a knife"
    specialist_advice = "ADVICE-FROM-SPECIALIST do not ask about the injuries yet"
    start = len(call.caller.received)
    await call.handler.send({"type": "advice", "text": handler_advice})
    for staff in (call.handler, specialist):
        got = await staff.expect("advice", text=handler_advice)
        assert got["from"] == call.handler.pid and got["role"] == "handler"
    await specialist.send({"type": "advice", "text": specialist_advice})
    for staff in (call.handler, specialist):
        got = await staff.expect("advice", text=specialist_advice)
        assert got["from"] == specialist.pid and got["role"] == "specialist"

    # Both were handled before this chat; the caller reads everything up to it.
    await call.handler.send({"type": "chat", "text": "still with you"})
    await frames_until(call.caller, "chat", text="still with you")
    seen = call.caller.received[start:]
    assert [f for f in seen if f["type"] == "advice"] == []
    assert not any(mentions(f, "ADVICE-FROM") for f in seen), seen
    # And nothing was numbered for the caller behind its back: the seqs have no gaps.
    seqs = [f["seq"] for f in call.caller.received if "seq" in f]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_the_caller_cannot_send_advice(live: LiveServer) -> None:
    """Advice is staff-only: a victim gets forbidden and staff receive nothing."""
    call = await open_call(live, "hannah")
    await call.caller.send({"type": "advice", "text": "CALLER-ADVICE"})
    await expect_error(call.caller, "forbidden")
    await call.caller.send({"type": "chat", "text": "after-advice"})
    frames = await frames_until(call.handler, "chat", text="after-advice")
    assert not any(f["type"] == "advice" or mentions(f, "CALLER-ADVICE") for f in frames)


async def test_location_is_the_callers_alone(live: LiveServer) -> None:
    """Staff sending a location get forbidden; the caller's location reaches the staff."""
    call = await open_call(live, "hannah")
    _, specialist = await bring_specialist(live, call, "sam")
    fake = {"type": "location", "lat": 51.5, "lon": -0.12, "accuracy": 10.0, "ts": 1.7e12}
    await call.handler.send(fake)
    await expect_error(call.handler, "forbidden")
    await specialist.send(fake)
    await expect_error(specialist, "forbidden")

    real = {"type": "location", "lat": 53.48, "lon": -2.24, "accuracy": 25.0, "ts": 1.7e12}
    await call.caller.send(real)
    for staff in (call.handler, specialist):
        got = await staff.expect("location")
        assert (got["from"], got["lat"], got["lon"]) == (call.caller.pid, 53.48, -2.24)


# -- control ------------------------------------------------------------------------------------


async def test_only_the_handler_controls_the_session(live: LiveServer) -> None:
    """The caller and a specialist cannot end the session or invite; unknown ops are named."""
    call = await open_call(live, "hannah")
    _, specialist = await bring_specialist(live, call, "sam")

    for who in (call.caller, specialist):
        await who.send({"type": "control", "op": "end"})
        await expect_error(who, "forbidden")
        await who.send({"type": "control", "op": "invite_specialist"})
        await expect_error(who, "forbidden")
    await call.caller.send({"type": "control", "op": "accept", "invitation": "x"})
    await expect_error(call.caller, "forbidden")
    for who in (call.caller, specialist, call.handler):
        await who.send({"type": "control", "op": "explode"})
        error = await expect_error(who, "unknown_op")
        assert "explode" in error["message"]

    # Still live: the session is not ended and the call still carries chat.
    _, body = await call.staff.api("GET", f"/api/sessions/{call.session_id}", expect=200)
    assert body["session"]["state"] != "ended"
    await chat_round_trip(call.caller, call.handler, "are you still there")
    await chat_round_trip(specialist, call.caller, "yes we are")


async def test_handler_ends_everyone_leaves_and_nobody_rejoins(live: LiveServer) -> None:
    """`end` closes every socket with bye session_ended / 1000; hello afterwards is refused
    for the handler, the specialist and the caller's credential."""
    call = await open_call(live, "hannah")
    specialist_staff, specialist = await bring_specialist(live, call, "sam")

    await call.handler.send({"type": "control", "op": "end", "reason": "resolved"})
    for who in (call.caller, specialist, call.handler):
        assert await who.expect_closed() == (1000, "session_ended")

    for staff in (call.staff, specialist_staff):
        again = await raw_socket(live, staff)
        await again.send({"type": "hello", "v": 1, "session": call.session_id})
        await expect_error(again, "session_ended")
    again = await raw_socket(live)
    await again.send({"type": "hello", "v": 1, "credential": call.credential})
    await expect_error(again, "session_ended")

    _, body = await call.staff.api("GET", f"/api/sessions/{call.session_id}", expect=200)
    assert body["session"]["state"] == "ended"
    assert body["session"]["end_reason"] == "resolved"


# -- chat ---------------------------------------------------------------------------------------


async def test_chat_text_and_canned_both_ways(live: LiveServer) -> None:
    """Text and quick replies travel caller -> handler and back; unknown quick replies are
    refused with bad_field and not delivered."""
    call = await open_call(live, "hannah")
    await chat_round_trip(call.caller, call.handler, "he is downstairs")
    await chat_round_trip(call.handler, call.caller, "stay where you are")

    for canned in ("they_are_here", "safe_now"):
        await call.caller.send({"type": "chat", "canned": canned})
        got = await call.handler.expect("chat", canned=canned)
        assert got["role"] == "victim" and "text" not in got
    await call.handler.send({"type": "chat", "canned": "yes"})
    got = await call.caller.expect("chat", canned="yes")
    assert got["from"] == call.handler.pid and got["role"] == "handler"

    await call.caller.send({"type": "chat", "canned": "open_the_door"})
    await expect_error(call.caller, "bad_field")
    await call.caller.send({"type": "chat", "canned": CANNED_REPLIES[0]})
    frames = await frames_until(call.handler, "chat", canned=CANNED_REPLIES[0])
    assert not any(mentions(f, "open_the_door") for f in frames)


async def test_chat_reaches_everyone_in_one_order(live: LiveServer) -> None:
    """Chats from three senders at once arrive at all three in the same order, each sender's
    in the order sent, with seq rising by exactly 1."""
    call = await open_call(live, "hannah")
    _, specialist = await bring_specialist(live, call, "sam")
    people = {"caller": call.caller, "handler": call.handler, "specialist": specialist}
    starts = {name: len(client.received) for name, client in people.items()}
    per_sender = 6
    for i in range(per_sender):
        for name, client in people.items():
            await client.send({"type": "chat", "text": f"{name}-{i}"})

    orders: dict[str, list[str]] = {}
    for name, client in people.items():
        chats: list[dict[str, object]] = []
        while len(chats) < per_sender * len(people):
            chats.append(await client.expect("chat"))
        orders[name] = [str(c["text"]) for c in chats]
        ids = [c["id"] for c in chats]
        assert len(set(ids)) == len(ids)
        seqs = [f["seq"] for f in client.received[starts[name]:] if "seq" in f]
        first = seqs[0]
        assert seqs == list(range(first, first + len(seqs)))
        if name == "caller":  # nothing else goes to the caller meanwhile
            assert [c["seq"] for c in chats] == list(range(first, first + len(chats)))

    assert orders["caller"] == orders["handler"] == orders["specialist"]
    for name in people:
        mine = [t for t in orders["caller"] if t.startswith(f"{name}-")]
        assert mine == [f"{name}-{i}" for i in range(per_sender)]


# -- heartbeat ----------------------------------------------------------------------------------


async def test_ping_gets_an_unsequenced_pong(live: LiveServer) -> None:
    """ping -> pong, without seq, before hello and after; it does not use up a seq."""
    call = await open_call(live, "hannah", join_caller=False)
    await call.caller.send({"type": "ping"})
    pong = await call.caller.next()
    assert pong == {"type": "pong"}
    await call.caller.hello(credential=call.credential)

    await call.handler.send({"type": "chat", "text": "one"})
    before = (await call.caller.expect("chat", text="one"))["seq"]
    await call.caller.send({"type": "ping"})
    assert await call.caller.next() == {"type": "pong"}
    await call.handler.send({"type": "chat", "text": "two"})
    assert (await call.caller.expect("chat", text="two"))["seq"] == before + 1


async def test_a_handler_of_another_session_cannot_join_it(live: LiveServer) -> None:
    """Staff can hello only into sessions that are theirs: another handler gets not_found."""
    call = await open_call(live, "hannah")
    other = await live.staff_client("harry", StaffRole.HANDLER)
    socket: SignalClient = await raw_socket(live, other)
    await socket.send({"type": "hello", "v": 1, "session": call.session_id})
    await expect_error(socket, "not_found")
    await chat_round_trip(call.caller, call.handler, "nobody else here")


async def test_a_chats_cid_comes_back_with_its_echo_and_stays_off_the_record(
    live: LiveServer,
) -> None:
    """The sender's own id for a message is how it knows the message arrived (and what to
    send again after a socket died under it); it is not part of what was said."""
    from server import keys

    call = await open_call(live, "hannah")
    await call.caller.send({"type": "chat", "text": "in the bathroom", "cid": "c41c1af9"})
    echo = await call.caller.expect("chat", text="in the bathroom")
    assert echo["cid"] == "c41c1af9" and echo["id"] != "c41c1af9"
    assert (await call.handler.expect("chat", text="in the bathroom"))["cid"] == "c41c1af9"
    await call.handler.send({"type": "advice", "text": "ask about weapons", "cid": "a1"})
    assert (await call.handler.expect("advice"))["cid"] == "a1"
    await call.caller.send({"type": "chat", "text": "x", "cid": "not ok!"})
    await expect_error(call.caller, "bad_field")
    await barrier(call.handler)  # its frames are handled in turn: the advice is recorded
    bodies = [e.body for e in await live.app[keys.RECORD].read(call.session_id)
              if e.header.kind in ("chat", "advice")]
    assert [b["text"] for b in bodies] == ["in the bathroom", "ask about weapons"]
    assert all("cid" not in b for b in bodies)
