"""The staff consoles' HTTP surface: the call view each role is given, the no-JavaScript form
actions, and markup that the strict CSP allows (no inline script or style)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from server.accounts import StaffRole
from tests.support.calls import specialist_on_call
from tests.support.live import PASSWORD, LiveServer, StaffClient

# What the call view's script and the browser tests rely on, per role.
HANDLER_IDS = {
    "link-state", "sms-status", "resend-link", "revoke-link", "remote-video", "chat-log",
    "chat-input", "chat-send", "advice-log", "advice-input", "advice-send", "location-panel",
    "location-lat", "location-lon", "location-accuracy", "location-age", "map-link",
    "quality-rtt", "quality-loss", "quality-bitrate", "quality-resolution",
    "specialist-select", "invite-specialist", "cancel-specialist", "specialist-state",
    "end-session", "end-session-confirm", "session-ended", "connection-state",
    *(f"canned-{c}" for c in ("cant_talk", "they_are_here", "yes", "no", "safe_now", "send_help")),
}
HANDLER_ONLY = {"resend-link", "revoke-link", "specialist-select", "invite-specialist",
                "cancel-specialist", "end-session", "end-session-confirm"}
TALK_IDS = {"chat-input", "chat-send", "advice-input", "advice-send", "canned-yes"}


class Page(HTMLParser):
    """Elements by data-testid (with their attributes), plus what the CSP would refuse."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.by_id: dict[str, dict[str, str | None]] = {}
        self.inline_styles = 0
        self.inline_scripts = 0
        self.handlers: list[str] = []
        self.call_view: dict[str, str | None] = {}
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if "style" in found:
            self.inline_styles += 1
        if tag == "script" and not found.get("src"):
            self.inline_scripts += 1
        self.handlers += [name for name in found if name.startswith("on")]
        if "data-testid" in found:
            self.by_id[str(found["data-testid"])] = found
        if found.get("id") == "call-view":
            self.call_view = found

    def ids(self) -> set[str]:
        return set(self.by_id)


async def page(client: StaffClient, path: str) -> Page:
    async with client.http.get(f"{client.server.url}{path}", allow_redirects=False) as response:
        assert response.status == 200, (path, response.status)
        html = await response.text()
    parsed = Page(html)
    assert parsed.inline_styles == 0 and parsed.inline_scripts == 0 and not parsed.handlers, path
    return parsed


async def post_form(client: StaffClient, path: str, **fields: str) -> int:
    async with client.http.post(
        f"{client.server.url}{path}", data={"csrf_token": client.csrf, **fields},
        allow_redirects=False,
    ) as response:
        return response.status


async def test_the_handler_gets_the_whole_call_view(live: LiveServer) -> None:
    """The session page carries every element of the handler's DOM contract, the map address
    template, the caller's language and a live call view, and loads only its own script."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    _, body = await handler.api("POST", "/api/sessions", {
        "incident_ref": "CAD-5", "phone": "07911 123456", "language": "cy",
    }, expect=201)
    session_id = body["session"]["id"]

    view = await page(handler, f"/console/sessions/{session_id}")
    assert HANDLER_IDS <= view.ids(), HANDLER_IDS - view.ids()
    assert view.call_view["data-role"] == "handler" and view.call_view["data-live"] == "1"
    assert view.call_view["data-session"] == session_id
    assert view.call_view["data-map-template"] == live.config.map_url_template
    assert view.call_view["data-caller-language"] == "cy"
    assert view.by_id["link-state"]["data-state"] == "sent"
    assert view.by_id["specialist-state"]["data-state"] == "none"
    assert "hidden" in view.by_id["session-ended"]
    assert "hidden" in view.by_id["end-confirm"]  # the second step shows after the first press
    link = view.by_id["map-link"]
    assert link["target"] == "_blank" and link["rel"] == "noopener noreferrer"
    video = view.by_id["remote-video"]
    assert "autoplay" in video and "playsinline" in video

    console = await page(handler, "/console")
    assert {"incident-ref", "phone", "language", "create-session"} <= console.ids()


async def test_a_specialist_joins_the_call_view_only_after_accepting(live: LiveServer) -> None:
    """Invited but not yet accepted: the page says so and has no live call. After accepting:
    a live view with chat, advice and media, but none of the handler's controls."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session_id = await handler.create_session(ref="CAD-6")
    sam, lobby = await specialist_on_call(live, "sam")
    await handler.api("POST", f"/api/sessions/{session_id}/specialist", {"username": "sam"},
                      expect=201)
    ringing = await lobby.expect("invitation", op="ringing")

    desk = await page(sam, "/specialist")
    assert desk.by_id["availability-toggle"]["aria-pressed"] == "true"
    assert {"invitation-alert", "invitation-incident", "invitation-waiting",
            "accept-invitation", "decline-invitation"} <= desk.ids()

    waiting = await page(sam, f"/console/sessions/{session_id}")
    assert waiting.call_view["data-role"] == "not_accepted"
    assert waiting.call_view["data-live"] == "0" and "remote-video" not in waiting.ids()

    await sam.api("POST", f"/api/invitations/{ringing['invitation']}/accept", expect=200)
    view = await page(sam, f"/console/sessions/{session_id}")
    assert view.call_view["data-role"] == "specialist" and view.call_view["data-live"] == "1"
    assert {"remote-video", "chat-log", "advice-log", "session-ended", "connection-state",
            "leave-call"} | TALK_IDS <= view.ids()
    assert not HANDLER_ONLY & view.ids()


async def test_supervisors_observe_read_only_and_auditors_read_the_record(
    live: LiveServer,
) -> None:
    """A supervisor's view is live but has no way to talk or control the call; an auditor's is
    the record only (auditors cannot join calls)."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session_id = await handler.create_session(ref="CAD-7")
    supervisor = await live.staff_client("sue", StaffRole.SUPERVISOR)
    auditor = await live.staff_client("alex", StaffRole.AUDITOR)

    observed = await page(supervisor, f"/console/sessions/{session_id}")
    assert observed.call_view["data-role"] == "observer" and observed.call_view["data-live"] == "1"
    assert {"remote-video", "chat-log", "advice-log", "location-panel"} <= observed.ids()
    assert not (HANDLER_ONLY | TALK_IDS) & observed.ids()

    record = await page(auditor, f"/console/sessions/{session_id}")
    assert record.call_view["data-role"] == "record_only" and record.call_view["data-live"] == "0"
    assert "remote-video" not in record.ids() and "chat-log" not in record.ids()
    listing = await page(supervisor, "/supervisor")
    row = listing.by_id["session-row"]
    assert row["data-session"] == session_id


async def test_cancelling_a_specialist_works_as_a_plain_form(live: LiveServer) -> None:
    """Without JavaScript the handler can still cancel a ringing invitation: the form posts,
    the specialist's desk hears `cancelled`, and a non-handler is refused."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session_id = await handler.create_session(ref="CAD-8")
    sam, lobby = await specialist_on_call(live, "sam")
    status = await post_form(handler, f"/console/sessions/{session_id}/specialist",
                             username="sam")
    assert status == 303
    ringing = await lobby.expect("invitation", op="ringing")

    assert await post_form(sam, f"/console/sessions/{session_id}/cancel-specialist") == 403
    assert await post_form(handler, f"/console/sessions/{session_id}/cancel-specialist") == 303
    cancelled = await lobby.expect("invitation", op="cancelled")
    assert cancelled["invitation"] == ringing["invitation"]
    _, body = await handler.api("GET", f"/api/sessions/{session_id}", expect=200)
    assert body["status"]["specialist"]["state"] == "cancelled"


async def test_an_ended_session_page_shows_the_end_and_no_live_call(live: LiveServer) -> None:
    """After the end the page says so at once (no socket needed) and offers no call."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session_id = await handler.create_session(ref="CAD-9")
    assert await post_form(handler, f"/console/sessions/{session_id}/end",
                           reason="caller_safe") == 303
    view = await page(handler, f"/console/sessions/{session_id}")
    assert "hidden" not in view.by_id["session-ended"]
    assert view.call_view["data-live"] == "0"
    assert view.by_id["connection-state"]["data-state"] == "ended"
    assert view.by_id["link-state"]["data-state"] == "ended"
    assert "remote-video" not in view.ids() and "end-session" not in view.ids()
    listing = await page(handler, "/console")
    assert listing.by_id["session-state"]["data-state"] == "ended"


async def test_staff_pages_let_same_site_posts_carry_their_origin(live: LiveServer) -> None:
    """Staff pages set the referrer policy to same-origin: under no-referrer, browsers send
    `Origin: null` with form posts and fetches, which the server's origin check refuses."""
    await live.add_staff("hannah", StaffRole.HANDLER)
    http = live.new_http()
    async with http.get(f"{live.url}/login") as response:
        html = await response.text()
    assert re.search(r'<meta name="referrer" content="same-origin">', html)
    async with http.post(f"{live.url}/login", data={"username": "x", "password": "y"},
                         headers={"Origin": "null"}, allow_redirects=False) as refused:
        assert refused.status == 403  # why the page must not make the browser send null
    async with http.post(f"{live.url}/login", data={"username": "hannah", "password": PASSWORD},
                         headers={"Origin": live.url},
                         allow_redirects=False) as accepted:
        assert accepted.status == 303
