"""Issue 11, finding 1, across nodes: a second device joining as the caller on another node
than the caller in the call (and the handler) waits for the handler, whose answer reaches it
across Redis; a new link ended on one node cuts off a credential held on another."""

from __future__ import annotations

import pytest

from server.accounts import StaffRole
from tests.support.calls import chat_round_trip, expect_error
from tests.support.live import SignalClient, StaffClient
from tests.support.nodes import Cluster, Node


async def call_across(cluster: Cluster, ref: str, caller_node: Node) -> tuple[
    StaffClient, str, SignalClient, str, SignalClient
]:
    """The handler on node 1 with a session; the caller's credential redeemed and joined on
    `caller_node`. Returns (handler, session id, handler socket, credential, caller socket)."""
    await cluster.add_staff("hannah", StaffRole.HANDLER)
    node1 = cluster.nodes[0]
    handler = await node1.staff_client("hannah")
    session_id = await handler.create_session(ref=ref)
    handler_socket = await handler.signal(session_id)
    credential = await caller_node.redeem(await node1.latest_token(handler))
    caller = await SignalClient.connect(caller_node, caller_node.new_http())  # type: ignore[arg-type]
    await caller.hello(credential=credential)
    await handler_socket.expect("peer", op="joined", role="victim")
    return handler, session_id, handler_socket, credential, caller


@pytest.mark.parametrize("decision", ["admit", "refuse"])
async def test_the_handlers_answer_reaches_a_device_waiting_on_another_node(
    cluster: Cluster, decision: str,
) -> None:
    node1, node2 = cluster.nodes
    _, _, handler_socket, credential, caller = await call_across(cluster, "CAD-11", node1)
    await chat_round_trip(caller, handler_socket, "in the bathroom")

    device = await SignalClient.connect(node2, node2.new_http())  # type: ignore[arg-type]
    await device.send({"type": "hello", "v": 1, "credential": credential})
    waiting = await device.next()
    assert waiting["type"] == "waiting", waiting
    prompt = await handler_socket.expect("caller_device", op="waiting", timeout=10)
    await handler_socket.send({"type": "control", "op": f"{decision}_device",
                               "device": prompt["device"]})
    if decision == "admit":
        welcome = await device.expect("welcome", timeout=10)
        assert welcome["role"] == "victim"
        await device.expect("chat", text="in the bathroom", timeout=10)
        assert (await caller.expect_closed(timeout=10)) == (1000, "replaced")
    else:
        assert (await device.expect_closed(timeout=10)) == (1000, "refused")
        await chat_round_trip(handler_socket, caller, "still here")


async def test_a_new_link_on_one_node_cuts_off_the_old_credential_on_another(
    cluster: Cluster,
) -> None:
    node2 = cluster.nodes[1]
    handler, session_id, _, credential, old = await call_across(cluster, "CAD-12", node2)
    await handler.api("POST", f"/api/sessions/{session_id}/link", expect=200)
    assert (await old.expect_closed(timeout=10)) == (1000, "credential_ended")
    again = await SignalClient.connect(node2, node2.new_http())  # type: ignore[arg-type]
    await again.send({"type": "hello", "v": 1, "credential": credential})
    await expect_error(again, "unauthorized")
