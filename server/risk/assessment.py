"""Scoring a filled-in questionnaire: score, band, the downgrade rule, the MARAC suggestion.

Professional judgement may raise the band freely. It may never lower it silently: a final
band below the computed one, below the highest band already recorded in this session, or
below the previous contact's band, needs a written reason and the assessment is flagged
`downgraded` with the rule(s) it went below, so a supervisor reviewing the record sees it at
once. A form with unanswered questions is incomplete: it is stored as such, with no score
and no band, and never sets or lowers the session's band (an unanswered question is not a
"no", and a blank form is not "standard risk").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from server.risk.questionnaire import (
    YES_NO_UNKNOWN_ANSWERS,
    Question,
    QuestionKind,
    Questionnaire,
    RiskBand,
    ScoringRule,
)

MIN_REASON_LENGTH = 20  # long enough that "ok" or "n/a" will not do
MAX_REASON_LENGTH = 2000
MARAC_REPEAT_CONTACTS = 3  # contacts in 12 months, counting this one


class AssessmentError(ValueError):
    """The answers or the judgement cannot be accepted; the message is safe to show staff."""


class DowngradeRefused(AssessmentError):
    """A lower band without a (long enough) written reason."""


class DowngradeRule(StrEnum):
    BELOW_COMPUTED = "below_computed"  # final band lower than the score's band
    BELOW_PREVIOUS = "below_previous"  # final band lower than the previous contact's
    BELOW_SESSION = "below_session"  # final band lower than the highest in this session


_RULE_WORDS = {
    DowngradeRule.BELOW_COMPUTED: "the computed band",
    DowngradeRule.BELOW_PREVIOUS: "the previous band",
    DowngradeRule.BELOW_SESSION: "the highest band recorded in this session",
}


class MaracTrigger(StrEnum):
    HIGH_BAND = "high_band"
    REPEAT_CONTACTS = "repeat_contacts"
    PROFESSIONAL_JUDGEMENT = "professional_judgement"


@dataclass(frozen=True)
class RiskAssessment:
    """An assessment as stored in the case record: complete, or incomplete (no band)."""

    form_id: str
    form_version: str
    answers: dict[str, str]
    score: int | None  # None for forms without a numeric score (THRIVE), or incomplete
    computed_band: RiskBand | None  # None when the form leaves the band wholly to judgement
    final_band: RiskBand | None  # None only for an incomplete form
    previous_band: RiskBand | None = None
    session_band: RiskBand | None = None  # the highest band recorded earlier in this session
    complete: bool = True
    unanswered: tuple[str, ...] = ()  # for an incomplete form: the questions left blank
    raised: bool = False
    downgraded: bool = False
    downgrade_rules: tuple[DowngradeRule, ...] = ()
    reason: str | None = None
    marac_suggested: bool = False
    marac_triggers: tuple[MaracTrigger, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, object]:
        return {
            "form_id": self.form_id,
            "form_version": self.form_version,
            "answers": dict(self.answers),
            "score": self.score,
            "computed_band": None if self.computed_band is None else self.computed_band.value,
            "final_band": None if self.final_band is None else self.final_band.value,
            "previous_band": None if self.previous_band is None else self.previous_band.value,
            "session_band": None if self.session_band is None else self.session_band.value,
            "complete": self.complete,
            "unanswered": list(self.unanswered),
            "raised": self.raised,
            "downgraded": self.downgraded,
            "downgrade_rules": [rule.value for rule in self.downgrade_rules],
            "reason": self.reason,
            "marac_suggested": self.marac_suggested,
            "marac_triggers": [trigger.value for trigger in self.marac_triggers],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> RiskAssessment:
        """Rebuild a stored assessment; raises AssessmentError if the shape is wrong."""
        try:
            answers = data["answers"]
            if not isinstance(answers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in answers.items()
            ):
                raise AssessmentError("answers must map question ids to strings")
            score = data["score"]
            if score is not None and (isinstance(score, bool) or not isinstance(score, int)):
                raise AssessmentError("score must be an integer or null")
            reason = data["reason"]
            if reason is not None and not isinstance(reason, str):
                raise AssessmentError("reason must be a string or null")
            return cls(
                form_id=_string(data["form_id"], "form_id"),
                form_version=_string(data["form_version"], "form_version"),
                answers=dict(answers),
                score=score,
                computed_band=_optional_band(data["computed_band"]),
                final_band=_optional_band(data["final_band"]),
                previous_band=_optional_band(data["previous_band"]),
                # Assessments stored before these fields existed were all complete.
                session_band=_optional_band(data.get("session_band")),
                complete=_flag(data.get("complete", True), "complete"),
                unanswered=tuple(
                    _string(v, "unanswered") for v in _list(data.get("unanswered", []),
                                                            "unanswered")
                ),
                raised=_flag(data["raised"], "raised"),
                downgraded=_flag(data["downgraded"], "downgraded"),
                downgrade_rules=tuple(
                    DowngradeRule(_string(v, "downgrade_rules"))
                    for v in _list(data["downgrade_rules"], "downgrade_rules")
                ),
                reason=reason,
                marac_suggested=_flag(data["marac_suggested"], "marac_suggested"),
                marac_triggers=tuple(
                    MaracTrigger(_string(v, "marac_triggers"))
                    for v in _list(data["marac_triggers"], "marac_triggers")
                ),
            )._checked()
        except KeyError as exc:
            raise AssessmentError(f"stored assessment lacks {exc.args[0]}") from exc
        except ValueError as exc:  # bad enum value
            if isinstance(exc, AssessmentError):
                raise
            raise AssessmentError(f"stored assessment is malformed: {exc}") from exc


    def _checked(self) -> RiskAssessment:
        if self.complete == (self.final_band is None):
            raise AssessmentError("a complete assessment has a band, an incomplete one none")
        return self


def _string(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise AssessmentError(f"{name} must be a string")
    return value


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise AssessmentError(f"{name} must be true or false")
    return value


def _list(value: object, name: str) -> list[object]:
    if not isinstance(value, list):
        raise AssessmentError(f"{name} must be a list")
    return value


def _optional_band(value: object) -> RiskBand | None:
    if value is None:
        return None
    return RiskBand(_string(value, "band"))


def _check_answer(question: Question, answer: object) -> str:
    if not isinstance(answer, str):
        raise AssessmentError(f"answer to {question.id} must be text")
    if question.kind is QuestionKind.YES_NO_UNKNOWN:
        if answer not in YES_NO_UNKNOWN_ANSWERS:
            raise AssessmentError(
                f"answer to {question.id} must be one of {', '.join(YES_NO_UNKNOWN_ANSWERS)}"
            )
        return answer
    if question.kind is QuestionKind.CHOICE:
        if answer not in question.option_values():
            raise AssessmentError(
                f"answer to {question.id} must be one of {', '.join(question.option_values())}"
            )
        return answer
    text = answer.strip()
    if len(text) > question.max_length:
        raise AssessmentError(f"answer to {question.id} is longer than {question.max_length}")
    return text


def score_answers(
    form: Questionnaire, answers: Mapping[str, object]
) -> tuple[dict[str, str], int | None, RiskBand | None]:
    """Validate answers against the form; return (clean answers, score, computed band).

    Unanswered questions are allowed unless the form marks them required: a checklist is
    often completed in part during the call. They never count as "yes".
    """
    clean: dict[str, str] = {}
    for question_id, answer in answers.items():
        question = form.question(question_id)
        if question is None:
            raise AssessmentError(f"form {form.id} has no question {question_id!r}")
        value = _check_answer(question, answer)
        if value:
            clean[question_id] = value
    for question in form.questions:
        if question.required and question.id not in clean:
            raise AssessmentError(f"question {question.id} must be answered")
    if form.rule is ScoringRule.COUNT_YES:
        score = sum(
            1
            for q in form.questions
            if q.kind is QuestionKind.YES_NO_UNKNOWN and clean.get(q.id) == "yes"
        )
        return clean, score, form.band_for_score(score)
    if form.band_question is not None and form.band_question in clean:
        return clean, None, RiskBand(clean[form.band_question])
    return clean, None, None


def unanswered_questions(form: Questionnaire, clean: Mapping[str, str]) -> tuple[str, ...]:
    """The questions a form needs answered before it can give a band: every yes/no/not
    known and every choice question ("not known" is an answer; a text question is a note)."""
    return tuple(
        q.id for q in form.questions if q.kind is not QuestionKind.TEXT and q.id not in clean
    )


def assess(
    form: Questionnaire,
    answers: Mapping[str, object],
    *,
    judged_band: RiskBand | str | None = None,
    reason: str | None = None,
    previous_band: RiskBand | str | None = None,
    session_band: RiskBand | str | None = None,
    prior_contacts_12_months: int = 0,
    marac_on_judgement: bool = False,
) -> RiskAssessment:
    """Score the answers and apply professional judgement, the downgrade rule and MARAC.

    `judged_band` is the band the professional settles on (None: keep the computed band).
    `previous_band` is the final band of this victim's previous contact, if any.
    `session_band` is the highest band recorded so far in this session, if any.
    `prior_contacts_12_months` counts earlier contacts in the last 12 months, not this one.
    """
    clean, score, computed = score_answers(form, answers)
    try:
        judged = None if judged_band is None else RiskBand(judged_band)
        previous = None if previous_band is None else RiskBand(previous_band)
        floor = None if session_band is None else RiskBand(session_band)
    except ValueError as exc:
        raise AssessmentError(
            f"band must be one of {', '.join(b.value for b in RiskBand)}"
        ) from exc
    if prior_contacts_12_months < 0:
        raise AssessmentError("prior contacts cannot be negative")
    written = (reason or "").strip() or None
    if written is not None and len(written) > MAX_REASON_LENGTH:
        raise AssessmentError(f"the reason must be at most {MAX_REASON_LENGTH} characters")
    missing = unanswered_questions(form, clean)
    if missing:
        # Stored as progress, never as a band: a blank is not a "no".
        return RiskAssessment(
            form_id=form.id, form_version=form.version, answers=clean, score=None,
            computed_band=None, final_band=None, previous_band=previous, session_band=floor,
            complete=False, unanswered=missing, reason=written,
        )
    final = judged if judged is not None else computed
    if final is None:
        raise AssessmentError(f"form {form.id} has no computed band: choose one")

    rules: list[DowngradeRule] = []
    if computed is not None and final.rank < computed.rank:
        rules.append(DowngradeRule.BELOW_COMPUTED)
    if previous is not None and final.rank < previous.rank:
        rules.append(DowngradeRule.BELOW_PREVIOUS)
    if floor is not None and final.rank < floor.rank:
        rules.append(DowngradeRule.BELOW_SESSION)
    if rules and (written is None or len(written) < MIN_REASON_LENGTH):
        below = " and ".join(_RULE_WORDS[r] for r in rules)
        raise DowngradeRefused(
            f"a band lower than {below} needs a written reason "
            f"of at least {MIN_REASON_LENGTH} characters"
        )

    triggers: list[MaracTrigger] = []
    if final is RiskBand.HIGH:
        triggers.append(MaracTrigger.HIGH_BAND)
    if prior_contacts_12_months + 1 >= MARAC_REPEAT_CONTACTS:
        triggers.append(MaracTrigger.REPEAT_CONTACTS)
    if marac_on_judgement:
        triggers.append(MaracTrigger.PROFESSIONAL_JUDGEMENT)

    return RiskAssessment(
        form_id=form.id,
        form_version=form.version,
        answers=clean,
        score=score,
        computed_band=computed,
        final_band=final,
        previous_band=previous,
        session_band=floor,
        raised=computed is not None and final.rank > computed.rank,
        downgraded=bool(rules),
        downgrade_rules=tuple(rules),
        reason=written,
        marac_suggested=bool(triggers),
        marac_triggers=tuple(triggers),
    )
