"""Bringing a domestic abuse specialist in: ringing, accepting, declining, timing out,
reconnecting while it rings, and cancelling when the session ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server import keys
from server.accounts import StaffRole
from tests.support.calls import (
    Call,
    barrier,
    chat_round_trip,
    expect_error,
    open_call,
    raw_socket,
    specialist_on_call,
)
from tests.support.live import LiveServer, SignalClient, StaffClient, start_server


async def invite(call: Call, username: str | None = None) -> None:
    message: dict[str, Any] = {"type": "control", "op": "invite_specialist"}
    if username is not None:
        message["username"] = username
    await call.handler.send(message)


async def specialist_status(handler: SignalClient, state: str,
                            timeout: float = 5.0) -> dict[str, Any]:
    """The next status whose specialist part is in `state`."""
    while True:
        status = await handler.expect("status", timeout=timeout)
        specialist = status.get("specialist")
        if specialist and specialist["state"] == state:
            return dict(specialist)


async def hello_into(server: LiveServer, staff: StaffClient, session_id: str) -> SignalClient:
    socket = await raw_socket(server, staff)
    await socket.send({"type": "hello", "v": 1, "session": session_id})
    return socket


def invitations(client: SignalClient) -> list[dict[str, Any]]:
    return [f for f in client.received if f["type"] == "invitation"]


async def test_first_available_specialist_rings_accepts_and_joins(live: LiveServer) -> None:
    """invite_specialist rings the available specialist's lobby and shows `ringing` to the
    handler; before accepting they cannot join; after accepting they join as specialist."""
    call = await open_call(live, "hannah", ref="CAD-77")
    sam, lobby = await specialist_on_call(live, "sam")

    early = await hello_into(live, sam, call.session_id)
    await expect_error(early, "not_found")  # never invited: the session is not theirs to see

    await invite(call)
    ringing = await lobby.expect("invitation", op="ringing")
    assert ringing["session"] == call.session_id and ringing["incident_ref"] == "CAD-77"
    assert isinstance(ringing["invitation"], str) and ringing["invitation"]
    shown = await specialist_status(call.handler, "ringing")
    assert shown["invitation"] == ringing["invitation"] and shown["name"] == "Sam"

    refused = await hello_into(live, sam, call.session_id)
    await expect_error(refused, "forbidden")

    await lobby.send({"type": "control", "op": "accept", "invitation": ringing["invitation"]})
    accepted = await lobby.expect("invitation", op="accepted")
    assert accepted["invitation"] == ringing["invitation"]
    await specialist_status(call.handler, "accepted")

    socket = await sam.signal(call.session_id)
    assert socket.welcome["role"] == "specialist"
    assert socket.welcome["session"] == call.session_id
    assert sorted(p["role"] for p in socket.welcome["peers"]) == ["handler", "victim"]
    for peer in (call.handler, call.caller):
        joined = await peer.expect("peer", op="joined", role="specialist")
        assert joined["pid"] == socket.pid and joined["name"] == "Sam"
    await chat_round_trip(socket, call.caller, "I am here to help")


async def test_invite_by_username_rings_only_that_specialist(live: LiveServer) -> None:
    """With two available, naming one rings that one; availability can be set by the API."""
    call = await open_call(live, "hannah")
    _, sam_lobby = await specialist_on_call(live, "sam")
    sue = await live.staff_client("sue", StaffRole.SPECIALIST)
    sue_lobby = await sue.signal(None)
    _, body = await sue.api("POST", "/api/me/availability", {"available": True}, expect=200)
    assert body == {"available": True}

    await invite(call, "sue")
    ringing = await sue_lobby.expect("invitation", op="ringing")
    assert ringing["session"] == call.session_id
    assert (await specialist_status(call.handler, "ringing"))["name"] == "Sue"
    await barrier(sam_lobby)
    assert invitations(sam_lobby) == []


async def test_decline_moves_on_and_runs_out_clearly(live: LiveServer) -> None:
    """A decline shows `declined`; the next first-available invite skips whoever declined,
    and with nobody left the handler gets a clear error."""
    call = await open_call(live, "hannah")
    sam, sam_lobby = await specialist_on_call(live, "sam")  # available first
    _, sue_lobby = await specialist_on_call(live, "sue")

    await invite(call)
    first = await sam_lobby.expect("invitation", op="ringing")
    await sam_lobby.send({"type": "control", "op": "decline", "invitation": first["invitation"]})
    await sam_lobby.expect("invitation", op="declined", invitation=first["invitation"])
    await specialist_status(call.handler, "declined")
    refused = await hello_into(live, sam, call.session_id)
    # Who declined has no part in the session any more: it looks like any other (decision 39).
    await expect_error(refused, "not_found")

    await invite(call)
    second = await sue_lobby.expect("invitation", op="ringing")
    assert second["invitation"] != first["invitation"]
    assert (await specialist_status(call.handler, "ringing"))["name"] == "Sue"
    await barrier(sam_lobby)
    assert [f["op"] for f in invitations(sam_lobby)] == ["ringing", "declined"]

    await sue_lobby.send({"type": "control", "op": "decline", "invitation": second["invitation"]})
    await sue_lobby.expect("invitation", op="declined")
    await invite(call)
    error = await expect_error(call.handler, "conflict")
    assert "No specialist is available" in error["message"]


async def test_ring_timeout_and_a_late_accept_is_refused(backend: dict[str, Any],
                                                         tmp_path: Path) -> None:
    """An unanswered invitation times out on both sides; accepting afterwards fails and
    does not let the specialist in."""
    server = await start_server(tmp_path, specialist_ring=1, **backend)
    try:
        call = await open_call(server, "hannah")
        sam, lobby = await specialist_on_call(server, "sam")
        await invite(call)
        ringing = await lobby.expect("invitation", op="ringing")
        timed_out = await lobby.expect("invitation", op="timed_out", timeout=5)
        assert timed_out["invitation"] == ringing["invitation"]
        await specialist_status(call.handler, "timed_out")

        await lobby.send({"type": "control", "op": "accept",
                          "invitation": ringing["invitation"]})
        error = await expect_error(lobby, "conflict")
        assert "no longer open" in error["message"]
        refused = await hello_into(server, sam, call.session_id)
        await expect_error(refused, "not_found")  # timed out: no part in it (decision 39)
    finally:
        await server.stop()


async def test_a_ring_whose_node_died_is_timed_out_by_the_sweep(backend: dict[str, Any],
                                                                  tmp_path: Path) -> None:
    """The node that rang keeps the ring's timer. If that node died, another node's sweep
    ends the ring shortly after: the specialist's desk and the handler both hear it."""
    server = await start_server(tmp_path, specialist_ring=1, **backend)
    try:
        call = await open_call(server, "hannah")
        _, lobby = await specialist_on_call(server, "sam")
        await invite(call)
        ringing = await lobby.expect("invitation", op="ringing")
        room = server.app[keys.ROOM]
        for timer in room._timers.values():  # as if the ringing node had died
            timer.cancel()
        room._timers.clear()
        timed_out = await lobby.expect("invitation", op="timed_out", timeout=8)
        assert timed_out["invitation"] == ringing["invitation"]
        await specialist_status(call.handler, "timed_out")
        # Exactly once: a second sweep finds nothing left to time out.
        assert await room.time_out_overdue(grace=0) == 0
    finally:
        await server.stop()


async def test_offline_or_unavailable_specialists_cannot_be_named(live: LiveServer) -> None:
    """Naming a specialist who is offline, unavailable, or unknown is an error and rings
    nobody."""
    call = await open_call(live, "hannah")
    olly = await live.staff_client("olly", StaffRole.SPECIALIST)  # available, no socket
    await olly.api("POST", "/api/me/availability", {"available": True}, expect=200)
    una = await live.staff_client("una", StaffRole.SPECIALIST)  # online, not available
    una_lobby = await una.signal(None)
    _, sam_lobby = await specialist_on_call(live, "sam")  # available, then not
    await sam_lobby.send({"type": "control", "op": "available", "value": False})
    await barrier(sam_lobby)

    for name in ("olly", "una", "sam", "nobody"):
        await invite(call, name)
        error = await expect_error(call.handler, "conflict")
        assert "not available" in error["message"]
    await invite(call)
    await expect_error(call.handler, "conflict")

    for lobby in (una_lobby, sam_lobby):
        await barrier(lobby)
        assert invitations(lobby) == []
    _, body = await call.staff.api("GET", f"/api/sessions/{call.session_id}", expect=200)
    assert body["status"]["specialist"] is None


async def test_a_reconnected_lobby_hears_the_ringing_invitation_again(
    live: LiveServer,
) -> None:
    """A specialist whose lobby socket is replaced while an invitation rings gets it again,
    and can accept from the new socket."""
    call = await open_call(live, "hannah", ref="CAD-9")
    sam, lobby = await specialist_on_call(live, "sam")
    await invite(call)
    ringing = await lobby.expect("invitation", op="ringing")
    await lobby.close()

    again = await sam.signal(None)
    repeated = await again.expect("invitation", op="ringing")
    assert repeated["invitation"] == ringing["invitation"]
    assert repeated["session"] == call.session_id and repeated["incident_ref"] == "CAD-9"

    await again.send({"type": "control", "op": "accept", "invitation": ringing["invitation"]})
    await again.expect("invitation", op="accepted")
    socket = await sam.signal(call.session_id)
    assert socket.welcome["role"] == "specialist"


async def test_ending_or_cancelling_stops_the_ringing(live: LiveServer) -> None:
    """cancel_specialist and ending the session both tell the specialist `cancelled`; an
    accept after that is refused."""
    call = await open_call(live, "hannah")
    sam, lobby = await specialist_on_call(live, "sam")

    await invite(call)
    first = await lobby.expect("invitation", op="ringing")
    await call.handler.send({"type": "control", "op": "cancel_specialist"})
    await lobby.expect("invitation", op="cancelled", invitation=first["invitation"])
    await specialist_status(call.handler, "cancelled")

    await invite(call, "sam")
    second = await lobby.expect("invitation", op="ringing")
    await call.handler.send({"type": "control", "op": "end"})
    cancelled = await lobby.expect("invitation", op="cancelled")
    assert cancelled["invitation"] == second["invitation"]
    assert await call.handler.expect_closed() == (1000, "session_ended")

    await lobby.send({"type": "control", "op": "accept", "invitation": second["invitation"]})
    await expect_error(lobby, "conflict")
    refused = await hello_into(live, sam, call.session_id)
    await expect_error(refused, "not_found")  # cancelled: no part in it (decision 39)
