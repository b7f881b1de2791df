"""A whole call with real aiortc peers exchanging real media through the server's signalling.

Handler creates the session, the console gateway "sends" the link, the caller redeems it and
streams video; the handler decodes it; a specialist is invited, accepts, joins and also
decodes the caller's video; the handler ends the call and every socket closes with a reason.
"""

from __future__ import annotations

import asyncio

from server.accounts import StaffRole
from tests.support.live import LiveServer, SignalClient
from tests.support.peers import VIDEO_HEIGHT, VIDEO_WIDTH, Pump


async def test_whole_call_with_media_to_handler_and_specialist(live: LiveServer) -> None:
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    specialist = await live.staff_client("sam", StaffRole.SPECIALIST)

    # The specialist is on shift: desk socket open and marked available.
    desk = await specialist.signal(None)
    await desk.send({"type": "control", "op": "available", "value": True})

    session_id = await handler.create_session(ref="CAD-2211")
    sms = live.outbox()[0]
    assert sms.to == "+447911123456" and f"{live.url}/j/" in sms.body

    handler_socket = await handler.signal(session_id)
    handler_pump = Pump(handler_socket)

    credential = (await live.redeem(live.latest_token()))["credential"]
    caller_socket = await SignalClient.connect(live, live.new_http())
    await caller_socket.hello(credential=credential)
    caller_pump = Pump(caller_socket, send_video=True)
    handler_pid = handler_socket.pid
    assert [p["pid"] for p in caller_socket.welcome["peers"]] == [handler_pid]

    # The caller calls the handler: offer, answer and trickled candidates through /ws.
    await caller_pump.peer(handler_pid).offer()
    to_handler = handler_pump.peer(caller_socket.pid)
    await asyncio.wait_for(to_handler.counter.enough.wait(), timeout=30)
    assert to_handler.counter.frames >= 30
    assert to_handler.counter.width == VIDEO_WIDTH and to_handler.counter.height == VIDEO_HEIGHT
    assert to_handler.candidates_received > 0
    assert caller_pump.peers[handler_pid].candidates_received > 0

    await handler_socket.send({"type": "control", "op": "media", "state": "connected",
                               "peer": caller_socket.pid})
    _, body = await handler.api("GET", f"/api/sessions/{session_id}", expect=200)
    deadline = asyncio.get_running_loop().time() + 5
    while body["session"]["state"] != "connected":
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.05)
        _, body = await handler.api("GET", f"/api/sessions/{session_id}", expect=200)

    # The handler brings in the specialist, who accepts and joins as the third participant.
    await handler_socket.send({"type": "control", "op": "invite_specialist"})
    ringing = await desk.expect("invitation", op="ringing")
    assert ringing["session"] == session_id and ringing["incident_ref"] == "CAD-2211"
    await desk.send({"type": "control", "op": "accept", "invitation": ringing["invitation"]})
    await desk.expect("invitation", op="accepted")

    specialist_socket = await specialist.signal(session_id)
    assert specialist_socket.welcome["role"] == "specialist"
    specialist_pump = Pump(specialist_socket)
    joined = await caller_pump.expect("peer", op="joined")
    assert joined["role"] == "specialist"
    await caller_pump.peer(joined["pid"]).offer()
    to_specialist = specialist_pump.peer(caller_socket.pid)
    await asyncio.wait_for(to_specialist.counter.enough.wait(), timeout=30)
    assert to_specialist.counter.frames >= 30
    # The handler's video kept coming while the specialist joined.
    before = to_handler.counter.frames
    await asyncio.sleep(0.5)
    assert to_handler.counter.frames > before

    # The handler ends the call: every socket of the session closes, each told why.
    await handler_socket.send({"type": "control", "op": "end", "reason": "resolved"})
    for pump in (caller_pump, handler_pump, specialist_pump):
        await asyncio.wait_for(pump.closed.wait(), timeout=5)
        assert pump.close_reason == "session_ended"
        assert pump.socket.ws.close_code == 1000
    _, body = await handler.api("GET", f"/api/sessions/{session_id}", expect=200)
    assert body["session"]["state"] == "ended" and body["session"]["end_reason"] == "resolved"

    # Nobody gets back in: not the caller's credential, not the staff.
    retry = await SignalClient.connect(live, live.new_http())
    await retry.send({"type": "hello", "v": 1, "credential": credential})
    assert (await retry.next())["code"] == "session_ended"
    staff_retry = await SignalClient.connect(live, handler.http)
    await staff_retry.send({"type": "hello", "v": 1, "session": session_id})
    assert (await staff_retry.next())["code"] == "session_ended"

    for pump in (caller_pump, handler_pump, specialist_pump):
        await pump.close()
