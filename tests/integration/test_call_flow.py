"""The signalling of a whole call, without media: create, text, redeem, join, chat, end."""

from __future__ import annotations

from server.accounts import StaffRole
from tests.support.live import LiveServer


async def test_handler_and_caller_meet_and_the_handler_ends_it(live: LiveServer) -> None:
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session_id = await handler.create_session()
    staff_socket = await handler.signal(session_id)
    assert staff_socket.welcome["role"] == "handler"
    assert staff_socket.welcome["status"]["session"]["state"] == "invited"

    caller = await live.caller()
    assert caller.welcome["session"] == session_id
    assert [p["role"] for p in caller.welcome["peers"]] == ["handler"]

    joined = await staff_socket.expect("peer", op="joined")
    assert joined["role"] == "victim"
    status = await staff_socket.expect("status")
    while status["session"]["state"] != "joined":
        status = await staff_socket.expect("status")

    await caller.send({"type": "chat", "canned": "cant_talk"})
    chat = await staff_socket.expect("chat")
    assert chat["canned"] == "cant_talk" and chat["role"] == "victim"

    await staff_socket.send({"type": "control", "op": "end"})
    assert await caller.expect_closed() == (1000, "session_ended")
    assert await staff_socket.expect_closed() == (1000, "session_ended")

    _, body = await handler.api("GET", f"/api/sessions/{session_id}", expect=200)
    assert body["session"]["state"] == "ended"
