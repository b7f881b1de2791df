"""Risk assessments and referral outcomes, kept in the encrypted case record.

The control room calls this to score a questionnaire and store the assessment, to store a
referral outcome, to read back a session's case notes, and to turn an earlier session's
record into the `PriorContact` that history is built from. Nothing here touches the database
tables: assessments and referrals live only as sealed `risk_assessment` and `referral`
events, so crypto-shredding a session destroys them with the rest of its record.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from server.accounts import Staff
from server.contacts import PriorContact
from server.record import CaseEvent, CaseRecordError, CaseRecordStore, SessionShredded
from server.referrals import ReferralError, ReferralOutcome
from server.refusals import ControlRoomError
from server.risk.assessment import AssessmentError, DowngradeRefused, RiskAssessment, assess
from server.risk.questionnaire import (
    DEFAULT_FORM_ID,
    Questionnaire,
    RiskBand,
    load_questionnaires,
)
from server.sessions import VideoSession

log = logging.getLogger("erv.case_notes")

RISK_KIND = "risk_assessment"
REFERRAL_KIND = "referral"
CASE_READ_KIND = "record_read"  # the same kind the record viewer writes
FORMS_FOLDER = "forms"  # a deployment's own questionnaires: <data_dir>/forms/*.json
_REFERRAL_FIELDS = ("kind", "status", "safe_to_call", "safe_times", "notes", "agency")


class CaseNoteError(ControlRoomError):
    """A refused case note (bad input by default, so 400); answered like any refusal."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(code, message, status)


def forms_for(data_dir: Path) -> dict[str, Questionnaire]:
    """The built-in forms plus a deployment's own from `<data_dir>/forms`, if that exists."""
    folder = data_dir / FORMS_FOLDER
    return load_questionnaires(folder if folder.is_dir() else None)


def form_json(form: Questionnaire) -> dict[str, Any]:
    """A questionnaire as a console needs it to render the form and show the bands."""
    return {
        "id": form.id,
        "title": form.title,
        "version": form.version,
        "description": form.description,
        "default": form.id == DEFAULT_FORM_ID,
        "scoring": form.rule.value,
        "band_question": form.band_question,
        "questions": [
            {
                "id": q.id,
                "text": q.text,
                "kind": q.kind.value,
                "required": q.required,
                "options": [{"value": o.value, "label": o.label} for o in q.options],
                **({"max_length": q.max_length} if q.kind.value == "text" else {}),
            }
            for q in form.questions
        ],
        "bands": [
            {"id": b.band.value, "label": b.label, "min_score": b.min_score} for b in form.bands
        ],
    }


def _optional_text(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise CaseNoteError("bad_field", f"{name} must be text.")
    return value or None


def _sentence(exc: Exception) -> str:
    # Not capitalised: messages often start with a field name, which must stay as sent.
    return f"{exc}."


def _referral_body(body: Mapping[str, Any]) -> dict[str, Any]:
    return {name: body[name] for name in _REFERRAL_FIELDS if name in body}


class CaseNotes:
    """Writes and reads a session's assessments and referrals in its case record."""

    def __init__(self, record: CaseRecordStore | None, forms: Mapping[str, Questionnaire]) -> None:
        self.record = record
        self.forms = dict(forms)

    def forms_json(self) -> list[dict[str, Any]]:
        """Every form, the default (DASH) first."""
        ordered = sorted(self.forms.values(), key=lambda f: (f.id != DEFAULT_FORM_ID, f.id))
        return [form_json(form) for form in ordered]

    def _store(self) -> CaseRecordStore:
        if self.record is None:
            raise CaseNoteError("no_record", "The case record is not available.", 503)
        return self.record

    async def _append(self, session_id: str, kind: str, body: Mapping[str, Any]) -> float:
        try:
            header = await self._store().append(session_id, kind, body)
        except SessionShredded as exc:
            raise CaseNoteError(
                "shredded", "This session's record was destroyed under the retention policy.",
                410,
            ) from exc
        return header.at

    async def assess(
        self,
        session_id: str,
        staff: Staff,
        body: Mapping[str, Any],
        previous_band: RiskBand | None,
        prior_contacts_12_months: int,
    ) -> dict[str, Any]:
        """Score `{form, answers, final_band?, reason?, judgement_marac?}` and store it."""
        form_id = body.get("form", DEFAULT_FORM_ID)
        if not isinstance(form_id, str) or form_id not in self.forms:
            raise CaseNoteError(
                "unknown_form", f"form must be one of {', '.join(sorted(self.forms))}."
            )
        answers = body.get("answers", {})
        if not isinstance(answers, dict):
            raise CaseNoteError("bad_field", "answers must map question ids to answers.")
        judgement_marac = body.get("judgement_marac", False)
        if not isinstance(judgement_marac, bool):
            raise CaseNoteError("bad_field", "judgement_marac must be true or false.")
        final_band = _optional_text(body, "final_band")
        if final_band is not None and final_band not in {b.value for b in RiskBand}:
            raise CaseNoteError(
                "bad_field", f"final_band must be one of {', '.join(b.value for b in RiskBand)}."
            )
        # The floor is the highest band this session has recorded, not only the latest:
        # high, then medium with a reason, then standard still goes below high.
        floor = band_state(session_id, await self._events(session_id))
        try:
            assessment = assess(
                self.forms[form_id],
                answers,
                judged_band=final_band,
                reason=_optional_text(body, "reason"),
                previous_band=previous_band,
                session_band=None if floor is None else floor.highest_band,
                prior_contacts_12_months=prior_contacts_12_months,
                marac_on_judgement=judgement_marac,
            )
        except DowngradeRefused as exc:
            raise CaseNoteError("downgrade_needs_reason", _sentence(exc), 409) from exc
        except AssessmentError as exc:
            raise CaseNoteError("bad_assessment", _sentence(exc)) from exc
        stored = {**assessment.to_dict(), "by": staff.id, "by_role": staff.role.value}
        at = await self._append(session_id, RISK_KIND, stored)
        flag = " [downgraded]" if assessment.downgraded else ""
        log.info("risk assessment (%s%s) stored for session %s by staff %d%s", form_id,
                 "" if assessment.complete else ", incomplete", session_id, staff.id, flag)
        return {**stored, "at": at}

    async def _events(self, session_id: str) -> list[CaseEvent]:
        try:
            return await self._store().read(session_id)
        except SessionShredded as exc:
            raise CaseNoteError(
                "shredded", "This session's record was destroyed under the retention policy.",
                410,
            ) from exc

    async def add_referral(
        self, session_id: str, staff: Staff, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Validate a referral outcome and store it."""
        try:
            outcome = ReferralOutcome.from_dict(body)
        except ReferralError as exc:
            raise CaseNoteError("bad_referral", _sentence(exc)) from exc
        stored = {**outcome.to_dict(), "by": staff.id, "by_role": staff.role.value}
        at = await self._append(session_id, REFERRAL_KIND, stored)
        log.info("referral (%s, %s) stored for session %s by staff %d", outcome.kind,
                 outcome.status, session_id, staff.id)
        return {**stored, "at": at}

    async def note_read(self, session_id: str, staff: Staff) -> None:
        """Reading someone else's case notes is itself written to the record."""
        await self._append(session_id, CASE_READ_KIND,
                           {"by": staff.id, "via": "case_api"})

    async def case(self, session_id: str) -> dict[str, Any]:
        """The latest assessment, the session's band (lowered or not, and its highest), every
        assessment in order (an earlier, higher one stays visible) and every referral."""
        events = await self._events(session_id)
        assessments = [e for e in events if e.header.kind == RISK_KIND]
        state = band_state(session_id, events)
        return {
            "assessment": (
                {**assessments[-1].body, "at": assessments[-1].header.at} if assessments else None
            ),
            "assessments": len(assessments),
            "band": BandState.empty() if state is None else state.to_dict(),
            "history": [_history_item(e) for e in assessments],
            "referrals": [
                {**e.body, "at": e.header.at} for e in events if e.header.kind == REFERRAL_KIND
            ],
        }

    async def prior_contact(self, session: VideoSession) -> PriorContact:
        """What an earlier session contributes to history, read from its record.

        A shredded or unreadable session still counts as a contact, with nothing else.
        """
        started = datetime.fromtimestamp(session.created_at, UTC)
        if self.record is None:
            return PriorContact(session.id, started)
        try:
            events = await self.record.read(session.id)
        except CaseRecordError as exc:
            if not isinstance(exc, SessionShredded):
                log.warning("history: record of session %s unreadable: %s", session.id, exc)
            return PriorContact(session.id, started)
        state = band_state(session.id, events)
        referrals = _current_referrals(session.id, events)
        if state is None:
            return PriorContact(session.id, started, referrals=referrals)
        return PriorContact(
            session.id, started, state.final_band,
            datetime.fromtimestamp(state.at, UTC), referrals,
            band_downgraded=state.downgraded,
            band_lowered_from=state.highest_band if state.lowered else None,
            band_by_role=state.by_role,
            band_reason=state.reason,
        )


@dataclass(frozen=True)
class BandState:
    """A session's band as its complete assessments leave it: the latest one's final band,
    whether that was lowered (with the reason and who) and the highest it ever reached."""

    final_band: RiskBand
    highest_band: RiskBand
    downgraded: bool
    downgrade_rules: tuple[str, ...]
    reason: str | None
    by: int | None
    by_role: str | None
    at: float

    @property
    def lowered(self) -> bool:
        return self.final_band.rank < self.highest_band.rank

    @staticmethod
    def empty() -> dict[str, Any]:
        return {"final_band": None, "highest_band": None, "downgraded": False,
                "downgrade_rules": [], "reason": None, "by": None, "by_role": None, "at": None}

    def to_dict(self) -> dict[str, Any]:
        return {
            "final_band": self.final_band.value, "highest_band": self.highest_band.value,
            "downgraded": self.downgraded, "downgrade_rules": list(self.downgrade_rules),
            "reason": self.reason, "by": self.by, "by_role": self.by_role, "at": self.at,
        }


def band_state(session_id: str, events: list[CaseEvent]) -> BandState | None:
    """The session's band from its record; None if no complete assessment was stored.
    Incomplete forms are skipped: they never set or lower the band."""
    latest: tuple[RiskAssessment, CaseEvent] | None = None
    highest: RiskBand | None = None
    for event in events:
        if event.header.kind != RISK_KIND:
            continue
        try:
            assessment = RiskAssessment.from_dict(event.body)
        except AssessmentError as exc:
            log.warning("history: bad assessment in session %s: %s", session_id, exc)
            continue
        if assessment.final_band is None:
            continue
        latest = (assessment, event)
        if highest is None or assessment.final_band.rank > highest.rank:
            highest = assessment.final_band
    if latest is None or highest is None:
        return None
    assessment, event = latest
    assert assessment.final_band is not None
    by = event.body.get("by")
    role = event.body.get("by_role")
    return BandState(
        final_band=assessment.final_band,
        highest_band=highest,
        downgraded=assessment.downgraded,
        downgrade_rules=tuple(rule.value for rule in assessment.downgrade_rules),
        reason=assessment.reason if assessment.downgraded else None,
        by=by if isinstance(by, int) and not isinstance(by, bool) else None,
        by_role=role if isinstance(role, str) else None,
        at=event.header.at,
    )


def _history_item(event: CaseEvent) -> dict[str, Any]:
    """One assessment in the session's list: what it gave, flagged, and who and when."""
    body = event.body
    return {
        "at": event.header.at,
        **{name: body.get(name) for name in (
            "form_id", "complete", "score", "computed_band", "final_band", "downgraded",
            "downgrade_rules", "reason", "by", "by_role")},
        "complete": body.get("complete", True),
    }


def _current_referrals(session_id: str, events: list[CaseEvent]) -> tuple[ReferralOutcome, ...]:
    """Each referral's latest outcome in the session: a later entry of the same kind (and
    agency) is an update of the earlier one, e.g. MARAC suggested, then made."""
    latest: dict[tuple[str, str | None], ReferralOutcome] = {}
    for event in events:
        if event.header.kind != REFERRAL_KIND:
            continue
        try:
            outcome = ReferralOutcome.from_dict(_referral_body(event.body))
        except ReferralError as exc:
            log.warning("history: bad referral in session %s: %s", session_id, exc)
            continue
        key = (outcome.kind.value, outcome.agency)
        latest.pop(key, None)
        latest[key] = outcome
    return tuple(latest.values())
