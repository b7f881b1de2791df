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
from server.accounts import StaffRole
from server.auth import (
    CSRF_FIELD,
    clear_session_cookie,
    cookie_name,
    current_staff,
    require_role,
    set_session_cookie,
)
from server.control_room import ControlRoomError
from server.phone import PhoneNumberError, masked
from server.sessions import SessionInputError
from server.sms import ConsoleGateway

log = logging.getLogger("erv.http")

HOME_BY_ROLE = {
    StaffRole.HANDLER: "/console",
    StaffRole.SPECIALIST: "/specialist",
    StaffRole.SUPERVISOR: "/supervisor",
    StaffRole.AUDITOR: "/supervisor",
    StaffRole.ADMIN: "/supervisor",
}


async def template_context(request: web.Request) -> dict[str, Any]:
    session = current_staff(request)
    return {
        "staff": session.staff if session else None,
        "csrf_token": session.csrf_token if session else "",
        "csrf_field": CSRF_FIELD,
        "masked": masked,
        "now": time.time(),
    }


async def home(request: web.Request) -> web.StreamResponse:
    session = current_staff(request)
    raise web.HTTPSeeOther(HOME_BY_ROLE[session.staff.role] if session else "/login")


@aiohttp_jinja2.template("login.html")
async def login_page(request: web.Request) -> dict[str, Any]:
    return {"error": None, "username": ""}


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    username = str(form.get("username", ""))[:64]
    password = str(form.get("password", ""))
    result = await request.app[keys.ACCOUNTS].sign_in(username, password)
    if result.staff is None:
        # The pause grows with each failure; it slows guessing, not other people.
        await asyncio.sleep(result.delay)
        log.info("sign-in refused%s", " (account locked)" if result.locked else "")
        wants_json = "application/json" in request.headers.get("Accept", "")
        message = "That username and password did not work, or the account is locked for a while."
        if wants_json:
            return web.json_response({"error": "sign_in_failed", "message": message}, status=401)
        return aiohttp_jinja2.render_template(
            "login.html", request, {"error": message, "username": username}, status=401
        )
    token, session = await request.app[keys.STAFF_SESSIONS].create(result.staff)
    log.info("staff %d signed in", result.staff.id)
    response: web.StreamResponse
    if "application/json" in request.headers.get("Accept", ""):
        response = web.json_response({
            "username": result.staff.username, "role": result.staff.role.value,
            "csrf_token": session.csrf_token,
        })
    else:
        response = see_other(HOME_BY_ROLE[result.staff.role])
    set_session_cookie(response, request.app[keys.CONFIG], token)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    config = request.app[keys.CONFIG]
    token = request.cookies.get(cookie_name(config), "")
    if token:
        await request.app[keys.STAFF_SESSIONS].end(token)
    session = current_staff(request)
    if session is not None:
        # Signing out closes this person's live sockets too; they cannot resume.
        request.app[keys.HUB].kick_staff(session.staff.id, "signed_out")
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
    form = await request.post()
    room = request.app[keys.ROOM]
    try:
        session = await room.create_session(
            _staff(request), str(form.get("incident_ref", "")), str(form.get("phone", "")),
            str(form.get("language", "en")),
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
    return aiohttp_jinja2.render_template("session.html", request, {
        "session": session,
        "status": await room.status(session.id),
        "specialists": await room.available_specialists(),
    })


@require_role(StaffRole.HANDLER)
async def session_action(request: web.Request) -> web.StreamResponse:
    room = request.app[keys.ROOM]
    staff = _staff(request)
    session_id = request.match_info["session_id"]
    action = request.match_info["action"]
    form = await request.post()
    try:
        if action == "resend":
            await room.send_link(staff, session_id)
        elif action == "revoke":
            await room.revoke_link(staff, session_id)
        elif action == "end":
            await room.end_session(staff, session_id, str(form.get("reason", "ended")))
        elif action == "specialist":
            await room.invite_specialist(staff, session_id, str(form.get("username", "")) or None)
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
    return aiohttp_jinja2.render_template("specialist.html", request, {
        "available": bool(fresh and fresh.available),
        "ringing": await room.invitations.ringing_for(staff.id),
        "sessions": await room.sessions.for_specialist(staff.id),
    })


@require_role(StaffRole.SPECIALIST)
async def specialist_availability(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    await request.app[keys.ROOM].set_available(_staff(request), form.get("available") == "1")
    raise web.HTTPSeeOther("/specialist")


@require_role(StaffRole.SUPERVISOR, StaffRole.AUDITOR, StaffRole.ADMIN)
async def supervisor(request: web.Request) -> web.StreamResponse:
    room = request.app[keys.ROOM]
    return aiohttp_jinja2.render_template("supervisor.html", request, {
        "sessions": await room.sessions.recent(),
    })


@require_role(StaffRole.HANDLER, StaffRole.SUPERVISOR, StaffRole.ADMIN)
async def outbox(request: web.Request) -> web.StreamResponse:
    """The console gateway's sent messages: the demo stand-in for the caller's phone."""
    gateway = request.app[keys.SMS]
    entries = gateway.entries() if isinstance(gateway, ConsoleGateway) else None
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
