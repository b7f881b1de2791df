"""Building blocks for signalling tests: a call with its handler and caller, specialists on
call, and ways to read what a socket got between two points."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from server.accounts import StaffRole
from tests.support.live import LiveServer, SignalClient, StaffClient


@dataclass
class Call:
    """One session: the handler's signed-in browser and socket, and the caller's socket."""

    staff: StaffClient
    session_id: str
    handler: SignalClient
    caller: SignalClient
    credential: str


async def open_call(
    server: LiveServer, handler_name: str, *, ref: str = "CAD-1", join_caller: bool = True
) -> Call:
    """Create a session, join its handler and (unless told not to) its caller.

    With join_caller=False the caller's socket is connected but has sent no hello yet.
    """
    staff = await server.staff_client(handler_name, StaffRole.HANDLER)
    session_id = await staff.create_session(ref=ref)
    handler = await staff.signal(session_id)
    redeemed = await server.redeem(server.latest_token())
    caller = await SignalClient.connect(server, server.new_http())
    if join_caller:
        await caller.hello(credential=redeemed["credential"])
        await handler.expect("peer", op="joined", role="victim")
    return Call(staff, session_id, handler, caller, str(redeemed["credential"]))


async def raw_socket(server: LiveServer, staff: StaffClient | None = None) -> SignalClient:
    """A connected socket that has said nothing yet (with a staff member's cookies if given)."""
    return await SignalClient.connect(server, staff.http if staff else server.new_http())


async def expect_error(client: SignalClient, code: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next error frame, which must carry `code` and no seq."""
    error = await client.expect("error", timeout=timeout)
    assert error["code"] == code, error
    assert "seq" not in error, error
    return error


async def frames_until(
    client: SignalClient, kind: str, timeout: float = 5.0, **match: Any
) -> list[dict[str, Any]]:
    """Everything `client` receives up to and including the next `kind` frame matching."""
    start = len(client.received)
    await client.expect(kind, timeout=timeout, **match)
    return client.received[start:]


async def chat_round_trip(sender: SignalClient, receiver: SignalClient, text: str) -> None:
    """`text` sent as chat by one participant arrives at the other."""
    await sender.send({"type": "chat", "text": text})
    chat = await receiver.expect("chat", text=text)
    assert chat["from"] == sender.pid


async def barrier(client: SignalClient) -> None:
    """Wait until the server has handled every frame this socket sent before (ping/pong)."""
    await client.send({"type": "ping"})
    await client.expect("pong")


async def specialist_on_call(server: LiveServer, username: str) -> tuple[StaffClient,
                                                                          SignalClient]:
    """A specialist signed in, with a lobby socket, marked available."""
    staff = await server.staff_client(username, StaffRole.SPECIALIST)
    lobby = await staff.signal(None)
    assert lobby.welcome["session"] is None and lobby.welcome["role"] == "specialist"
    await lobby.send({"type": "control", "op": "available", "value": True})
    await barrier(lobby)
    return staff, lobby


async def bring_specialist(server: LiveServer, call: Call, username: str) -> tuple[
    StaffClient, SignalClient
]:
    """Invite a specialist into `call`, accept, and join them; returns their session socket."""
    staff, lobby = await specialist_on_call(server, username)
    await call.handler.send({"type": "control", "op": "invite_specialist",
                             "username": username})
    ringing = await lobby.expect("invitation", op="ringing", session=call.session_id)
    await lobby.send({"type": "control", "op": "accept", "invitation": ringing["invitation"]})
    await lobby.expect("invitation", op="accepted")
    socket = await staff.signal(call.session_id)
    assert socket.welcome["role"] == "specialist"
    await call.handler.expect("peer", op="joined", role="specialist")
    if call.caller.welcome:
        await call.caller.expect("peer", op="joined", role="specialist")
    return staff, socket


def mentions(frame: dict[str, Any], text: str) -> bool:
    return text in json.dumps(frame, ensure_ascii=False)


def padded_frame(message: dict[str, Any], size: int) -> str:
    """`message` as JSON text of exactly `size` UTF-8 bytes (padded with JSON whitespace)."""
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    pad = size - len(text.encode())
    assert pad >= 0, "message is already larger than the size asked for"
    frame = text[:-1] + " " * pad + "}"
    assert len(frame.encode()) == size
    return frame
