"""Staff pages: sign-in, the handler's console, the specialist's desk, the supervisor's list.

Server-rendered forms that work without JavaScript; the live call views build on them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from server import keys
from server.accounts import Staff, StaffRole
from server.auth import (
    CSRF_FIELD,
    clear_session_cookie,
    cookie_name,
    current_staff,
    require_role,
    set_session_cookie,
)
from server.control_room import ControlRoom
from server.form_body import read_form
from server.outbox import READERS as OUTBOX_READERS
from server.outbox import outbox_for
from server.phone import PhoneNumberError, masked
from server.refusals import ControlRoomError
from server.sessions import SessionInputError, VideoSession
from server.sms import ConsoleGateway

log = logging.getLogger("erv.http")

HOME_BY_ROLE = {
    StaffRole.HANDLER: "/console",
    StaffRole.SPECIALIST: "/specialist",
    StaffRole.SUPERVISOR: "/supervisor",
    StaffRole.AUDITOR: "/supervisor",
    StaffRole.ADMIN: "/supervisor",
}


# Staff read the consoles in English; the caller's language is per session (en / cy).
STAFF_LANGUAGE = "en"
LANGUAGE_NAMES = {"en": "English", "cy": "Cymraeg (Welsh)"}
CANNED_IDS = ("cant_talk", "they_are_here", "yes", "no", "safe_now", "send_help")
END_REASONS = (
    ("ended", "Ended"), ("resolved", "Resolved"), ("caller_safe", "Caller is safe"),
    ("no_response", "No response from the caller"), ("other", "Other"),
)


async def template_context(request: web.Request) -> dict[str, Any]:
    session = current_staff(request)
    return {
        "staff": session.staff if session else None,
        "csrf_token": session.csrf_token if session else "",
        "csrf_field": CSRF_FIELD,
        "masked": masked,
        "now": time.time(),
        "staff_language": STAFF_LANGUAGE,
        "language_names": LANGUAGE_NAMES,
    }


def link_state(status: dict[str, Any]) -> str:
    """What the console shows first as the link's state (the page's script keeps it live):
    the session's own progress once the caller has joined, else the newest link's state."""
    session_state = status.get("session", {}).get("state", "created")
    if session_state in ("joined", "connected", "ended"):
        return str(session_state)
    invite = status.get("invite")
    return str(invite["state"]) if invite else "none"


async def view_role(room: ControlRoom, staff: Staff, session: VideoSession) -> str:
    """The part this staff member can take in the live call, or why they cannot join it."""
    if staff.role is StaffRole.HANDLER:
        return "handler"
    if staff.role is StaffRole.SUPERVISOR:
        return "observer"
    if staff.role is StaffRole.SPECIALIST:
        accepted = await room.invitations.has_accepted(session.id, staff.id)
        return "specialist" if accepted else "not_accepted"
    return "record_only"  # auditors read sessions but never join calls


async def home(request: web.Request) -> web.StreamResponse:
    session = current_staff(request)
    raise web.HTTPSeeOther(HOME_BY_ROLE[session.staff.role] if session else "/login")


@aiohttp_jinja2.template("login.html")
async def login_page(request: web.Request) -> dict[str, Any]:
    return {"error": None, "username": ""}


THROTTLED = ("Too many tries to sign in as this user from here. Wait {minutes}, or sign in "
             "from a browser you have used here before.")


def _minutes(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return "a minute" if minutes == 1 else f"{minutes} minutes"


async def login(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    username = str(form.get("username", ""))[:64]
    password = str(form.get("password", ""))
    devices = request.app[keys.DEVICE_COOKIES]
    wants_json = "application/json" in request.headers.get("Accept", "")
    result = await request.app[keys.ACCOUNTS].sign_in(
        username, password, client=request.remote or "",
        device=devices.device_for(request, username),
    )
    if result.throttled:
        log.info("sign-in throttled")
        message = THROTTLED.format(minutes=_minutes(result.retry_after))
        headers = {"Retry-After": str(int(result.retry_after))}
        if wants_json:
            return web.json_response({"error": "sign_in_throttled", "message": message,
                                      "retry_after": int(result.retry_after)},
                                     status=429, headers=headers)
        page = aiohttp_jinja2.render_template(
            "login.html", request, {"error": message, "username": username}, status=429)
        page.headers.update(headers)
        return page
    if result.staff is None:
        # The pause grows with each recent failure; it slows guessing, not other people.
        await asyncio.sleep(result.delay)
        log.info("sign-in refused")
        message = "That username and password did not work."
        if wants_json:
            return web.json_response({"error": "sign_in_failed", "message": message}, status=401)
        return aiohttp_jinja2.render_template(
            "login.html", request, {"error": message, "username": username}, status=401
        )
    token, session = await request.app[keys.STAFF_SESSIONS].create(result.staff)
    log.info("staff %d signed in", result.staff.id)
    response: web.StreamResponse
    if wants_json:
        response = web.json_response({
            "username": result.staff.username, "role": result.staff.role.value,
            "csrf_token": session.csrf_token,
        })
    else:
        response = see_other(HOME_BY_ROLE[result.staff.role])
    set_session_cookie(response, request.app[keys.CONFIG], token)
    devices.issue(request, response, result.staff.username)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    config = request.app[keys.CONFIG]
    token = request.cookies.get(cookie_name(config), "")
    if token:
        await request.app[keys.STAFF_SESSIONS].end(token)
    session = current_staff(request)
    if session is not None:
        # Signing out closes this person's live sockets too; they cannot resume.
        await request.app[keys.HUB].kick_staff(session.staff.id, "signed_out")
    response = see_other("/login")
    clear_session_cookie(response, config)
    return response


@require_role(StaffRole.HANDLER)
async def console(request: web.Request) -> web.StreamResponse:
    staff = _staff(request)
    room = request.app[keys.ROOM]
    return aiohttp_jinja2.render_template("console.html", request, {
        "sessions": await room.sessions.for_handler(staff.id),
        "specialists": await room.available_specialists(),
        "error": request.query.get("error"),
    })


@require_role(StaffRole.HANDLER)
async def create_session(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    room = request.app[keys.ROOM]
    try:
        session = await room.create_session(
            _staff(request), str(form.get("incident_ref", "")), str(form.get("phone", "")),
            str(form.get("language", "en")),
            # An unticked box is absent from a form: the hidden field says the box was shown.
            phone_line="phone_line" in form or "phone_line_shown" not in form,
            # The second button: look at the number's history first, text no one yet.
            send_link=form.get("send_link") != "0",
        )
    except (PhoneNumberError, SessionInputError, ControlRoomError) as exc:
        message = exc.message if isinstance(exc, ControlRoomError) else str(exc)
        response = aiohttp_jinja2.render_template("console.html", request, {
            "sessions": await room.sessions.for_handler(_staff(request).id),
            "specialists": await room.available_specialists(),
            "error": message,
            "form": {k: str(v) for k, v in form.items() if k != "phone"},
        })
        response.set_status(400)
        return response
    raise web.HTTPSeeOther(f"/console/sessions/{session.id}")


@require_role(StaffRole.HANDLER, StaffRole.SPECIALIST, StaffRole.SUPERVISOR, StaffRole.AUDITOR)
async def session_page(request: web.Request) -> web.StreamResponse:
    room = request.app[keys.ROOM]
    try:
        session = await room.session_for(_staff(request), request.match_info["session_id"])
    except ControlRoomError as exc:
        raise web.HTTPNotFound(text=exc.message) from exc
    status = await room.status(session.id)
    staff = _staff(request)
    return aiohttp_jinja2.render_template("session.html", request, {
        "session": session,
        "status": status,
        "history": await room.history(staff, session, "page"),
        "link_state": link_state(status),
        "view_role": await view_role(room, staff, session),
        "specialists": await room.available_specialists()
        if staff.role is StaffRole.HANDLER else [],
        "map_url_template": request.app[keys.CONFIG].map_url_template,
        "caller_language": session.language,
        "canned_ids": CANNED_IDS,
        "end_reasons": END_REASONS,
    })


@require_role(StaffRole.HANDLER)
async def session_action(request: web.Request) -> web.StreamResponse:
    room = request.app[keys.ROOM]
    staff = _staff(request)
    session_id = request.match_info["session_id"]
    action = request.match_info["action"]
    form = await read_form(request)
    try:
        keep_caller = form.get("keep_caller") == "1"
        if action == "resend":
            await room.send_link(staff, session_id, keep_caller=keep_caller)
        elif action == "revoke":
            await room.revoke_link(staff, session_id, keep_caller=keep_caller)
        elif action == "end":
            await room.end_session(staff, session_id, str(form.get("reason", "ended")))
        elif action == "specialist":
            await room.invite_specialist(staff, session_id, str(form.get("username", "")) or None)
        elif action == "cancel-specialist":
            await room.cancel_specialist(staff, session_id)
        else:
            raise web.HTTPNotFound()
    except ControlRoomError as exc:
        if exc.status == 404:
            raise web.HTTPNotFound(text=exc.message) from exc
        return aiohttp_jinja2.render_template("message.html", request, {
            "title": "Not done", "message": exc.message,
            "back": f"/console/sessions/{session_id}",
        }, status=exc.status if exc.status < 500 else 502)
    raise web.HTTPSeeOther(f"/console/sessions/{session_id}")


@require_role(StaffRole.SPECIALIST)
async def specialist_desk(request: web.Request) -> web.StreamResponse:
    staff = _staff(request)
    room = request.app[keys.ROOM]
    fresh = await room.accounts.get(staff.id)
    ringing = []
    for invitation in await room.invitations.ringing_for(staff.id):
        session = await room.sessions.get(invitation.session_id)
        ringing.append({"invitation": invitation,
                        "incident_ref": session.incident_ref if session else ""})
    return aiohttp_jinja2.render_template("specialist.html", request, {
        "available": bool(fresh and fresh.available),
        "ringing": ringing,
        "sessions": await room.specialist_sessions(staff),
    })


@require_role(StaffRole.SPECIALIST)
async def specialist_availability(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    await request.app[keys.ROOM].set_available(_staff(request), form.get("available") == "1")
    raise web.HTTPSeeOther("/specialist")


@require_role(StaffRole.SUPERVISOR, StaffRole.AUDITOR, StaffRole.ADMIN)
async def supervisor(request: web.Request) -> web.StreamResponse:
    room = request.app[keys.ROOM]
    return aiohttp_jinja2.render_template("supervisor.html", request, {
        "sessions": await room.sessions.recent(),
    })


@require_role(*OUTBOX_READERS)
async def outbox(request: web.Request) -> web.StreamResponse:
    """The console gateway's sent messages: the demo stand-in for the caller's phone, each
    reader seeing only what server/outbox.py lets them."""
    gateway = request.app[keys.SMS]
    entries = (await outbox_for(request.app[keys.ROOM], gateway, _staff(request))
               if isinstance(gateway, ConsoleGateway) else None)
    return aiohttp_jinja2.render_template("outbox.html", request, {"entries": entries})


def see_other(location: str) -> web.Response:
    """A 303 that can carry cookies (raising HTTPSeeOther cannot be returned)."""
    return web.Response(status=303, headers={"Location": location})


def _staff(request: web.Request) -> Any:
    session = current_staff(request)
    assert session is not None  # require_role ran first
    return session.staff


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/", home, name="home")
    r.add_get("/login", login_page, name="login")
    r.add_post("/login", login)
    r.add_post("/logout", logout, name="logout")
    r.add_get("/console", console, name="console")
    r.add_post("/console/sessions", create_session)
    r.add_get("/console/sessions/{session_id}", session_page, name="session")
    r.add_post("/console/sessions/{session_id}/{action}", session_action)
    r.add_get("/specialist", specialist_desk, name="specialist")
    r.add_post("/specialist/availability", specialist_availability)
    r.add_get("/supervisor", supervisor, name="supervisor")
    r.add_get("/outbox", outbox, name="outbox")
