"""Three server processes share one Redis: a call spread across all three survives losing one.

The caller (an aiortc peer) is on node 1, the handler on node 2, the specialist on node 3.
Node 2 is killed with SIGKILL mid-call; the handler comes back on node 3 with the seq it last
saw and gets every message it missed, in order, once, while its video never stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.accounts import StaffRole
from tests.support.live import SignalClient
from tests.support.nodes import Cluster, start_cluster
from tests.support.peers import Pump


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = await start_cluster(tmp_path, 3)
    try:
        yield cluster
    finally:
        await cluster.close()


async def frames_rising(pump: Pump, remote: str, seconds: float = 0.6) -> None:
    counter = pump.peers[remote].counter
    before = counter.frames
    await asyncio.sleep(seconds)
    assert counter.frames > before, "video stopped arriving"


async def test_call_across_three_nodes_survives_losing_the_handlers_node(
    cluster: Cluster,
) -> None:
    node1, node2, node3 = cluster.nodes
    await cluster.add_staff("hannah", StaffRole.HANDLER)
    await cluster.add_staff("sam", StaffRole.SPECIALIST)

    # The specialist is on shift on node 3.
    specialist = await node3.staff_client("sam")
    desk = await specialist.signal(None)
    await desk.send({"type": "control", "op": "available", "value": True})

    # The handler works on node 2; the caller's phone lands on node 1.
    handler = await node2.staff_client("hannah")
    session_id = await handler.create_session(ref="CAD-9001")
    handler_socket = await handler.signal(session_id)
    handler_pump = Pump(handler_socket)
    credential = await node1.redeem(await node2.latest_token(handler))
    caller_socket = await SignalClient.connect(node1, node1.new_http())  # type: ignore[arg-type]
    await caller_socket.hello(credential=credential)
    caller_pump = Pump(caller_socket, send_video=True)
    assert [p["pid"] for p in caller_socket.welcome["peers"]] == [handler_socket.pid]

    await caller_pump.peer(handler_socket.pid).offer()
    to_handler = handler_pump.peer(caller_socket.pid)
    await asyncio.wait_for(to_handler.counter.enough.wait(), timeout=30)

    # The specialist, rung on node 3 by the handler on node 2, joins on node 3.
    await handler_socket.send({"type": "control", "op": "invite_specialist"})
    ringing = await desk.expect("invitation", op="ringing", timeout=10)
    assert ringing["session"] == session_id
    await desk.send({"type": "control", "op": "accept", "invitation": ringing["invitation"]})
    await desk.expect("invitation", op="accepted")
    specialist_socket = await specialist.signal(session_id)
    assert specialist_socket.welcome["role"] == "specialist"
    specialist_pump = Pump(specialist_socket)
    joined = await caller_pump.expect("peer", op="joined", role="specialist")
    await caller_pump.peer(joined["pid"]).offer()
    to_specialist = specialist_pump.peer(caller_socket.pid)
    await asyncio.wait_for(to_specialist.counter.enough.wait(), timeout=30)
    await frames_rising(handler_pump, caller_socket.pid)

    # Node 2 dies. The handler's socket drops; messages keep being sent to it meanwhile.
    await handler_pump.expect("status")  # drained up to here; everything later is counted
    seen_before = handler_socket.last_seq
    node2.kill()
    killed_at = time.monotonic()
    await asyncio.wait_for(handler_pump.closed.wait(), timeout=5)
    sent = [f"update {n}" for n in range(12)]
    for text in sent[:6]:
        await caller_socket.send({"type": "chat", "text": text})
    await specialist_socket.send({"type": "advice", "text": "ask about the children"})
    for text in sent[6:]:
        await caller_socket.send({"type": "chat", "text": text})

    # The handler's browser reconnects, to node 3 this time, and resumes.
    resumed = await SignalClient.connect(node3, handler.http)  # type: ignore[arg-type]
    resumed.last_seq = handler_socket.last_seq
    welcome = await resumed.hello(resume={
        "pid": handler_socket.pid, "secret": handler_socket.welcome["resume_secret"],
        "last_seq": handler_socket.last_seq,
    })
    reconnected_after = time.monotonic() - killed_at
    assert welcome["resumed"] is True and welcome["pid"] == handler_socket.pid
    print(f"handler resumed on node 3 {reconnected_after:.2f} s after node 2 was killed")
    assert reconnected_after < 3.0, reconnected_after

    # Every message sent while it was away arrives, in order (SignalClient checks each seq
    # follows the last), exactly once.
    chats: list[str] = []
    advice: list[str] = []
    while len(chats) < len(sent) or not advice:
        message = await resumed.next(timeout=5)
        if message["type"] == "chat":
            chats.append(message["text"])
        elif message["type"] == "advice":
            advice.append(message["text"])
    assert chats == sent
    assert advice == ["ask about the children"]
    assert resumed.last_seq > seen_before
    # Nothing is repeated after the catch-up either.
    await resumed.send({"type": "ping"})
    while (message := await resumed.next(timeout=5))["type"] != "pong":
        assert message["type"] not in ("chat", "advice"), message

    # Media never went through node 2: the handler's video is still arriving.
    await frames_rising(handler_pump, caller_socket.pid)
    await frames_rising(specialist_pump, caller_socket.pid)

    # And the resumed handler is fully in the call: its chat reaches the caller on node 1.
    await resumed.send({"type": "chat", "text": "I can still see you"})
    assert (await caller_pump.expect("chat", text="I can still see you"))["role"] == "handler"
    status, health = await node3.health()
    assert status == 200 and health["ok"] is True
    assert node1.alive and node3.alive

    for pump in (caller_pump, handler_pump, specialist_pump):
        await pump.close()


async def test_a_node_shut_down_on_purpose_hands_its_clients_to_the_others(
    cluster: Cluster,
) -> None:
    """SIGTERM (a rolling upgrade): the node says `bye server_shutdown`, marks its participants
    away at once, and they resume on another node with nothing missed."""
    node1, node2, _ = cluster.nodes
    await cluster.add_staff("hannah", StaffRole.HANDLER)
    handler = await node2.staff_client("hannah")
    session_id = await handler.create_session(ref="CAD-9002")
    handler_socket = await handler.signal(session_id)
    credential = await node1.redeem(await node2.latest_token(handler))
    caller = await SignalClient.connect(node1, node1.new_http())  # type: ignore[arg-type]
    await caller.hello(credential=credential)
    await handler_socket.expect("peer", op="joined", role="victim")

    node2.stop()
    assert await handler_socket.expect_closed() == (1001, "server_shutdown")
    away = await caller.expect("peer", op="updated", timeout=5)
    assert away["pid"] == handler_socket.pid and away["state"] == "away"
    await caller.send({"type": "chat", "text": "are you still there"})

    resumed = await SignalClient.connect(node1, handler.http)  # type: ignore[arg-type]
    resumed.last_seq = handler_socket.last_seq
    welcome = await resumed.hello(resume={
        "pid": handler_socket.pid, "secret": handler_socket.welcome["resume_secret"],
        "last_seq": handler_socket.last_seq,
    })
    assert welcome["resumed"] is True
    assert (await resumed.expect("chat"))["text"] == "are you still there"
    back = await caller.expect("peer", op="updated")
    assert back["pid"] == handler_socket.pid and back["state"] == "present"
