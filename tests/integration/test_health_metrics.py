"""/healthz says whether this node can serve; /metrics gives Prometheus the live figures."""

from __future__ import annotations

import re

from server.accounts import StaffRole
from tests.support.calls import chat_round_trip, open_call
from tests.support.live import LiveServer, SignalClient


async def metrics(live: LiveServer) -> dict[str, float]:
    http = live.new_http()
    async with http.get(f"{live.url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    values = {}
    for line in text.splitlines():
        match = re.fullmatch(r"(erv_[a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


async def test_health_and_metrics_follow_a_call(live: LiveServer) -> None:
    http = live.new_http()
    async with http.get(f"{live.url}/healthz") as response:
        health = await response.json()
        assert response.status == 200, health
    assert health["ok"] is True and health["backend"] == live.backend
    assert health["redis" if live.backend == "redis" else "database"] == "ok"
    assert health["sockets"] == 0 and health["node"]
    before = await metrics(live)
    assert before["erv_sockets"] == 0 and before["erv_live_sessions"] == 0
    assert before["erv_messages_relayed_total"] == 0

    call = await open_call(live, "hannah")
    await chat_round_trip(call.caller, call.handler, "hello")
    await chat_round_trip(call.handler, call.caller, "hello back")
    during = await metrics(live)
    assert during["erv_sockets"] == 2 and during["erv_live_sessions"] == 1
    assert during["erv_messages_relayed_total"] == 2
    if live.backend == "redis":
        assert during["erv_redis_up"] == 1
        assert during["erv_redis_roundtrip_seconds_count"] >= 1
    else:
        assert "erv_redis_up" not in during

    # A resume is counted.
    pid, secret = call.caller.pid, call.caller.welcome["resume_secret"]
    await call.caller.close()
    again = await SignalClient.connect(live, live.new_http())
    again.last_seq = call.caller.last_seq
    await again.hello(resume={"pid": pid, "secret": secret, "last_seq": call.caller.last_seq})
    assert (await metrics(live))["erv_resumes_total"] == 1
    async with http.get(f"{live.url}/healthz") as response:
        assert (await response.json())["sockets"] == 2


async def test_metrics_and_health_hold_nothing_personal(live: LiveServer) -> None:
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session_id = await handler.create_session(ref="CAD-4242")
    http = live.new_http()
    async with http.get(f"{live.url}/metrics") as response:
        text = await response.text()
    async with http.get(f"{live.url}/healthz") as response:
        text += await response.text()
    for secret in (session_id, "CAD-4242", "7911123456", live.latest_token()):
        assert secret not in text
