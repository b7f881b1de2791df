"""Staff sign-in, the session cookie, CSRF, roles and the staff pages, over real HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server import cli, keys
from server.accounts import StaffRole, failure_delay
from server.phone import masked
from tests.support.live import PASSWORD, LiveServer, SignalClient, StaffClient, start_server
from tests.support.record import backend_env
from tests.support.web_checks import (
    assert_calm,
    assert_no_store_and_csp,
    set_cookies,
    start_server_with,
)

PHONE = "07911 123456"
E164 = "+447911123456"
GENERIC_FAILURE = "That username and password did not work."
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


async def sign_in_raw(
    server: LiveServer, username: str, password: str, http: aiohttp.ClientSession | None = None,
    **headers: str,
) -> tuple[int, Any, list[Any], float]:
    """POST /login as JSON; returns (status, body, Set-Cookie headers, seconds taken)."""
    http = http or server.new_http()
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with http.post(
        f"{server.url}/login", data={"username": username, "password": password},
        headers={"Accept": "application/json", **headers},
    ) as response:
        body = await response.json() if response.content_type == "application/json" \
            else await response.text()
        assert_no_store_and_csp(response)
        return response.status, body, set_cookies(response), loop.time() - started


async def raw(
    server: LiveServer, http: aiohttp.ClientSession, method: str, path: str, **kwargs: Any,
) -> tuple[int, aiohttp.ClientResponse, str]:
    """One request without following redirects; returns (status, response, body text)."""
    async with http.request(
        method, f"{server.url}{path}", allow_redirects=False, **kwargs
    ) as response:
        return response.status, response, await response.text()


async def own_sessions(client: StaffClient) -> list[dict[str, Any]]:
    _, body = await client.api("GET", "/api/sessions", expect=200)
    return list(body["sessions"])


# -- the cookie --------------------------------------------------------------------------------


async def test_sign_in_cookie_is_http_only_strict_and_stored_only_as_a_hash(
    live: LiveServer,
) -> None:
    """The cookie cannot be read by script or sent cross-site; the DB cannot be replayed."""
    await live.add_staff("hannah", StaffRole.HANDLER)
    status, body, cookies, _ = await sign_in_raw(live, "hannah", PASSWORD)
    assert status == 200, body
    assert body["role"] == "handler" and body["csrf_token"]
    [cookie] = [c for c in cookies if c.name != "erv_device"]
    assert cookie.name == "erv_staff"
    assert len(cookie.value) >= 32
    assert "httponly" in cookie.attributes
    assert cookie.attributes.get("samesite", "").lower() == "strict"
    assert cookie.attributes.get("path") == "/"
    assert "domain" not in cookie.attributes

    assert await stored_staff_sessions(live) == [
        hashlib.sha256(cookie.value.encode()).hexdigest()
    ]
    assert cookie.value.encode() not in await live.stored_bytes()


async def test_secure_cookies_use_the_host_prefix_and_secure_flag(
    backend: dict[str, Any], tmp_path: Path,
) -> None:
    """With secure_cookies on, the cookie is __Host-erv, Secure, HttpOnly, Strict, Path=/."""
    server = await start_server_with(tmp_path, secure_cookies=True, **backend)
    try:
        await server.add_staff("hannah", StaffRole.HANDLER)
        status, body, cookies, _ = await sign_in_raw(server, "hannah", PASSWORD)
        assert status == 200
        [cookie, device] = cookies
        assert device.name == "__Host-erv-device" and "secure" in device.attributes
        assert cookie.name == "__Host-erv"
        assert "secure" in cookie.attributes
        assert "httponly" in cookie.attributes
        assert cookie.attributes.get("samesite", "").lower() == "strict"
        assert cookie.attributes.get("path") == "/"
        assert "domain" not in cookie.attributes

        # Browsers ignore a __Host- cookie set without Secure, deletions included, so the
        # logout's expiring cookie must carry Secure too or the browser keeps the old one.
        status, response, _ = await raw(
            server, server.new_http(), "POST", "/logout",
            headers={"Cookie": f"__Host-erv={cookie.value}", "X-CSRF-Token": body["csrf_token"]},
        )
        assert status == 303
        [cleared] = set_cookies(response)
        assert cleared.name == "__Host-erv" and cleared.value in ("", '""')
        assert "secure" in cleared.attributes
        assert cleared.attributes.get("path") == "/"
        assert "domain" not in cleared.attributes
        assert await stored_staff_sessions(server) == []
    finally:
        await server.stop()


# -- failed sign-in, throttling and lock-out ---------------------------------------------------


async def test_wrong_password_is_401_with_a_generic_message_and_no_cookie(
    live: LiveServer,
) -> None:
    """Wrong password and unknown name get the same answer, and no session is made."""
    await live.add_staff("hannah", StaffRole.HANDLER)
    status, body, cookies, _ = await sign_in_raw(live, "hannah", "not the password at all")
    assert status == 401
    assert body == {"error": "sign_in_failed", "message": GENERIC_FAILURE}
    assert cookies == []
    status, body, cookies, _ = await sign_in_raw(live, "nobody", "not the password at all")
    assert (status, body["message"], cookies) == (401, GENERIC_FAILURE, [])

    # The HTML form says the same in the page and keeps the typed name, not the password.
    async with live.new_http().post(
        f"{live.url}/login", data={"username": "hannah", "password": "wrong password 123"},
        allow_redirects=False,
    ) as response:
        page = await response.text()
        assert response.status == 401
        assert "did not work" in page
        assert "wrong password 123" not in page
        assert "Set-Cookie" not in response.headers
        assert_calm(page)
    assert await stored_staff_sessions(live) == []


async def test_each_failure_makes_the_answer_slower(
    backend: dict[str, Any], tmp_path: Path,
) -> None:
    """The server waits at least the documented, growing delay after each failure."""
    server = await start_server(tmp_path, login_max_failures=3, **backend)
    try:
        await server.add_staff("hannah", StaffRole.HANDLER)
        for failures in (1, 2):
            status, _, _, seconds = await sign_in_raw(server, "hannah", "wrong password!!")
            assert status == 401
            # A lower bound only: a slow machine may take longer, never shorter.
            assert seconds >= failure_delay(failures) - 0.005, (failures, seconds)
        assert failure_delay(2) > failure_delay(1) > 0
        # A success resets the count, and answers without the penalty.
        status, _, _, _ = await sign_in_raw(server, "hannah", PASSWORD)
        assert status == 200
        status, _, _, seconds = await sign_in_raw(server, "hannah", "wrong password!!")
        assert status == 401 and seconds >= failure_delay(1) - 0.005
    finally:
        await server.stop()


# -- CSRF, Origin and logout -------------------------------------------------------------------


async def test_api_post_without_or_with_a_wrong_csrf_token_is_refused(live: LiveServer) -> None:
    """A state change needs the session's CSRF token; refused calls create nothing."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    body = {"incident_ref": "CAD-1", "phone": PHONE}
    for headers in ({}, {"X-CSRF-Token": "not-the-token"}, {"X-CSRF-Token": ""}):
        status, response, text = await raw(
            live, handler.http, "POST", "/api/sessions", json=body, headers=headers
        )
        assert status == 403, (headers, text)
        assert response.content_type == "application/json"
        assert_no_store_and_csp(response)
    # A form field does not count for JSON bodies, and a stale token from another sign-in fails.
    other = await live.staff_client("hannah")
    status, _, _ = await raw(
        live, handler.http, "POST", "/api/sessions", json=body,
        headers={"X-CSRF-Token": other.csrf},
    )
    assert status == 403
    assert await own_sessions(handler) == []
    assert live.outbox() == []
    # The same request with the right token goes through.
    await handler.api("POST", "/api/sessions", body, expect=201)
    assert len(await own_sessions(handler)) == 1


async def test_a_foreign_origin_is_refused_even_with_the_right_token(live: LiveServer) -> None:
    """Cross-site requests are refused by Origin; our own Origin is accepted."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    body = {"incident_ref": "CAD-1", "phone": PHONE}
    for origin in ("https://evil.example", "null", "http://127.0.0.1:1"):
        status, _, text = await raw(
            live, handler.http, "POST", "/api/sessions", json=body,
            headers={"X-CSRF-Token": handler.csrf, "Origin": origin},
        )
        assert status == 403, (origin, text)
    assert await own_sessions(handler) == []
    # Sign-in from another site's form is refused too (login CSRF).
    status, _, cookies, _ = await sign_in_raw(live, "hannah", PASSWORD,
                                              Origin="https://evil.example")
    assert status == 403 and cookies == []

    status, _, text = await raw(
        live, handler.http, "POST", "/api/sessions", json=body,
        headers={"X-CSRF-Token": handler.csrf, "Origin": live.config.public_url},
    )
    assert status == 201, text


async def test_the_html_forms_work_with_the_csrf_field(live: LiveServer) -> None:
    """Without JavaScript: sign in by form, read the token from the page, post a form."""
    await live.add_staff("hannah", StaffRole.HANDLER)
    http = live.new_http()
    status, response, _ = await raw(
        live, http, "POST", "/login", data={"username": "hannah", "password": PASSWORD}
    )
    assert status == 303 and response.headers["Location"] == "/console"
    status, _, page = await raw(live, http, "GET", "/console")
    assert status == 200
    match = CSRF_INPUT.search(page)
    assert match, "no CSRF field in the console form"
    csrf = match.group(1)

    form = {"incident_ref": "CAD-9", "phone": PHONE}
    status, _, _ = await raw(live, http, "POST", "/console/sessions", data=form)
    assert status == 403
    status, _, _ = await raw(live, http, "POST", "/console/sessions",
                             data={**form, "csrf_token": "forged"})
    assert status == 403
    assert live.outbox() == []

    status, response, _ = await raw(live, http, "POST", "/console/sessions",
                                    data={**form, "csrf_token": csrf})
    assert status == 303
    location = response.headers["Location"]
    assert re.fullmatch(r"/console/sessions/[A-Za-z0-9_\-]+", location)
    assert len(live.outbox()) == 1
    status, response, page = await raw(live, http, "GET", location)
    assert status == 200
    assert "CAD-9" in page and masked(E164) in page and E164 not in page
    assert_no_store_and_csp(response)


async def test_logout_ends_the_session_for_good(live: LiveServer) -> None:
    """After logout the old cookie value is worthless, even if replayed by hand."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    [cookie] = [c for c in handler.http.cookie_jar if c.key == "erv_staff"]
    old_token = cookie.value
    await handler.api("GET", "/api/me", expect=200)

    # Logout is a state change too: no token, no logout.
    status, _, _ = await raw(live, handler.http, "POST", "/logout")
    assert status == 403
    await handler.api("GET", "/api/me", expect=200)

    status, response, _ = await raw(live, handler.http, "POST", "/logout",
                                    headers={"X-CSRF-Token": handler.csrf})
    assert status == 303 and response.headers["Location"] == "/login"
    assert await stored_staff_sessions(live) == []
    status, body = await handler.api("GET", "/api/me")
    assert status == 401 and body["error"] == "unauthorized"

    replay = live.new_http()
    status, _, _ = await raw(live, replay, "GET", "/api/me",
                             headers={"Cookie": f"erv_staff={old_token}"})
    assert status == 401
    status, response, _ = await raw(live, replay, "GET", "/console",
                                    headers={"Cookie": f"erv_staff={old_token}"})
    assert status == 303 and response.headers["Location"] == "/login"


# -- roles -------------------------------------------------------------------------------------


async def test_every_api_route_needs_a_signed_in_user(live: LiveServer) -> None:
    """Each /api/ route answers 401 JSON to a stranger, whatever the method."""
    http = live.new_http()
    checked = 0
    for resource in live.app.router.resources():
        path = resource.canonical
        if not path.startswith("/api/"):
            continue
        concrete = path.replace("{answer}", "accept")
        concrete = re.sub(r"\{[^}]+\}", "abc123", concrete)
        for route in resource:
            if route.method == "HEAD":
                continue
            status, response, text = await raw(live, http, route.method, concrete, json={})
            assert status == 401, (route.method, concrete, text)
            assert response.content_type == "application/json"
            assert json.loads(text)["error"] == "unauthorized"
            assert_no_store_and_csp(response)
            checked += 1
    assert checked >= 13


async def test_staff_pages_send_strangers_to_sign_in(live: LiveServer) -> None:
    """Pages redirect to /login rather than answering 401."""
    http = live.new_http()
    for method, path in (
        ("GET", "/"), ("GET", "/console"), ("GET", "/specialist"), ("GET", "/supervisor"),
        ("GET", "/outbox"), ("GET", "/console/sessions/abc123"),
        ("POST", "/console/sessions"), ("POST", "/console/sessions/abc123/end"),
        ("POST", "/specialist/availability"),
    ):
        status, response, _ = await raw(live, http, method, path, data={"x": "1"})
        assert status == 303, (method, path)
        assert response.headers["Location"] == "/login"
        assert_no_store_and_csp(response)
    status, response, page = await raw(live, http, "GET", "/login")
    assert status == 200 and "password" in page
    assert_no_store_and_csp(response)


async def make_specialist_invitable(
    live: LiveServer, username: str,
) -> tuple[StaffClient, SignalClient]:
    """A signed-in specialist, online in the lobby and marked available."""
    specialist = await live.staff_client(username, StaffRole.SPECIALIST)
    lobby = await specialist.signal(None)
    await specialist.api("POST", "/api/me/availability", {"available": True}, expect=200)
    return specialist, lobby


async def test_a_specialist_sees_a_session_only_once_invited(live: LiveServer) -> None:
    """Specialists cannot create sessions or see others' until a handler invites them."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session_id = await handler.create_session()
    specialist, lobby = await make_specialist_invitable(live, "sam")

    await specialist.api("POST", "/api/sessions", {"incident_ref": "X", "phone": PHONE},
                         expect=403)
    assert len(await own_sessions(handler)) == 1
    _, body = await specialist.api("GET", f"/api/sessions/{session_id}", expect=404)
    assert body["error"] == "not_found"
    assert await own_sessions(specialist) == []
    for path in (f"/api/sessions/{session_id}/link", f"/api/sessions/{session_id}/link/revoke",
                 f"/api/sessions/{session_id}/specialist/cancel"):
        await specialist.api("POST", path, expect=403)
    await specialist.api("POST", f"/api/sessions/{session_id}/end", expect=404)
    await specialist.api("GET", "/api/outbox", expect=403)
    await specialist.api("GET", "/api/specialists", expect=403)
    status, _, _ = await raw(live, specialist.http, "GET", f"/console/sessions/{session_id}")
    assert status == 404

    _, body = await handler.api("POST", f"/api/sessions/{session_id}/specialist", {},
                                expect=201)
    assert body["status"]["specialist"]["state"] == "ringing"
    ringing = await lobby.expect("invitation", op="ringing")
    assert ringing["session"] == session_id

    _, body = await specialist.api("GET", f"/api/sessions/{session_id}", expect=200)
    assert body["session"]["id"] == session_id
    assert body["session"]["phone"] == masked(E164)
    assert [s["id"] for s in await own_sessions(specialist)] == [session_id]
    # Seeing is not owning: the specialist still cannot end the handler's session.
    _, body = await specialist.api("POST", f"/api/sessions/{session_id}/end", expect=403)
    assert body["error"] == "forbidden"

    # Once accepted, the specialist may join the call itself.
    await specialist.api("POST", f"/api/invitations/{ringing['invitation']}/accept", expect=200)
    call = await specialist.signal(session_id)
    assert call.welcome["role"] == "specialist"
    _, body = await handler.api("GET", f"/api/sessions/{session_id}", expect=200)
    assert body["session"]["state"] != "ended"


async def test_a_second_handler_cannot_see_touch_or_end_anothers_session(
    live: LiveServer,
) -> None:
    """Another handler's session looks like no session at all (404), whatever they try."""
    first = await live.staff_client("hannah", StaffRole.HANDLER)
    second = await live.staff_client("harry", StaffRole.HANDLER)
    session_id = await first.create_session()

    await second.api("GET", f"/api/sessions/{session_id}", expect=404)
    assert await own_sessions(second) == []
    for path in ("end", "link", "link/revoke", "specialist", "specialist/cancel"):
        _, body = await second.api("POST", f"/api/sessions/{session_id}/{path}", {},
                                   expect=404)
        assert body == {"error": "not_found", "message": "No such session."}
    status, _, _ = await raw(live, second.http, "POST",
                             f"/console/sessions/{session_id}/end",
                             data={"csrf_token": second.csrf})
    assert status == 404

    _, body = await first.api("GET", f"/api/sessions/{session_id}", expect=200)
    assert body["session"]["state"] == "invited"
    assert body["status"]["invite"]["state"] == "sent"
    assert len(live.outbox()) == 1


async def test_supervisor_and_auditor_see_everything_but_cannot_end(live: LiveServer) -> None:
    """Oversight roles read every session; ending stays with the session's handler."""
    first = await live.staff_client("hannah", StaffRole.HANDLER)
    second = await live.staff_client("harry", StaffRole.HANDLER)
    one = await first.create_session(ref="CAD-1")
    two = await second.create_session(ref="CAD-2")
    supervisor = await live.staff_client("sue", StaffRole.SUPERVISOR)
    auditor = await live.staff_client("alex", StaffRole.AUDITOR)

    for viewer in (supervisor, auditor):
        assert {s["id"] for s in await own_sessions(viewer)} == {one, two}
        for session_id in (one, two):
            _, body = await viewer.api("GET", f"/api/sessions/{session_id}", expect=200)
            assert body["session"]["phone"] == masked(E164)
        await viewer.api("POST", "/api/sessions", {"incident_ref": "X", "phone": PHONE},
                         expect=403)
        _, body = await viewer.api("POST", f"/api/sessions/{one}/end", expect=403)
        assert body["error"] == "forbidden"
        await viewer.api("POST", f"/api/sessions/{one}/link/revoke", expect=403)
    await supervisor.api("GET", "/api/outbox", expect=200)
    await auditor.api("GET", "/api/outbox", expect=403)
    await auditor.api("POST", "/api/me/availability", {"available": True}, expect=403)

    for session_id in (one, two):
        _, body = await supervisor.api("GET", f"/api/sessions/{session_id}", expect=200)
        assert body["session"]["state"] == "invited"
    # The handler can end their own session, which the others then see as ended.
    await first.api("POST", f"/api/sessions/{one}/end", {"reason": "resolved"}, expect=200)
    _, body = await auditor.api("GET", f"/api/sessions/{one}", expect=200)
    assert body["session"]["state"] == "ended"
    assert body["session"]["end_reason"] == "resolved"


# -- the CLI -----------------------------------------------------------------------------------


async def test_erv_add_user_makes_an_account_that_can_sign_in(
    backend: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`erv add-user NAME ROLE` with ERV_NEW_PASSWORD creates a working account."""
    monkeypatch.setenv("ERV_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("ERV_REDIS_URL", raising=False)
    for name, value in backend_env(backend).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ERV_NEW_PASSWORD", "a long enough new password")
    # main() runs its own event loop, so it runs on another thread here.
    code = await asyncio.to_thread(cli.main, ["add-user", "Carol", "handler", "--name", "Carol"])
    assert code == 0
    # Taken names and short passwords are refused with a non-zero exit, not a traceback.
    assert await asyncio.to_thread(cli.main, ["add-user", "carol", "handler"]) != 0
    monkeypatch.setenv("ERV_NEW_PASSWORD", "short")
    assert await asyncio.to_thread(cli.main, ["add-user", "dave", "handler"]) != 0

    server = await start_server(tmp_path, **backend)
    try:
        status, body, cookies, _ = await sign_in_raw(
            server, "carol", "a long enough new password"
        )
        assert status == 200 and body["role"] == "handler" and len(cookies) == 2
        status, _, _, _ = await sign_in_raw(server, "dave", "short")
        assert status == 401
    finally:
        await server.stop()


def test_erv_add_user_refuses_an_unknown_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """A bad role exits non-zero and creates no database entry."""
    # Embedded only: the role is refused before any store is opened, whatever the backend.
    monkeypatch.setenv("ERV_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ERV_NEW_PASSWORD", "a long enough new password")
    with pytest.raises(SystemExit) as exited:
        cli.main(["add-user", "carol", "janitor"])
    assert exited.value.code not in (0, None)
    assert "janitor" in capsys.readouterr().err
    assert not (tmp_path / "data" / "erv.sqlite3").exists()


# -- pages and headers -------------------------------------------------------------------------


async def test_each_role_gets_its_own_pages_and_no_others(live: LiveServer) -> None:
    """Pages render for the right role, refuse the wrong one, and are never cached."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    specialist = await live.staff_client("sam", StaffRole.SPECIALIST)
    supervisor = await live.staff_client("sue", StaffRole.SUPERVISOR)
    auditor = await live.staff_client("alex", StaffRole.AUDITOR)
    expected = {
        "/console": {handler: 200, specialist: 403, supervisor: 403, auditor: 403},
        "/specialist": {handler: 403, specialist: 200, supervisor: 403, auditor: 403},
        "/supervisor": {handler: 403, specialist: 403, supervisor: 200, auditor: 200},
        "/outbox": {handler: 200, specialist: 403, supervisor: 200, auditor: 403},
    }
    for path, by_client in expected.items():
        for client, want in by_client.items():
            status, response, page = await raw(live, client.http, "GET", path)
            assert status == want, (path, status)
            assert_no_store_and_csp(response)
            if want == 200:
                assert response.content_type == "text/html"
                assert "<script>" not in page and " onclick=" not in page
    # Home sends each role to its own desk.
    for client, home in ((handler, "/console"), (specialist, "/specialist"),
                         (auditor, "/supervisor")):
        status, response, _ = await raw(live, client.http, "GET", "/")
        assert (status, response.headers["Location"]) == (303, home)


async def test_the_outbox_page_shows_only_the_masked_number(live: LiveServer) -> None:
    """The demo outbox shows the text and a masked number, never the whole number."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    await handler.create_session(phone=PHONE)
    status, response, page = await raw(live, handler.http, "GET", "/outbox")
    assert status == 200
    assert masked(E164) in page
    assert live.latest_token() in page
    for whole in (E164, "7911123456", "07911 123456", "7911 123456"):
        assert whole not in page, whole
    assert_no_store_and_csp(response)


async def test_json_answers_carry_no_store_and_csp(live: LiveServer) -> None:
    """API answers (success and error) are as uncacheable as pages."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session_id = await handler.create_session()
    for method, path, json_body in (
        ("GET", "/api/me", None),
        ("GET", "/api/sessions", None),
        ("GET", f"/api/sessions/{session_id}", None),
        ("GET", "/api/sessions/missing", None),
        ("POST", "/api/sessions", {"incident_ref": "", "phone": PHONE}),
        ("GET", "/api/outbox", None),
    ):
        async with handler.http.request(
            method, f"{live.url}{path}", json=json_body, headers={"X-CSRF-Token": handler.csrf}
        ) as response:
            assert response.content_type == "application/json", path
            assert_no_store_and_csp(response)


# -- creating a session: input checks ----------------------------------------------------------


@pytest.mark.parametrize(
    ("phone", "ref", "code", "words"),
    [
        ("020 7946 0000", "CAD-1", "bad_phone", "not a mobile"),
        ("0161 496 0000", "CAD-1", "bad_phone", "not a mobile"),
        ("hello there", "CAD-1", "bad_phone", "phone number"),
        ("", "CAD-1", "bad_phone", "mobile number"),
        ("0" * 40, "CAD-1", "bad_phone", "mobile number"),
        (PHONE, "", "bad_field", "incident reference"),
        (PHONE, "   ", "bad_field", "incident reference"),
        (PHONE, "<script>", "bad_field", "incident reference"),
        (PHONE, "X" * 41, "bad_field", "incident reference"),
    ],
)
async def test_bad_session_input_is_400_with_a_code_and_a_readable_message(
    live: LiveServer, phone: str, ref: str, code: str, words: str,
) -> None:
    """Landlines, garbage and bad references are refused before anything is sent."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    _, body = await handler.api("POST", "/api/sessions", {"incident_ref": ref, "phone": phone},
                                expect=400)
    assert body["error"] == code
    assert words in body["message"]
    assert_calm(body["message"])
    assert await own_sessions(handler) == []
    assert live.outbox() == []


async def test_non_string_fields_and_bad_json_are_400(live: LiveServer) -> None:
    """Wrong JSON types get bad_field / bad_json, not a server error."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    _, body = await handler.api("POST", "/api/sessions", {"incident_ref": "CAD-1", "phone": 7911},
                                expect=400)
    assert body["error"] == "bad_field"
    _, body = await handler.api("POST", "/api/sessions", ["CAD-1", PHONE], expect=400)
    assert body["error"] == "bad_json"
    async with handler.http.post(
        f"{live.url}/api/sessions", data=b"{not json",
        headers={"X-CSRF-Token": handler.csrf, "Content-Type": "application/json"},
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "bad_json"
    assert await own_sessions(handler) == []


async def test_the_number_is_kept_encrypted_as_e164_and_shown_masked(live: LiveServer) -> None:
    """Whatever the handler types, the number is normalised to E.164 and kept only inside the
    encrypted case record; the sessions table and the API only ever hold it masked."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    _, created = await handler.api(
        "POST", "/api/sessions", {"incident_ref": " CAD-7 ", "phone": "+44 (0)7911-123 456"},
        expect=201,
    )
    session_id = created["session"]["id"]
    assert created["session"]["incident_ref"] == "CAD-7"
    stored = await live.app[keys.ROOM].sessions.get(session_id)
    assert stored is not None and stored.phone == masked(E164)
    assert E164.encode() not in await live.stored_bytes()
    assert live.outbox()[0].to == E164
    events = await live.app[keys.RECORD].read(session_id)
    assert events[0].header.kind == "session_created" and events[0].body["phone"] == E164

    assert created["session"]["phone"] == masked(E164)
    async with handler.http.get(f"{live.url}/api/sessions") as response:
        text = await response.text()
        assert [s["phone"] for s in json.loads(text)["sessions"]] == [masked(E164)]
    async with handler.http.get(f"{live.url}/api/sessions/{session_id}") as response:
        text += await response.text()
        assert json.loads(await response.text())["session"]["phone"] == masked(E164)
    assert "7911123456" not in text and E164 not in text

    # The console form refuses a landline with the message, not echoing the number.
    status, _, page = await raw(live, handler.http, "POST", "/console/sessions",
                                data={"incident_ref": "CAD-8", "phone": "020 7946 0000",
                                      "csrf_token": handler.csrf})
    assert status == 400
    assert "not a mobile number" in page
    assert "7946 0000" not in page and "2079460000" not in page


async def stored_staff_sessions(server: LiveServer) -> list[str]:
    """The token hashes of the staff sign-in sessions the store holds."""
    stores = server.app[keys.STORES]
    if stores.redis is not None:
        prefix = f"{server.config.redis_prefix}staff_session:"
        return sorted([key.decode()[len(prefix):]
                       async for key in stores.redis.scan_iter(match=prefix + "*")])
    assert stores.db is not None
    return sorted(row["token_hash"] for row in
                  await stores.db.fetchall("SELECT token_hash FROM staff_sessions"))
