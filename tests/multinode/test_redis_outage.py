"""Redis goes away for five seconds in the middle of a call, and comes back.

No node crashes; each says so on /healthz while Redis is away and recovers by itself; new
sessions are refused with a clear 503 meanwhile and work again after; the call's video keeps
flowing (it is peer to peer); and every case-record write that was acknowledged is still
there afterwards, with the hash chain intact.
"""

from __future__ import annotations

import asyncio
import subprocess
import time

from server.accounts import StaffRole
from tests.support.live import SignalClient, StaffClient
from tests.support.nodes import ERV, Cluster, Node
from tests.support.peers import Pump

OUTAGE = 5.0


async def keep_writing(staff: StaffClient, session_id: str, stop: asyncio.Event,
                       acknowledged: list[str], refused: list[int]) -> None:
    """Write referral notes (case-record events) all along; remember which were answered."""
    n = 0
    while not stop.is_set():
        n += 1
        note = f"welfare check {n}"
        try:
            status, _ = await staff.api("POST", f"/api/sessions/{session_id}/referrals",
                                           {"kind": "idva", "status": "made",
                                            "notes": note})
        except Exception:
            status = 0
        if status == 201:
            acknowledged.append(note)
        else:
            refused.append(status)
        await asyncio.sleep(0.1)


async def test_redis_outage_mid_call(cluster: Cluster) -> None:
    node1, node2 = cluster.nodes
    await cluster.add_staff("hannah", StaffRole.HANDLER)
    handler = await node2.staff_client("hannah")
    session_id = await handler.create_session(ref="CAD-77")
    handler_socket = await handler.signal(session_id)
    handler_pump = Pump(handler_socket)
    credential = await node1.redeem(await node2.latest_token(handler))
    caller_socket = await SignalClient.connect(node1, node1.new_http())  # type: ignore[arg-type]
    await caller_socket.hello(credential=credential)
    caller_pump = Pump(caller_socket, send_video=True)
    await caller_pump.peer(handler_socket.pid).offer()
    video = handler_pump.peer(caller_socket.pid).counter
    await asyncio.wait_for(video.enough.wait(), timeout=30)

    stop = asyncio.Event()
    acknowledged: list[str] = []
    refused: list[int] = []
    writer = asyncio.create_task(keep_writing(handler, session_id, stop, acknowledged, refused))
    await asyncio.sleep(0.5)

    # Redis stops (a clean shutdown, as a restart or failover would be).
    cluster.redis.stop()
    went_down = time.monotonic()
    frames_at_outage = video.frames
    saw_red: set[str] = set()
    refusal_message = ""
    while time.monotonic() - went_down < OUTAGE:
        for node in cluster.nodes:
            status, health = await node.health()
            if status == 503:
                assert health["ok"] is False and health["redis"] == "unreachable", health
                saw_red.add(node.name)
        status, body = await handler.api("POST", "/api/sessions",
                                         {"incident_ref": "CAD-78", "phone": "07911 123456"})
        if status == 503:
            refusal_message = body["message"]
            assert body["error"] == "unavailable", body
        else:
            assert status != 201, "a session was created while Redis was away"
        await asyncio.sleep(0.25)
    assert saw_red == {"node1", "node2"}
    assert "try again" in refusal_message.lower(), refusal_message
    # The call's video kept coming through the outage.
    assert video.frames > frames_at_outage + 30, (frames_at_outage, video.frames)
    assert all(node.alive for node in cluster.nodes), [n.log() for n in cluster.nodes]

    # Redis comes back; the nodes recover without anyone touching them.
    cluster.redis.start()
    await wait_healthy(cluster.nodes, timeout=10)
    stop.set()
    await writer
    assert refused, "no write was even attempted during the outage"
    assert len(acknowledged) >= 5

    # New sessions work again, on either node, and a caller can join one.
    _, created = await handler.api("POST", "/api/sessions",
                                   {"incident_ref": "CAD-79", "phone": "07911 123456"},
                                   expect=201)
    fresh = created["session"]["id"]
    fresh_socket = await handler.signal(fresh)
    fresh_credential = await node1.redeem(await node2.latest_token(handler))
    fresh_caller = await SignalClient.connect(node1, node1.new_http())  # type: ignore[arg-type]
    await fresh_caller.hello(credential=fresh_credential)
    await fresh_socket.expect("peer", op="joined", role="victim", timeout=10)

    # The first call's signalling works again too.
    await caller_socket.send({"type": "chat", "text": "still here"})
    await handler_pump.expect("chat", text="still here", timeout=10)

    # Every acknowledged write is in the record, and the chain verifies.
    _, case = await handler.api("GET", f"/api/sessions/{session_id}/case", expect=200)
    stored = [r["notes"] for r in case["case"]["referrals"]]
    missing = [note for note in acknowledged if note not in stored]
    assert not missing, missing
    verify = subprocess.run(
        [str(ERV), "verify-record"], env=node1.env, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "intact" in verify.stdout

    for node in cluster.nodes:
        assert node.alive
        assert "Traceback" not in node.log() or "redis" in node.log().lower()
    for pump in (caller_pump, handler_pump):
        await pump.close()


async def wait_healthy(nodes: list[Node], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for node in nodes:
        while True:
            status, health = await node.health()
            if status == 200:
                assert health["redis"] == "ok"
                break
            assert time.monotonic() < deadline, health
            await asyncio.sleep(0.2)


