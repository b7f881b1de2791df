"""The caller's link, /j/<token>, over real HTTP: sent, opened, redeemed once, refused calmly."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from server import keys
from server.accounts import StaffRole
from server.config import DEFAULT_SMS_TEMPLATE, TwilioSettings
from server.invites import VICTIM_MESSAGES, LinkProblem
from server.sms import TWILIO_STATUS_PATH, render_sms
from server.sms.twilio import twilio_signature
from tests.support.live import LiveServer, SignalClient, StaffClient, free_port, start_server
from tests.support.record import as_bytes
from tests.support.web_checks import assert_calm, assert_victim_page_headers

E164 = "+447911123456"
ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
AUTH_TOKEN = "twilio-auth-token-for-tests"


@dataclass
class LinkAnswer:
    status: int
    text: str
    json: Any = None


async def visit(live: LiveServer, method: str, token: str, *, as_json: bool = False) -> LinkAnswer:
    """Open (GET) or tap (POST) a link from a fresh phone browser with no cookies."""
    headers = {"Accept": "application/json"} if as_json else {"Accept": "text/html"}
    http = live.new_http()
    async with http.request(method, f"{live.url}/j/{token}", headers=headers,
                            allow_redirects=False) as response:
        assert_victim_page_headers(response)
        text = await response.text()
        body = await response.json() if response.content_type == "application/json" else None
        if not as_json:
            assert response.content_type == "text/html"
    assert len(http.cookie_jar) == 0
    return LinkAnswer(response.status, text, body)


async def assert_refused(
    live: LiveServer, token: str, problem: LinkProblem, status: int = 410,
) -> None:
    """GET and POST, HTML and JSON, all give the calm message for `problem`."""
    message = VICTIM_MESSAGES[problem]
    for method in ("GET", "POST"):
        answer = await visit(live, method, token, as_json=True)
        assert answer.status == status, (method, answer.text)
        assert answer.json == {"error": problem.value, "message": message}
        page = await visit(live, method, token)
        assert page.status == status
        assert message in page.text
        assert token not in page.text
        assert_calm(page.text)


async def session_view(handler: StaffClient, session_id: str) -> dict[str, Any]:
    _, body = await handler.api("GET", f"/api/sessions/{session_id}", expect=200)
    return dict(body)


async def hello_error(live: LiveServer, **fields: Any) -> dict[str, Any]:
    """Send a hello that should be refused; returns the error frame."""
    client = await SignalClient.connect(live, live.new_http())
    await client.send({"type": "hello", "v": 1, **fields})
    message = await client.next()
    assert message["type"] == "error", message
    await client.close()
    return message


# -- sending -----------------------------------------------------------------------------------


async def test_the_text_is_neutral_holds_the_link_and_goes_to_the_e164_number(
    live: LiveServer,
) -> None:
    """The console gateway's outbox holds exactly the neutral default text, to +44..."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session_id = await handler.create_session(phone="07911 123456")
    [entry] = live.outbox()
    token = live.latest_token()
    link = f"{live.config.public_url}/j/{token}"
    assert entry.to == E164
    assert entry.body == render_sms(DEFAULT_SMS_TEMPLATE, link, 10)
    assert link in entry.body
    for alarming in ("999", "police", "emergency", "abuse", "video", "CAD-1"):
        assert alarming.lower() not in entry.body.lower()
    # At least 128 random bits, and only a hash of it in the database.
    assert len(token) >= 22
    assert token.encode() not in await live.stored_bytes()

    view = await session_view(handler, session_id)
    assert view["session"]["state"] == "invited"
    assert view["status"]["invite"]["state"] == "sent"
    assert view["status"]["invite"]["sms_status"] == "delivered"


# -- open, then redeem -------------------------------------------------------------------------


async def test_opening_the_link_never_uses_it_up(live: LiveServer) -> None:
    """Link scanners and repeated GETs (HTML or JSON) leave the link redeemable."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session_id = await handler.create_session()
    token = live.latest_token()

    for as_json in (False, True, False, True):
        answer = await visit(live, "GET", token, as_json=as_json)
        assert answer.status == 200
        if as_json:
            assert answer.json["state"] == "ready"
        else:
            assert f'action="/j/{token}"' in answer.text
            assert 'method="post"' in answer.text

    view = await session_view(handler, session_id)
    assert view["session"]["state"] == "opened"
    assert view["session"]["timeline"]["opened"] is not None
    assert view["status"]["invite"]["state"] == "opened"

    redeemed = await visit(live, "POST", token, as_json=True)
    assert redeemed.status == 200
    assert redeemed.json["session"] == session_id
    assert len(redeemed.json["credential"]) >= 32
    view = await session_view(handler, session_id)
    assert view["status"]["invite"]["state"] == "redeemed"


async def test_a_link_redeems_exactly_once(live: LiveServer) -> None:
    """The second tap gets the calm 'already been used' answer, and no second credential."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session_id = await handler.create_session()
    token = live.latest_token()

    page = await visit(live, "POST", token)
    assert page.status == 200
    await assert_refused(live, token, LinkProblem.USED)
    assert "already been used" in VICTIM_MESSAGES[LinkProblem.USED]
    assert await live.credential_count(session_id) == 1


async def test_an_expired_link_is_refused(live: LiveServer) -> None:
    """Past its expiry the link is refused as timed out, and the console says expired."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session_id = await handler.create_session()
    token = live.latest_token()
    await expire_links(live, session_id)

    await assert_refused(live, token, LinkProblem.EXPIRED)
    view = await session_view(handler, session_id)
    assert view["status"]["invite"]["state"] == "expired"
    assert view["session"]["state"] == "invited"  # an expired link does not count as opened


async def test_a_revoked_link_is_refused(live: LiveServer) -> None:
    """The handler can take a link back before the caller taps it."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session_id = await handler.create_session()
    token = live.latest_token()
    _, body = await handler.api("POST", f"/api/sessions/{session_id}/link/revoke", expect=200)
    assert body["status"]["invite"]["state"] == "revoked"
    await assert_refused(live, token, LinkProblem.REVOKED)


async def test_a_resend_replaces_the_old_link(live: LiveServer) -> None:
    """After a resend the old link is refused as replaced and only the new one works."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session_id = await handler.create_session()
    old = live.latest_token()
    _, body = await handler.api("POST", f"/api/sessions/{session_id}/link", expect=200)
    assert body["status"]["invite"]["state"] == "sent"
    assert len(live.outbox()) == 2
    new = live.latest_token()
    assert new != old
    assert live.outbox()[0].to == E164

    await assert_refused(live, old, LinkProblem.REVOKED)
    assert "replaced" in VICTIM_MESSAGES[LinkProblem.REVOKED]
    redeemed = await visit(live, "POST", new, as_json=True)
    assert redeemed.status == 200 and redeemed.json["session"] == session_id


@pytest.mark.parametrize(
    "token",
    [
        secrets.token_urlsafe(24),  # well formed, never issued
        "short-Zq9x",
        "A" * 129,  # just over the longest token looked up
        "x" * 4000,  # far too long
    ],
)
async def test_forged_and_oversized_tokens_are_not_recognised(
    live: LiveServer, token: str,
) -> None:
    """Made-up tokens get the calm 'not recognised' page (404), never an error page."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session_id = await handler.create_session()
    await assert_refused(live, token, LinkProblem.UNKNOWN, status=404)
    # Guessing did nothing to the real link.
    view = await session_view(handler, session_id)
    assert view["status"]["invite"]["state"] == "sent"


async def test_an_ended_call_refuses_its_link_and_its_credential(live: LiveServer) -> None:
    """Once the handler ends the call, the live link says the call has finished and a
    credential already redeemed is refused at hello with session_ended."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session_id = await handler.create_session()
    credential = await live.redeem(live.latest_token())
    await handler.api("POST", f"/api/sessions/{session_id}/link", expect=200)
    live_link = live.latest_token()

    await handler.api("POST", f"/api/sessions/{session_id}/end", expect=200)
    await assert_refused(live, live_link, LinkProblem.ENDED)
    assert "call has finished" in VICTIM_MESSAGES[LinkProblem.ENDED]

    error = await hello_error(live, credential=credential["credential"])
    assert error["code"] == "session_ended"
    error = await hello_error(live, credential=credential["credential"], session=session_id)
    assert error["code"] == "session_ended"
    # Ending is final: the handler cannot send a fresh link into it either.
    await handler.api("POST", f"/api/sessions/{session_id}/link", expect=409)
    assert len(live.outbox()) == 2


# -- the credential belongs to one session -----------------------------------------------------


async def test_a_credential_joins_only_its_own_session(live: LiveServer) -> None:
    """Naming another session in hello is refused; joined, the caller cannot reach it."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session_a = await handler.create_session(ref="CAD-A")
    token_a = live.latest_token()
    session_b = await handler.create_session(ref="CAD-B")
    credential_a = (await live.redeem(token_a))["credential"]

    error = await hello_error(live, credential=credential_a, session=session_b)
    assert error["code"] == "unauthorized"
    error = await hello_error(live, credential=credential_a, session="no-such-session")
    assert error["code"] == "unauthorized"
    error = await hello_error(live, credential=secrets.token_urlsafe(32), session=session_b)
    assert error["code"] == "unauthorized"

    handler_b = await handler.signal(session_b)
    caller = await SignalClient.connect(live, live.new_http())
    welcome = await caller.hello(credential=credential_a, session=session_a)
    assert welcome["session"] == session_a and welcome["role"] == "victim"
    assert handler_b.pid not in [p["pid"] for p in welcome["peers"]]

    # Addressing a participant of session B is refused and delivers nothing there.
    await caller.send({"type": "signal", "to": handler_b.pid,
                       "description": {"type": "offer", "sdp": "v=0\r\n"}})
    refused = await caller.expect("error")
    assert refused["code"] == "unknown_peer"
    await handler_b.send({"type": "ping"})
    seen = [await handler_b.next()]
    while seen[-1]["type"] != "pong":
        seen.append(await handler_b.next())
    assert all(m["type"] != "signal" for m in seen), seen

    view_b = await session_view(handler, session_b)
    assert view_b["session"]["state"] == "invited"
    assert view_b["status"]["invite"]["state"] == "sent"


# -- headers on every caller page --------------------------------------------------------------


async def test_caller_pages_set_no_cookie_even_for_a_signed_in_browser(live: LiveServer) -> None:
    """A staff browser opening a link gets no cookie changes and the same private headers."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    await handler.create_session()
    token = live.latest_token()
    for method in ("GET", "POST", "POST"):
        async with handler.http.request(method, f"{live.url}/j/{token}") as response:
            assert_victim_page_headers(response)
            assert response.status in (200, 410)


# -- SMS failure and delivery reports (Twilio against a local stand-in) ------------------------


@dataclass
class FakeTwilio:
    """Stands in for api.twilio.com: answers whatever the test set, records what it got."""

    status: int = 500
    answer: dict[str, Any] = field(default_factory=lambda: {"code": 20500, "status": 500})
    forms: list[dict[str, str]] = field(default_factory=list)

    async def messages(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.forms.append({k: str(v) for k, v in form.items()})
        return web.json_response(self.answer, status=self.status)


@pytest.fixture
async def twilio_server(backend: dict[str, Any],
                        tmp_path: Path) -> AsyncIterator[tuple[FakeTwilio, LiveServer]]:
    fake = FakeTwilio()
    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", fake.messages)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    server = await start_server(
        tmp_path,
        sms_gateway="twilio",
        twilio=TwilioSettings(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                              from_number="+447700900000",
                              base_url=f"http://127.0.0.1:{port}"),
        **backend,
    )
    try:
        yield fake, server
    finally:
        await server.stop()
        await runner.cleanup()


async def post_status(
    server: LiveServer, form: dict[str, str], signature: str,
) -> int:
    http = server.new_http()
    async with http.post(f"{server.url}{TWILIO_STATUS_PATH}", data=form,
                         headers={"X-Twilio-Signature": signature}) as response:
        return response.status


async def test_sms_failure_is_a_clear_error_and_keeps_the_session(
    twilio_server: tuple[FakeTwilio, LiveServer],
) -> None:
    """Twilio answering 500 gives the handler a 502 sms_unavailable; the session and its
    invite are kept with sms_status failed, so a resend can follow."""
    fake, server = twilio_server
    handler = await server.staff_client("hannah", StaffRole.HANDLER)
    status, body = await handler.api("POST", "/api/sessions",
                                     {"incident_ref": "CAD-1", "phone": "07911 123456"})
    assert status == 502
    assert body["error"] == "sms_unavailable"
    assert "could not be sent" in body["message"]
    assert E164 not in body["message"]
    [form] = fake.forms
    assert form["To"] == E164 and "/j/" in form["Body"]

    _, listing = await handler.api("GET", "/api/sessions", expect=200)
    [session] = listing["sessions"]
    view = await session_view(handler, session["id"])
    assert view["session"]["state"] == "created"
    invite = view["status"]["invite"]
    assert invite is not None
    assert invite["sms_status"] == "failed"
    assert invite["sms_error"] == "sms_unavailable"

    # Twilio recovers: the resend goes through and the console sees it queued.
    fake.status, fake.answer = 201, {"sid": "SM0123456789", "status": "queued"}
    _, body = await handler.api("POST", f"/api/sessions/{session['id']}/link", expect=200)
    assert body["status"]["invite"]["sms_status"] == "queued"
    view = await session_view(handler, session["id"])
    assert view["session"]["state"] == "invited"


async def test_twilio_delivery_reports_need_a_good_signature(
    twilio_server: tuple[FakeTwilio, LiveServer],
) -> None:
    """A signed status callback updates the invite's sms_status; a forged one is 403."""
    fake, server = twilio_server
    fake.status, fake.answer = 201, {"sid": "SM0123456789", "status": "queued"}
    handler = await server.staff_client("hannah", StaffRole.HANDLER)
    session_id = await handler.create_session()
    assert (await session_view(handler, session_id))["status"]["invite"]["sms_status"] == "queued"
    assert fake.forms[0]["StatusCallback"] == server.config.public_url + TWILIO_STATUS_PATH

    url = server.config.public_url + TWILIO_STATUS_PATH
    failed = {"MessageSid": "SM0123456789", "MessageStatus": "undelivered",
              "AccountSid": ACCOUNT_SID}
    for signature in ("", "bm90IGEgc2lnbmF0dXJl",
                      twilio_signature("another-token", url, failed),
                      twilio_signature(AUTH_TOKEN, f"{server.url}/elsewhere", failed)):
        assert await post_status(server, failed, signature) == 403
    assert (await session_view(handler, session_id))["status"]["invite"]["sms_status"] == "queued"

    delivered = {**failed, "MessageStatus": "delivered"}
    assert await post_status(server, delivered, twilio_signature(AUTH_TOKEN, url, delivered)) \
        == 204
    assert (await session_view(handler, session_id))["status"]["invite"]["sms_status"] \
        == "delivered"

    # A report signed for one status cannot be replayed with another.
    assert await post_status(server, failed, twilio_signature(AUTH_TOKEN, url, delivered)) \
        == 403
    assert (await session_view(handler, session_id))["status"]["invite"]["sms_status"] \
        == "delivered"


async def test_the_status_callback_is_not_a_staff_route(
    twilio_server: tuple[FakeTwilio, LiveServer],
) -> None:
    """The callback is signed, not cookie-authenticated: a staff cookie does not make a bad
    signature pass, and no CSRF token is needed for a good one (Twilio has none)."""
    fake, server = twilio_server
    fake.status, fake.answer = 201, {"sid": "SM42", "status": "queued"}
    handler = await server.staff_client("hannah", StaffRole.HANDLER)
    session_id = await handler.create_session()
    url = server.config.public_url + TWILIO_STATUS_PATH
    form = {"MessageSid": "SM42", "MessageStatus": "sent"}
    async with handler.http.post(f"{server.url}{TWILIO_STATUS_PATH}", data=form,
                                 headers={"X-CSRF-Token": handler.csrf}) as response:
        assert response.status == 403
    assert (await session_view(handler, session_id))["status"]["invite"]["sms_status"] == "queued"
    async with aiohttp.ClientSession() as twilio:
        async with twilio.post(f"{server.url}{TWILIO_STATUS_PATH}", data=form,
                               headers={"X-Twilio-Signature":
                                        twilio_signature(AUTH_TOKEN, url, form)}) as response:
            assert response.status == 204
    assert (await session_view(handler, session_id))["status"]["invite"]["sms_status"] == "sent"


async def expire_links(live: LiveServer, session_id: str) -> None:
    """Test setup: move the session's link expiry into the past instead of waiting for it."""
    stores = live.app[keys.STORES]
    past = repr(time.time() - 1)
    if stores.redis is not None:
        prefix = live.config.redis_prefix
        ids = await stores.redis.lrange(f"{prefix}call:invites:{session_id}", 0, -1)
        assert len(ids) == 1
        invite_key = f"{prefix}call:invite:{as_bytes(ids[0]).decode()}"
        await stores.redis.hset(invite_key, "expires_at", past)
        return
    assert stores.db is not None
    changed = await stores.db.execute(
        "UPDATE invites SET expires_at = ? WHERE session_id = ?", (float(past), session_id)
    )
    assert changed == 1
