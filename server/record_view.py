"""Reading a session's case record, decrypted, for supervisors and auditors.

`GET /records/{session_id}` shows the session's facts and its events as a timeline;
`GET /api/sessions/{session_id}/record` gives the same as JSON. Every read first appends a
`record_read` event (who, and whether by page or API; no content) to the session's record,
so a read is on the record before anything is shown. A purged session's record cannot be
decrypted or extended: the reader gets a calm message and the read goes to the log only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from server import keys
from server.accounts import Staff, StaffRole
from server.auth import current_staff, require_role
from server.evidence import readable_body
from server.phone import masked
from server.record import SessionShredded
from server.referrals import KIND_LABELS, ReferralKind
from server.risk.questionnaire import RiskBand
from server.sessions import VideoSession

log = logging.getLogger("erv.record")

READ_KIND = "record_read"
BAND_ORDER = [band.value for band in RiskBand]  # standard < medium < high
READERS = (StaffRole.SUPERVISOR, StaffRole.AUDITOR)
I18N_EN = Path(__file__).resolve().parent.parent / "web" / "static" / "i18n" / "en.json"

KIND_LABELS_PLAIN: dict[str, str] = {
    "session_created": "Session created",
    "invite_sent": "Text message with the link sent",
    "invite_revoked": "Link revoked",
    "credentials_ended": "Credentials from earlier links ended",
    "caller_device_waiting": "A different device tried to join as the caller",
    "caller_device_admitted": "The waiting device was let in as the caller",
    "caller_device_refused": "The waiting device was refused",
    "caller_device_withdrawn": "The waiting device went away",
    "caller_device_ended": "The waiting device's credential was ended",
    "invite_opened": "Link opened",
    "invite_redeemed": "Caller joined through the link",
    "participant_joined": "Joined the call",
    "participant_left": "Left the call",
    "media_connected": "Video connected",
    "chat": "Chat message",
    "advice": "Staff advice",
    "location": "Location shared",
    "specialist_invited": "Specialist invited",
    "specialist_accepted": "Specialist accepted",
    "specialist_declined": "Specialist declined",
    "specialist_timed_out": "Specialist did not answer",
    "risk_assessment": "Risk assessment",
    "referral": "Referral",
    "session_ended": "Session ended",
    "record_read": "Record read",
    "history_consulted": "Contact history consulted",
    "record_exported": "Record exported",
    "evidence_added": "Evidence added",
    "legal_hold_set": "Legal hold set",
    "legal_hold_released": "Legal hold released",
}
ROLE_NAMES = {"victim": "Caller", "handler": "Handler", "specialist": "Specialist",
              "observer": "Supervisor (observing)", "supervisor": "Supervisor",
              "auditor": "Auditor", "admin": "Admin"}
END_REASON_NAMES = {"ended": "Ended", "resolved": "Resolved", "caller_safe": "Caller is safe",
                    "no_response": "No response from the caller", "other": "Other"}
LANGUAGE_NAMES = {"en": "English", "cy": "Cymraeg (Welsh)"}
# Body fields that name a staff member (shown in "who", not among the details).
STAFF_FIELDS = ("staff", "staff_id", "by", "handler", "specialist")
# Bookkeeping fields not worth a reader's attention.
QUIET_FIELDS = frozenset({"id", "ts", "invite", "invitation", "role"})


@cache
def canned_texts() -> dict[str, str]:
    """The quick replies in English, as the staff console shows them."""
    try:
        strings = json.loads(I18N_EN.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k.removeprefix("canned."): str(v) for k, v in strings.items()
            if k.startswith("canned.")}


def when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return str(seconds)
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def plain(value: Any) -> str:
    """Any body value as short readable text."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def field_name(name: str) -> str:
    return name.replace("_", " ").capitalize()


@dataclass
class Row:
    """One event, ready to show: what, who, and details as (label, text) pairs."""

    seq: int
    at: float
    kind: str
    label: str
    who: str
    role: str | None
    staff_id: int | None
    staff_only: bool
    details: list[tuple[str, str]] = field(default_factory=list)

    @property
    def time(self) -> str:
        return when(self.at)

    @property
    def iso(self) -> str:
        return iso(self.at)

    def to_json(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "seq": self.seq, "at": self.at, "time": when(self.at), "kind": self.kind,
            "label": self.label, "who": self.who, "role": self.role, "staff_id": self.staff_id,
            "staff_only": self.staff_only,
            "details": [{"label": k, "text": v} for k, v in self.details],
            "body": body,
        }


def shown_body(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """The body as readers get it: without evidence keys, and the caller's number stays
    masked here too."""
    body = readable_body(kind, body)
    if kind == "session_created" and isinstance(body.get("phone"), str):
        return {**body, "phone": masked(body["phone"])}
    return body


class Presenter:
    """Turns decrypted events into rows, naming staff by role and display name."""

    def __init__(self, staff: dict[int, Staff]) -> None:
        self.staff = staff

    def person(self, staff_id: Any) -> str:
        if isinstance(staff_id, int) and not isinstance(staff_id, bool):
            person = self.staff.get(staff_id)
            if person is None:
                return f"staff #{staff_id}"
            return f"{ROLE_NAMES.get(person.role.value, person.role.value)} / {person.display_name}"
        return str(staff_id)

    def who(self, kind: str, body: dict[str, Any]) -> tuple[str, str | None, int | None]:
        role = body.get("role") if isinstance(body.get("role"), str) else None
        if role == "victim" or kind in ("location", "invite_opened", "invite_redeemed"):
            return "Caller", "victim", None
        for name in ("staff", "staff_id", "by", "handler") + (
                ("specialist",) if kind in ("specialist_accepted", "specialist_declined")
                else ()):
            value = body.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                person = self.staff.get(value)
                return self.person(value), person.role.value if person else role, value
            if isinstance(value, str) and value:
                return value, role, None  # an operator's name, from the command line
        if role is not None:
            return ROLE_NAMES.get(role, role), role, None
        return "System", None, None

    def details(self, kind: str, body: dict[str, Any]) -> list[tuple[str, str]]:
        if kind == "session_created":
            return [("Incident", plain(body.get("incident_ref"))),
                    ("Caller", plain(body.get("phone"))),
                    ("Language", LANGUAGE_NAMES.get(str(body.get("language")),
                                                    plain(body.get("language"))))]
        if kind == "invite_sent":
            out = [("Text status", plain(body.get("status"))),
                   ("Gateway", plain(body.get("gateway")))]
            if body.get("error"):
                out.append(("Error", plain(body["error"])))
            return out
        if kind == "chat":
            if "canned" in body:
                canned = str(body["canned"])
                return [("Quick reply", canned_texts().get(canned, canned))]
            return [("Message", plain(body.get("text")))]
        if kind == "advice":
            return [("Advice (staff only)", plain(body.get("text")))]
        if kind == "location":
            return [("Position", f"{plain(body.get('lat'))}, {plain(body.get('lon'))}"),
                    ("Accuracy", f"± {plain(body.get('accuracy'))} m")]
        if kind == "media_connected":
            return [("After the text", duration(body.get("seconds_from_invite")))]
        if kind.startswith("specialist_"):
            return [("Specialist", self.person(body.get("specialist")))]
        if kind == "participant_left" and "reason" in body:
            return [("Reason", plain(body["reason"]))]
        if kind == "participant_joined":
            return []
        if kind == "session_ended":
            reason = str(body.get("reason", ""))
            return [("Reason", END_REASON_NAMES.get(reason, reason)),
                    ("Duration", duration(body.get("duration")))]
        if kind == "record_read":
            return [("Read through", "the API" if body.get("via") == "api" else "the page")]
        if kind == "risk_assessment":
            return self.risk(body)
        if kind == "referral":
            return self.referral(body)
        return self.generic(body)

    @staticmethod
    def generic(body: dict[str, Any]) -> list[tuple[str, str]]:
        return [(field_name(k), plain(v)) for k, v in body.items()
                if k not in STAFF_FIELDS and k not in QUIET_FIELDS]

    def risk(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        data = body.get("assessment") if isinstance(body.get("assessment"), dict) else body
        assert isinstance(data, dict)
        out: list[tuple[str, str]] = []
        if "form_id" in data:
            out.append(("Form", plain(data["form_id"])))
        if "score" in data:
            out.append(("Score", plain(data["score"])))
        if "computed_band" in data:
            out.append(("Computed band", plain(data["computed_band"])))
        band = data.get("final_band", data.get("band"))
        if band is not None:
            out.append(("Band", plain(band)))
        if data.get("complete") is False:
            out.append(("Incomplete (sets no band)",
                        f"{len(data.get('unanswered') or [])} questions unanswered"))
        if data.get("downgraded"):
            rules = ", ".join(str(r) for r in data.get("downgrade_rules") or []) or "yes"
            out.append(("Downgraded (flagged)", rules))
            out.append(("Reason given", plain(data.get("reason"))))
            higher = [b for b in (data.get("session_band"), data.get("previous_band"),
                                  data.get("computed_band")) if isinstance(b, str)]
            if higher:
                out.append(("Lowered from", max(higher, key=BAND_ORDER.index)
                            if all(b in BAND_ORDER for b in higher) else higher[0]))
        if data.get("marac_suggested"):
            out.append(("MARAC suggested", ", ".join(
                str(t) for t in data.get("marac_triggers") or []) or "yes"))
        shown = {"form_id", "score", "computed_band", "final_band", "band", "downgraded",
                 "downgrade_rules", "reason", "marac_suggested", "marac_triggers", "answers",
                 "assessment", "complete", "unanswered"}
        out += [(k, v) for k, v in self.generic({k: v for k, v in data.items()
                                                 if k not in shown})]
        if data is not body:
            out += self.generic({k: v for k, v in body.items() if k != "assessment"})
        return out

    def referral(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        data = body.get("referral") if isinstance(body.get("referral"), dict) else body
        assert isinstance(data, dict)
        out: list[tuple[str, str]] = []
        kind = data.get("kind")
        if isinstance(kind, str):
            try:
                out.append(("Referral", KIND_LABELS[ReferralKind(kind)]))
            except ValueError:
                out.append(("Referral", kind))
        for name in ("status", "agency", "safe_to_call", "notes"):
            if data.get(name) not in (None, ""):
                out.append((field_name(name), plain(data[name])))
        times = data.get("safe_times")
        if isinstance(times, list) and times:
            out.append(("Safe times to call", "; ".join(
                f"{t.get('day')} {t.get('start')} to {t.get('end')}" if isinstance(t, dict)
                else plain(t) for t in times)))
        shown = {"kind", "status", "agency", "safe_to_call", "notes", "safe_times", "referral"}
        out += self.generic({k: v for k, v in data.items() if k not in shown})
        if data is not body:
            out += self.generic({k: v for k, v in body.items() if k != "referral"})
        return out

    def row(self, seq: int, at: float, kind: str, body: dict[str, Any]) -> Row:
        who, role, staff_id = self.who(kind, body)
        return Row(seq, at, kind, KIND_LABELS_PLAIN.get(kind, field_name(kind)), who, role,
                   staff_id, kind == "advice", self.details(kind, body))


def session_facts(session: VideoSession, handler: Staff | None) -> dict[str, Any]:
    return {
        "id": session.id,
        "incident_ref": session.incident_ref,
        "caller": masked(session.phone) if session.phone else "",
        "handler": handler.display_name if handler else f"staff #{session.handler_id}",
        "language": LANGUAGE_NAMES.get(session.language, session.language),
        "state": session.state.value,
        "created_at": session.created_at,
        "created": when(session.created_at),
        "created_iso": iso(session.created_at),
        "ended_at": session.ended_at,
        "ended": when(session.ended_at),
        "ended_iso": iso(session.ended_at),
        "end_reason": END_REASON_NAMES.get(session.end_reason or "", session.end_reason),
        "duration": duration(session.ended_at - session.created_at)
        if session.ended_at else None,
    }


async def read_record(request: web.Request, via: str) -> dict[str, Any]:
    """Note the read, then decrypt: the facts, and the events (or that it was purged)."""
    staff = current_staff(request)
    assert staff is not None  # require_role ran first
    reader = staff.staff
    room = request.app[keys.ROOM]
    session_id = request.match_info["session_id"]
    session = await room.sessions.get(session_id) if len(session_id) <= 64 else None
    if session is None:
        raise web.HTTPNotFound(text="No such session.")
    store = request.app[keys.RECORD]
    try:
        # On the record before anything is read: a failed note means nothing is shown.
        await store.append(session.id, READ_KIND, {"by": reader.id, "via": via})
        events = await store.read(session.id)
    except SessionShredded:
        log.info("record of session %s read by staff %d via %s: purged", session.id,
                 reader.id, via)
        events = None
    else:
        log.info("record of session %s read by staff %d via %s", session.id, reader.id, via)
    ids = {session.handler_id}
    for event in events or []:
        ids.update(v for name in STAFF_FIELDS
                   if isinstance(v := event.body.get(name), int) and not isinstance(v, bool))
    people = {i: p for i in ids if (p := await room.accounts.get(i)) is not None}
    presenter = Presenter(people)
    rows = []
    for event in events or []:
        body = shown_body(event.header.kind, event.body)
        rows.append((presenter.row(event.header.seq, event.header.at, event.header.kind, body),
                     body))
    return {
        "session": session_facts(session, people.get(session.handler_id)),
        "purged": events is None,
        "rows": rows,
    }


@require_role(*READERS)
async def record_page(request: web.Request) -> web.StreamResponse:
    try:
        record = await read_record(request, "page")
    except web.HTTPNotFound:
        return aiohttp_jinja2.render_template("message.html", request, {
            "title": "Not found", "message": "No such session.", "back": "/supervisor",
        }, status=404)
    return aiohttp_jinja2.render_template("record.html", request, {
        "facts": record["session"], "purged": record["purged"],
        "rows": [row for row, _ in record["rows"]],
    })


@require_role(*READERS)
async def record_api(request: web.Request) -> web.StreamResponse:
    record = await read_record(request, "api")
    return web.json_response({
        "session": record["session"],
        "purged": record["purged"],
        "events": [row.to_json(body) for row, body in record["rows"]],
    })


def add_routes(app: web.Application) -> None:
    app.router.add_get("/records/{session_id}", record_page, name="record")
    app.router.add_get("/api/sessions/{session_id}/record", record_api)
