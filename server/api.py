"""The JSON API under /api/ for the consoles: sessions, links, specialists, availability.

State-changing calls need the session's CSRF token in `X-CSRF-Token`. Errors are
`{"error": code, "message": text}` with a fitting HTTP status.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from server import keys
from server.accounts import Staff, StaffRole
from server.auth import current_staff, require_role
from server.json_body import read_json_object
from server.outbox import READERS as OUTBOX_READERS
from server.outbox import outbox_for
from server.phone import masked
from server.sessions import VideoSession
from server.sms import ConsoleGateway

ALL_STAFF = (StaffRole.HANDLER, StaffRole.SPECIALIST, StaffRole.SUPERVISOR, StaffRole.AUDITOR,
             StaffRole.ADMIN)


def _error(code: str, message: str, status: int) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, read by the one bounded reader every JSON route uses."""
    return await read_json_object(request)


def _field(body: dict[str, Any], name: str, default: str = "") -> str:
    value = body.get(name, default)
    if not isinstance(value, str):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "bad_field", "message": f"{name} must be a string."}),
            content_type="application/json",
        )
    return value


def _keep_caller(body: dict[str, Any]) -> bool:
    """`keep_caller`: keep the caller in the call when earlier links' credentials end."""
    keep = body.get("keep_caller", False)
    if not isinstance(keep, bool):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "bad_field",
                             "message": "keep_caller must be true or false."}),
            content_type="application/json",
        )
    return keep


def _staff(request: web.Request) -> Staff:
    session = current_staff(request)
    assert session is not None
    return session.staff


def session_json(session: VideoSession, caller: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {
        "id": session.id,
        "incident_ref": session.incident_ref,
        "phone": masked(session.phone),
        "language": session.language,
        "state": session.state.value,
        "timeline": session.timeline(),
        "end_reason": session.end_reason,
        "phone_line": session.phone_line,
    }
    if caller is not None:
        body["caller"] = caller
    return body


@require_role(*ALL_STAFF)
async def me(request: web.Request) -> web.Response:
    session = current_staff(request)
    assert session is not None
    staff = session.staff
    return web.json_response({
        "id": staff.id, "username": staff.username, "name": staff.display_name,
        "role": staff.role.value, "csrf_token": session.csrf_token,
    })


@require_role(StaffRole.HANDLER)
async def create_session(request: web.Request) -> web.Response:
    body = await _body(request)
    room = request.app[keys.ROOM]
    phone_line = body.get("phone_line", True)
    if not isinstance(phone_line, bool):
        return _error("bad_field", "phone_line must be true or false.", 400)
    send_link = body.get("send_link", True)
    if not isinstance(send_link, bool):
        return _error("bad_field", "send_link must be true or false.", 400)
    staff = _staff(request)
    session = await room.create_session(
        staff, _field(body, "incident_ref"), _field(body, "phone"),
        _field(body, "language", "en"), phone_line, send_link,
    )
    return web.json_response(
        {"session": session_json(session), "status": await _status_with_history(
            request, staff, session)}, status=201
    )


async def _status_with_history(request: web.Request, staff: Staff,
                               session: VideoSession) -> dict[str, Any]:
    """The session's status and its contact history facts (a lookup, noted on the record)."""
    room = request.app[keys.ROOM]
    return {**await room.status(session.id),
            "history": await room.history(staff, session, "api")}


@require_role(*ALL_STAFF)
async def list_sessions(request: web.Request) -> web.Response:
    room = request.app[keys.ROOM]
    staff = _staff(request)
    if staff.role is StaffRole.HANDLER:
        sessions = await room.sessions.for_handler(staff.id)
    elif staff.role is StaffRole.SPECIALIST:
        sessions = await room.specialist_sessions(staff)
    elif staff.role in (StaffRole.SUPERVISOR, StaffRole.AUDITOR):
        sessions = await room.sessions.recent()
    else:
        sessions = []
    # Each session says what the control room should know of its caller right now.
    return web.json_response({"sessions": [
        session_json(s, await room.caller(s)) for s in sessions
    ]})


@require_role(*ALL_STAFF)
async def get_session(request: web.Request) -> web.Response:
    room = request.app[keys.ROOM]
    staff = _staff(request)
    session = await room.session_for(staff, request.match_info["session_id"])
    return web.json_response(
        {"session": session_json(session), "status": await _status_with_history(
            request, staff, session)}
    )


@require_role(StaffRole.SUPERVISOR, StaffRole.SPECIALIST, StaffRole.HANDLER)
async def contact_history(request: web.Request) -> web.Response:
    """Earlier contacts in detail (referral notes, safe call times): supervisors and the
    session's specialist; a handler gets 403 (the facts are in the session's status)."""
    details = await request.app[keys.ROOM].history_details(
        _staff(request), request.match_info["session_id"])
    return web.json_response(details)


@require_role(StaffRole.HANDLER)
async def resend_link(request: web.Request) -> web.Response:
    keep = _keep_caller(await _body(request))
    room = request.app[keys.ROOM]
    session_id = request.match_info["session_id"]
    await room.send_link(_staff(request), session_id, keep_caller=keep)
    return web.json_response({"status": await room.status(session_id)})


@require_role(StaffRole.HANDLER)
async def revoke_link(request: web.Request) -> web.Response:
    keep = _keep_caller(await _body(request))
    room = request.app[keys.ROOM]
    session_id = request.match_info["session_id"]
    await room.revoke_link(_staff(request), session_id, keep_caller=keep)
    return web.json_response({"status": await room.status(session_id)})


@require_role(StaffRole.HANDLER)
async def caller_device(request: web.Request) -> web.Response:
    """Admit or refuse a device waiting to join as the caller (`{device, decision}`)."""
    body = await _body(request)
    device, decision = body.get("device"), body.get("decision")
    if not isinstance(device, str) or not 0 < len(device) <= 64:
        return _error("bad_field", "device must be a waiting device's id.", 400)
    if decision not in ("admit", "refuse"):
        return _error("bad_field", "decision must be admit or refuse.", 400)
    room = request.app[keys.ROOM]
    await room.decide_device(_staff(request), request.match_info["session_id"], device,
                             admit=decision == "admit")
    return web.json_response({"device": device, "decision": decision})


@require_role(*ALL_STAFF)
async def end_session(request: web.Request) -> web.Response:
    body = await _body(request)
    room = request.app[keys.ROOM]
    session = await room.end_session(
        _staff(request), request.match_info["session_id"], _field(body, "reason", "ended")
    )
    return web.json_response({"session": session_json(session)})


@require_role(StaffRole.HANDLER)
async def set_call_mode(request: web.Request) -> web.Response:
    """Keep the caller on the 999 phone line, or switch the call to sound on the page."""
    body = await _body(request)
    phone_line = body.get("phone_line")
    if not isinstance(phone_line, bool):
        return _error("bad_field", "phone_line must be true or false.", 400)
    room = request.app[keys.ROOM]
    session_id = request.match_info["session_id"]
    await room.set_call_mode(_staff(request), session_id, phone_line)
    return web.json_response({"status": await room.status(session_id)})


@require_role(*ALL_STAFF)
async def invite_specialist(request: web.Request) -> web.Response:
    body = await _body(request)
    room = request.app[keys.ROOM]
    session_id = request.match_info["session_id"]
    await room.invite_specialist(
        _staff(request), session_id, _field(body, "username") or None
    )
    return web.json_response({"status": await room.status(session_id)}, status=201)


@require_role(StaffRole.HANDLER)
async def cancel_specialist(request: web.Request) -> web.Response:
    room = request.app[keys.ROOM]
    session_id = request.match_info["session_id"]
    await room.cancel_specialist(_staff(request), session_id)
    return web.json_response({"status": await room.status(session_id)})


@require_role(StaffRole.HANDLER, StaffRole.SUPERVISOR)
async def available_specialists(request: web.Request) -> web.Response:
    specialists = await request.app[keys.ROOM].available_specialists()
    return web.json_response({"specialists": [
        {"username": s.username, "name": s.display_name} for s in specialists
    ]})


@require_role(*ALL_STAFF)
async def set_availability(request: web.Request) -> web.Response:
    body = await _body(request)
    available = body.get("available")
    if not isinstance(available, bool):
        return _error("bad_field", "available must be true or false.", 400)
    await request.app[keys.ROOM].set_available(_staff(request), available)
    return web.json_response({"available": available})


@require_role(*ALL_STAFF)
async def answer_invitation(request: web.Request) -> web.Response:
    answer = request.match_info["answer"]
    if answer not in ("accept", "decline"):
        raise web.HTTPNotFound()
    invitation = await request.app[keys.ROOM].answer_invitation(
        _staff(request), request.match_info["invitation_id"], accept=answer == "accept"
    )
    return web.json_response({"invitation": invitation.id, "state": invitation.state.value,
                              "session": invitation.session_id})


@require_role(StaffRole.HANDLER, StaffRole.SPECIALIST, StaffRole.SUPERVISOR)
async def risk_forms(request: web.Request) -> web.Response:
    """The risk questionnaires (DASH first), for a console to render."""
    return web.json_response({"forms": request.app[keys.ROOM].case_notes.forms_json()})


@require_role(StaffRole.HANDLER, StaffRole.SPECIALIST)
async def assess_risk(request: web.Request) -> web.Response:
    body = await _body(request)
    assessment = await request.app[keys.ROOM].assess_risk(
        _staff(request), request.match_info["session_id"], body
    )
    return web.json_response({"assessment": assessment}, status=201)


@require_role(StaffRole.HANDLER, StaffRole.SPECIALIST)
async def add_referral(request: web.Request) -> web.Response:
    body = await _body(request)
    referral = await request.app[keys.ROOM].add_referral(
        _staff(request), request.match_info["session_id"], body
    )
    return web.json_response({"referral": referral}, status=201)


@require_role(StaffRole.HANDLER, StaffRole.SPECIALIST, StaffRole.SUPERVISOR, StaffRole.AUDITOR)
async def case_notes(request: web.Request) -> web.Response:
    case = await request.app[keys.ROOM].case(_staff(request), request.match_info["session_id"])
    return web.json_response({"case": case})


@require_role(*OUTBOX_READERS)
async def outbox(request: web.Request) -> web.Response:
    """The texts of the sessions the reader may act on (server/outbox.py says who sees what)."""
    gateway = request.app[keys.SMS]
    if not isinstance(gateway, ConsoleGateway):
        return _error("not_console", "Texts go to real phones; there is no outbox.", 404)
    shown = await outbox_for(request.app[keys.ROOM], gateway, _staff(request))
    return web.json_response({"messages": [view.to_json() for view in shown]})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/me", me)
    r.add_get("/api/sessions", list_sessions)
    r.add_post("/api/sessions", create_session)
    r.add_get("/api/sessions/{session_id}", get_session)
    r.add_post("/api/sessions/{session_id}/link", resend_link)
    r.add_post("/api/sessions/{session_id}/link/revoke", revoke_link)
    r.add_post("/api/sessions/{session_id}/caller-device", caller_device)
    r.add_post("/api/sessions/{session_id}/end", end_session)
    r.add_post("/api/sessions/{session_id}/call-mode", set_call_mode)
    r.add_post("/api/sessions/{session_id}/specialist", invite_specialist)
    r.add_post("/api/sessions/{session_id}/specialist/cancel", cancel_specialist)
    r.add_get("/api/specialists", available_specialists)
    r.add_post("/api/me/availability", set_availability)
    r.add_post("/api/invitations/{invitation_id}/{answer}", answer_invitation)
    r.add_get("/api/outbox", outbox)
    r.add_get("/api/forms", risk_forms)
    r.add_post("/api/sessions/{session_id}/risk", assess_risk)
    r.add_post("/api/sessions/{session_id}/referrals", add_referral)
    r.add_get("/api/sessions/{session_id}/case", case_notes)
    r.add_get("/api/sessions/{session_id}/history", contact_history)
