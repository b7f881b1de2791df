"""/healthz says whether this node can serve, and nothing more to the public; /metrics and
the detailed /healthz give monitoring the live figures, with its token or on its own
listener, and are not served on the public origin otherwise."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.accounts import StaffRole
from tests.support.calls import chat_round_trip, open_call
from tests.support.live import LiveServer, SignalClient, free_port, start_server

TOKEN = "monitoring token for the tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def monitored(backend: dict[str, Any], tmp_path: Path) -> AsyncIterator[LiveServer]:
    """A server with ERV_METRICS_TOKEN set, on each backend in turn."""
    server = await start_server(tmp_path, metrics_token=TOKEN, **backend)
    try:
        yield server
    finally:
        await server.stop()


def parse(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        match = re.fullmatch(r"(erv_[a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


async def metrics(live: LiveServer, url: str | None = None) -> dict[str, float]:
    http = live.new_http()
    async with http.get(url or f"{live.url}/metrics", headers=AUTH) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse(await response.text())


async def test_health_and_metrics_follow_a_call(monitored: LiveServer) -> None:
    live = monitored
    http = live.new_http()
    async with http.get(f"{live.url}/healthz", headers=AUTH) as response:
        health = await response.json()
        assert response.status == 200, health
    assert health["ok"] is True and health["backend"] == live.backend
    assert health["redis" if live.backend == "redis" else "database"] == "ok"
    assert health["sockets"] == 0 and health["node"] and health["connections"] >= 1
    before = await metrics(live)
    assert before["erv_sockets"] == 0 and before["erv_live_sessions"] == 0
    assert before["erv_messages_relayed_total"] == 0
    assert before["erv_connections_open"] >= 1
    assert before["erv_connections_timed_out_total"] == 0

    call = await open_call(live, "hannah")
    await chat_round_trip(call.caller, call.handler, "hello")
    await chat_round_trip(call.handler, call.caller, "hello back")
    during = await metrics(live)
    assert during["erv_sockets"] == 2 and during["erv_live_sessions"] == 1
    assert during["erv_messages_relayed_total"] == 2
    assert during["erv_connections_open"] >= 2  # the two sockets at least
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
    async with http.get(f"{live.url}/healthz", headers=AUTH) as response:
        assert (await response.json())["sockets"] == 2


async def test_the_public_health_check_says_only_ok(monitored: LiveServer) -> None:
    http = monitored.new_http()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):
        async with http.get(f"{monitored.url}/healthz", headers=headers) as response:
            assert response.status == 200
            assert await response.json() == {"ok": True}, headers


async def test_metrics_need_the_token(monitored: LiveServer) -> None:
    http = monitored.new_http()
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer wrong"},
                    {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):
        async with http.get(f"{monitored.url}/metrics", headers=headers) as response:
            assert response.status == 401, headers
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert "erv_" not in await response.text()
    async with http.get(f"{monitored.url}/metrics",
                        headers={"Authorization": f"bearer {TOKEN}"}) as response:
        assert response.status == 200  # the scheme is case-insensitive (RFC 9110)


async def test_without_a_token_or_listener_metrics_are_not_served(live: LiveServer) -> None:
    http = live.new_http()
    for headers in ({}, AUTH):
        async with http.get(f"{live.url}/metrics", headers=headers) as response:
            assert response.status == 404
            assert "erv_" not in await response.text()
        async with http.get(f"{live.url}/healthz", headers=headers) as response:
            assert response.status == 200 and await response.json() == {"ok": True}


async def test_metrics_on_their_own_listener(backend: dict[str, Any], tmp_path: Path) -> None:
    port = free_port()
    live = await start_server(tmp_path, metrics_listen=f"127.0.0.1:{port}", **backend)
    try:
        http = live.new_http()
        async with http.get(f"{live.url}/metrics") as response:
            assert response.status == 404  # not on the public origin
        async with http.get(f"{live.url}/healthz") as response:
            assert await response.json() == {"ok": True}
        inside = f"http://127.0.0.1:{port}"
        async with http.get(f"{inside}/metrics") as response:
            assert response.status == 200
            assert parse(await response.text())["erv_sockets"] == 0
        async with http.get(f"{inside}/healthz") as response:
            body = await response.json()
            assert response.status == 200 and body["backend"] == live.backend
            assert body["sockets"] == 0
        for path in ("/login", "/j/abc", "/api/sessions", "/ws", "/static/app.js"):
            async with http.get(f"{inside}{path}") as response:
                assert response.status == 404, path  # the listener serves nothing else
    finally:
        await live.stop()
    with pytest.raises(aiohttp.ClientConnectionError):  # and it closes with the node
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics"):
            pass


async def test_the_listener_asks_for_the_token_too_if_one_is_set(tmp_path: Path) -> None:
    port = free_port()
    live = await start_server(tmp_path, metrics_listen=f"127.0.0.1:{port}",
                              metrics_token=TOKEN)
    try:
        http = live.new_http()
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            assert response.status == 401
        await metrics(live, f"http://127.0.0.1:{port}/metrics")
        async with http.get(f"{live.url}/metrics", headers=AUTH) as response:
            assert response.status == 404  # with a listener, never on the public origin
        async with http.get(f"{live.url}/healthz", headers=AUTH) as response:
            assert await response.json() == {"ok": True}
    finally:
        await live.stop()


async def test_metrics_and_health_hold_nothing_personal(monitored: LiveServer) -> None:
    live = monitored
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session_id = await handler.create_session(ref="CAD-4242")
    http = live.new_http()
    async with http.get(f"{live.url}/metrics", headers=AUTH) as response:
        text = await response.text()
    async with http.get(f"{live.url}/healthz", headers=AUTH) as response:
        text += await response.text()
    for secret in (session_id, "CAD-4242", "7911123456", live.latest_token()):
        assert secret not in text
