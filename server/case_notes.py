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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from server.accounts import Staff
from server.contacts import PriorContact
from server.record import CaseEvent, CaseRecordError, CaseRecordStore, SessionShredded
from server.referrals import ReferralError, ReferralOutcome
from server.refusals import ControlRoomError
from server.risk.assessment import AssessmentError, RiskAssessment, assess
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
        try:
            assessment = assess(
                self.forms[form_id],
                answers,
                judged_band=final_band,
                reason=_optional_text(body, "reason"),
                previous_band=previous_band,
                prior_contacts_12_months=prior_contacts_12_months,
                marac_on_judgement=judgement_marac,
            )
        except AssessmentError as exc:
            raise CaseNoteError("bad_assessment", _sentence(exc)) from exc
        stored = {**assessment.to_dict(), "by": staff.id, "by_role": staff.role.value}
        at = await self._append(session_id, RISK_KIND, stored)
        log.info("risk assessment (%s) stored for session %s by staff %d%s", form_id,
                 session_id, staff.id, " [downgraded]" if assessment.downgraded else "")
        return {**stored, "at": at}

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
        """The latest assessment and every referral of the session, from its record."""
        try:
            events = await self._store().read(session_id)
        except SessionShredded as exc:
            raise CaseNoteError(
                "shredded", "This session's record was destroyed under the retention policy.",
                410,
            ) from exc
        assessments = [e for e in events if e.header.kind == RISK_KIND]
        return {
            "assessment": (
                {**assessments[-1].body, "at": assessments[-1].header.at} if assessments else None
            ),
            "assessments": len(assessments),
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
        band, band_at = _latest_band(session.id, events)
        return PriorContact(session.id, started, band, band_at, _current_referrals(session.id,
                                                                                   events))


def _latest_band(session_id: str, events: list[CaseEvent]) -> tuple[
    RiskBand | None, datetime | None
]:
    for event in reversed(events):
        if event.header.kind != RISK_KIND:
            continue
        try:
            assessment = RiskAssessment.from_dict(event.body)
        except AssessmentError as exc:
            log.warning("history: bad assessment in session %s: %s", session_id, exc)
            continue
        return assessment.final_band, datetime.fromtimestamp(event.header.at, UTC)
    return None, None


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
