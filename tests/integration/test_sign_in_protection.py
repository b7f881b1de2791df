"""Sign-in a stranger cannot turn against a real user, and cutting an account off, over HTTP.

A stranger's wrong passwords throttle untrusted browsers only (429 with Retry-After); a browser
that signed in before carries a device cookie and keeps getting in with the right password.
`erv unlock`, `erv set-password`, `erv disable-user` and `erv enable-user` act on a running
server: a password change or disable ends every sign-in and every open socket at once, on
every node.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server import cli
from server.accounts import StaffRole
from tests.support.live import PASSWORD, LiveServer, SignalClient, StaffClient, start_server
from tests.support.record import backend_env
from tests.support.web_checks import assert_no_store_and_csp, set_cookies

NEW_PASSWORD = "a long enough new password"


async def sign_in(server: LiveServer, http: aiohttp.ClientSession, username: str,
                  password: str) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with http.post(
        f"{server.url}/login", data={"username": username, "password": password},
        headers={"Accept": "application/json"},
    ) as response:
        body = await response.json()
        assert_no_store_and_csp(response)
        return response.status, body, response


async def sign_out(server: LiveServer, http: aiohttp.ClientSession, csrf: str) -> None:
    """Sign out; the session cookie goes, the device cookie stays."""
    async with http.post(f"{server.url}/logout", headers={"X-CSRF-Token": csrf},
                         allow_redirects=False) as response:
        assert response.status == 303


async def erv(backend: dict[str, Any], server: LiveServer, monkeypatch: pytest.MonkeyPatch,
              *argv: str, password: str = "") -> int:
    """Run the `erv` command line against the stores of `server` (on another thread: main()
    runs its own event loop)."""
    monkeypatch.setenv("ERV_DATA_DIR", str(server.config.data_dir))
    monkeypatch.delenv("ERV_REDIS_URL", raising=False)
    for name, value in backend_env(backend).items():
        monkeypatch.setenv(name, value)
    if password:
        monkeypatch.setenv("ERV_NEW_PASSWORD", password)
    return await asyncio.to_thread(cli.main, list(argv))


async def throttle(server: LiveServer, username: str, tries: int = 8) -> aiohttp.ClientResponse:
    """A stranger's guesses until the answer is 429; returns that answer."""
    stranger = server.new_http()
    for n in range(tries):
        status, body, response = await sign_in(server, stranger, username, f"guess number {n}")
        if status == 429:
            return response
        assert status == 401 and body["error"] == "sign_in_failed"
    raise AssertionError(f"{tries} wrong passwords were never throttled")


async def test_a_strangers_failures_never_lock_out_a_browser_that_signed_in_before(
    backend: dict[str, Any], tmp_path: Path,
) -> None:
    server = await start_server(tmp_path, login_max_failures=3, **backend)
    try:
        await server.add_staff("hannah", StaffRole.HANDLER)
        browser = server.new_http()
        status, body, response = await sign_in(server, browser, "hannah", PASSWORD)
        assert status == 200
        await sign_out(server, browser, body["csrf_token"])
        [device] = [c for c in set_cookies(response) if c.name == "erv_device"]
        assert "httponly" in device.attributes
        assert device.attributes.get("samesite", "").lower() == "strict"
        assert device.attributes.get("path") == "/"
        assert "hannah" not in device.value  # sealed: neither readable nor forgeable

        refused = await throttle(server, "hannah")
        retry_after = int(refused.headers["Retry-After"])
        assert retry_after > 0
        stranger = server.new_http()
        status, body, response = await sign_in(server, stranger, "hannah", PASSWORD)
        assert status == 429 and body["error"] == "sign_in_throttled"
        assert int(response.headers["Retry-After"]) > 0
        assert "Set-Cookie" not in response.headers

        # Her own browser, with the device cookie, still gets in however many guesses came.
        for _ in range(3):
            status, body, _ = await sign_in(server, browser, "hannah", PASSWORD)
            assert status == 200, body
            await sign_out(server, browser, body["csrf_token"])
            assert [c.key for c in browser.cookie_jar] == ["erv_device"]
        # A forged or altered device cookie counts for nothing.
        forged = server.new_http()
        forged.cookie_jar.update_cookies({"erv_device": device.value[:-4] + "AAAA"})
        status, _, _ = await sign_in(server, forged, "hannah", PASSWORD)
        assert status == 429
        # Another account on the same address was never throttled.
        await server.add_staff("sam", StaffRole.SPECIALIST)
        status, _, _ = await sign_in(server, server.new_http(), "sam", PASSWORD)
        assert status == 200
    finally:
        await server.stop()


async def test_the_html_form_says_when_sign_in_is_throttled(
    backend: dict[str, Any], tmp_path: Path,
) -> None:
    server = await start_server(tmp_path, login_max_failures=2, **backend)
    try:
        await server.add_staff("hannah", StaffRole.HANDLER)
        await throttle(server, "hannah")
        async with server.new_http().post(
            f"{server.url}/login", data={"username": "hannah", "password": PASSWORD},
            allow_redirects=False,
        ) as response:
            page = await response.text()
            assert response.status == 429
            assert int(response.headers["Retry-After"]) > 0
            assert "Too many" in page and PASSWORD not in page
    finally:
        await server.stop()


async def test_erv_unlock_lets_an_untrusted_browser_in_again(
    backend: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = await start_server(tmp_path, login_max_failures=3, **backend)
    try:
        await server.add_staff("hannah", StaffRole.HANDLER)
        await throttle(server, "hannah")
        assert (await sign_in(server, server.new_http(), "hannah", PASSWORD))[0] == 429
        assert await erv(backend, server, monkeypatch, "unlock", "Hannah") == 0
        assert (await sign_in(server, server.new_http(), "hannah", PASSWORD))[0] == 200
        assert await erv(backend, server, monkeypatch, "unlock", "nobody") == 2
    finally:
        await server.stop()


async def test_a_password_change_or_disable_ends_every_sign_in_and_socket(
    backend: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = await start_server(tmp_path, account_watch_interval=0.2, **backend)
    try:
        desk = await server.staff_client("hannah", StaffRole.HANDLER)
        laptop = await server.staff_client("hannah")
        colleague = await server.staff_client("harry", StaffRole.HANDLER)
        session_id = await desk.create_session()
        in_call = await desk.signal(session_id)
        lobby = await laptop.signal(None)
        theirs = await colleague.signal(None)

        assert await erv(backend, server, monkeypatch, "set-password", "hannah",
                         password=NEW_PASSWORD) == 0
        for socket in (in_call, lobby):
            code, reason = await socket.expect_closed(timeout=5)
            assert reason == "signed_out", (code, reason)
        for client in (desk, laptop):
            status, body = await client.api("GET", "/api/me")
            assert status == 401 and body["error"] == "unauthorized"
        await colleague.api("GET", "/api/me", expect=200)
        await theirs.send({"type": "ping"})
        assert (await theirs.expect("pong"))["type"] == "pong"

        fresh = StaffClient(server, server.new_http())
        await fresh.sign_in("hannah", NEW_PASSWORD)
        again = await fresh.signal(None)
        assert await erv(backend, server, monkeypatch, "disable-user", "hannah") == 0
        code, reason = await again.expect_closed(timeout=5)
        assert reason == "signed_out", (code, reason)
        status, _ = await fresh.api("GET", "/api/me")
        assert status == 401
        assert (await sign_in(server, server.new_http(), "hannah", NEW_PASSWORD))[0] == 401

        assert await erv(backend, server, monkeypatch, "enable-user", "hannah") == 0
        assert (await sign_in(server, server.new_http(), "hannah", NEW_PASSWORD))[0] == 200
        status, _ = await fresh.api("GET", "/api/me")
        assert status == 401  # enabling does not bring old sign-ins back
        assert await erv(backend, server, monkeypatch, "disable-user", "nobody") == 2
    finally:
        await server.stop()


async def test_a_disable_closes_the_accounts_sockets_on_every_node(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two nodes on one Redis; only node A watches accounts (node B's watch is off), so the
    socket node B holds is closed by way of the shared hub."""
    node_a = await start_server(tmp_path / "a", redis_url=redis_url, account_watch_interval=0.2)
    node_b = await start_server(tmp_path / "b", redis_url=redis_url,
                                account_watch_interval=3600)
    try:
        await node_a.add_staff("hannah", StaffRole.HANDLER)
        on_b = StaffClient(node_b, node_b.new_http())
        await on_b.sign_in("hannah", PASSWORD)
        socket = await SignalClient.connect(node_b, on_b.http)
        await socket.hello(session=None)
        assert await erv({"redis_url": redis_url}, node_a, monkeypatch,
                         "disable-user", "hannah") == 0
        code, reason = await socket.expect_closed(timeout=5)
        assert reason == "signed_out", (code, reason)
        status, _ = await on_b.api("GET", "/api/me")
        assert status == 401
    finally:
        await node_b.stop()
        await node_a.stop()
