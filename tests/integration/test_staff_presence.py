"""Refusals an honest client meets never close its socket; signing out ends staff sockets;
a replaced specialist invitation stops ringing; a dropped desk socket rings nobody."""

from __future__ import annotations

import asyncio

from signaling.endpoint import MAX_STRIKES
from tests.support.calls import barrier, expect_error, open_call, raw_socket, specialist_on_call
from tests.support.live import LiveServer


async def test_repeated_refusals_are_not_abuse(live: LiveServer) -> None:
    """A handler who keeps asking for a specialist when none is free keeps its socket, and
    each refusal says exactly why in `detail`."""
    call = await open_call(live, "hannah")
    for _ in range(MAX_STRIKES + 2):
        await call.handler.send({"type": "control", "op": "invite_specialist"})
        error = await expect_error(call.handler, "conflict")
        assert error["detail"] == "no_specialist"
    await call.caller.send({"type": "chat", "text": "still here"})
    await call.handler.expect("chat", text="still here")
    assert not call.handler.ws.closed


async def test_signing_out_closes_staff_sockets_and_they_cannot_resume(live: LiveServer) -> None:
    call = await open_call(live, "hannah")
    pid, secret = call.handler.pid, call.handler.welcome["resume_secret"]
    async with call.staff.http.post(f"{live.url}/logout", data={"csrf_token": call.staff.csrf},
                                    allow_redirects=False) as response:
        assert response.status == 303
    assert await call.handler.expect_closed() == (1000, "signed_out")
    left = await call.caller.expect("peer", op="left")
    assert left["pid"] == pid and left["reason"] == "signed_out"

    retry = await raw_socket(live, call.staff)
    await retry.send({"type": "hello", "v": 1,
                      "resume": {"pid": pid, "secret": secret, "last_seq": 0}})
    await expect_error(retry, "resume_failed")


async def test_a_resume_needs_the_same_staff_sign_in(live: LiveServer) -> None:
    """A resume secret alone is not enough for staff: the socket must carry their sign-in."""
    call = await open_call(live, "hannah")
    pid, secret = call.handler.pid, call.handler.welcome["resume_secret"]
    stranger = await raw_socket(live)  # no cookies
    await stranger.send({"type": "hello", "v": 1,
                         "resume": {"pid": pid, "secret": secret, "last_seq": 0}})
    await expect_error(stranger, "unauthorized")
    await stranger.send({"type": "chat", "text": "ghost"})
    await expect_error(stranger, "hello_first")
    # The refused resume left the handler's own socket in the call, untouched.
    await call.caller.send({"type": "chat", "text": "still there?"})
    await call.handler.expect("chat", text="still there?")


async def test_inviting_another_specialist_cancels_the_first_ring(live: LiveServer) -> None:
    call = await open_call(live, "hannah")
    _, first = await specialist_on_call(live, "sam")
    _, second = await specialist_on_call(live, "sara")
    await call.handler.send({"type": "control", "op": "invite_specialist", "username": "sam"})
    ringing = await first.expect("invitation", op="ringing")
    await call.handler.send({"type": "control", "op": "invite_specialist", "username": "sara"})
    cancelled = await first.expect("invitation", op="cancelled")
    assert cancelled["invitation"] == ringing["invitation"]
    await second.expect("invitation", op="ringing")
    await first.send({"type": "control", "op": "accept", "invitation": ringing["invitation"]})
    error = await expect_error(first, "conflict")
    assert error["detail"] == "not_ringing"


async def test_a_specialist_whose_desk_socket_dropped_is_not_offered(live: LiveServer) -> None:
    call = await open_call(live, "hannah")
    staff, desk = await specialist_on_call(live, "sam")
    _, body = await call.staff.api("GET", "/api/specialists", expect=200)
    assert [s["username"] for s in body["specialists"]] == ["sam"]
    await desk.close()
    for _ in range(50):
        _, body = await call.staff.api("GET", "/api/specialists", expect=200)
        if not body["specialists"]:
            break
        await asyncio.sleep(0.02)
    assert body["specialists"] == []
    await call.handler.send({"type": "control", "op": "invite_specialist", "username": "sam"})
    error = await expect_error(call.handler, "conflict")
    assert error["detail"] == "specialist_unavailable"
    await barrier(call.handler)
    assert staff.csrf  # still signed in: only the desk socket went away
