"""server.risk.assessment: DASH scoring and bands, judgement, the downgrade rule, MARAC."""

from __future__ import annotations

import json

import pytest

from server.risk.assessment import (
    MIN_REASON_LENGTH,
    AssessmentError,
    DowngradeRefused,
    DowngradeRule,
    MaracTrigger,
    RiskAssessment,
    assess,
    score_answers,
    unanswered_questions,
)
from server.risk.questionnaire import Questionnaire, RiskBand, builtin_questionnaires

FORMS = builtin_questionnaires()
DASH = FORMS["dash"]
THRIVE = FORMS["thrive"]
REASON = "Victim has moved to a refuge and the perpetrator is in custody."


def dash_answers(yes: int, rest: str = "no") -> dict[str, object]:
    """The first `yes` questions answered yes, the others `rest`."""
    return {f"q{i}": ("yes" if i <= yes else rest) for i in range(1, 25)}


def test_score_counts_only_yes_answers() -> None:
    answers = {**dash_answers(0), "q1": "yes", "q3": "not_known", "q4": "yes", "q24": "yes"}
    result = assess(DASH, answers)
    assert result.score == 3 and result.complete
    assert result.answers == answers
    assert assess(DASH, dash_answers(5, rest="not_known")).score == 5


@pytest.mark.parametrize("answers", [{}, {"q1": "no"}, {f"q{i}": "no" for i in range(1, 24)}])
def test_an_unanswered_question_makes_the_form_incomplete_never_a_zero(
    answers: dict[str, object],
) -> None:
    """Issue 11, finding 4: a blank is not a "no"; an incomplete form has no score or band,
    whatever band is judged, and needs no reason however high the floor."""
    result = assess(DASH, answers, judged_band="high", session_band="high",
                    previous_band="high")
    assert not result.complete and result.score is None
    assert result.final_band is None and result.computed_band is None
    assert not result.downgraded and not result.marac_suggested
    assert len(result.unanswered) == 24 - len(answers)
    assert RiskAssessment.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    thrive = assess(THRIVE, {"priority": "standard"})  # the three levels left blank
    assert not thrive.complete and thrive.unanswered == ("threat_level", "harm_level",
                                                         "risk_level")


def test_lower_than_the_highest_band_in_this_session_needs_a_reason() -> None:
    with pytest.raises(DowngradeRefused, match="highest band recorded in this session"):
        assess(DASH, dash_answers(0), session_band="high")
    result = assess(DASH, dash_answers(0), session_band="high", reason=REASON)
    assert result.downgraded and result.downgrade_rules == (DowngradeRule.BELOW_SESSION,)
    assert result.session_band is RiskBand.HIGH
    assert not assess(DASH, dash_answers(14), session_band="high").downgraded


@pytest.mark.parametrize(
    ("yes", "band"),
    [
        (0, RiskBand.STANDARD),
        (9, RiskBand.STANDARD),
        (10, RiskBand.MEDIUM),
        (13, RiskBand.MEDIUM),
        (14, RiskBand.HIGH),
        (24, RiskBand.HIGH),
    ],
)
def test_dash_band_boundaries(yes: int, band: RiskBand) -> None:
    result = assess(DASH, dash_answers(yes))
    assert result.score == yes
    assert result.computed_band is band
    assert result.final_band is band
    assert not result.downgraded and not result.raised


def test_unknown_question_ids_are_rejected() -> None:
    with pytest.raises(AssessmentError, match="no question 'q25'"):
        assess(DASH, {"q25": "yes"})


@pytest.mark.parametrize("answer", ["maybe", "Yes", "", 1, True, None])
def test_bad_answers_are_rejected(answer: object) -> None:
    with pytest.raises(AssessmentError, match="answer to q1"):
        assess(DASH, {"q1": answer})


def test_judgement_may_raise_the_band_without_a_reason() -> None:
    result = assess(DASH, dash_answers(4), judged_band="high")
    assert result.computed_band is RiskBand.STANDARD
    assert result.final_band is RiskBand.HIGH
    assert result.raised and not result.downgraded
    assert result.downgrade_rules == ()


def test_lower_than_computed_needs_a_reason_and_is_flagged() -> None:
    with pytest.raises(AssessmentError, match="lower than the computed band needs a written"):
        assess(DASH, dash_answers(14), judged_band=RiskBand.MEDIUM)
    with pytest.raises(AssessmentError, match="written reason"):
        assess(DASH, dash_answers(14), judged_band=RiskBand.MEDIUM, reason="   ")
    with pytest.raises(AssessmentError, match=f"at least {MIN_REASON_LENGTH}"):
        assess(DASH, dash_answers(14), judged_band=RiskBand.MEDIUM, reason="x" * 19)

    result = assess(DASH, dash_answers(14), judged_band=RiskBand.MEDIUM, reason=f"  {REASON} ")
    assert result.final_band is RiskBand.MEDIUM
    assert result.computed_band is RiskBand.HIGH
    assert result.downgraded
    assert result.downgrade_rules == (DowngradeRule.BELOW_COMPUTED,)
    assert result.reason == REASON


def test_lower_than_the_previous_contact_needs_a_reason_and_is_flagged() -> None:
    # The score alone fell: that is still a lower band than last time, never silent.
    with pytest.raises(AssessmentError, match="lower than the previous band"):
        assess(DASH, dash_answers(2), previous_band="high")
    result = assess(DASH, dash_answers(2), previous_band="high", reason=REASON)
    assert result.final_band is RiskBand.STANDARD
    assert result.downgraded
    assert result.downgrade_rules == (DowngradeRule.BELOW_PREVIOUS,)
    assert result.previous_band is RiskBand.HIGH


def test_lower_than_both_names_both_rules() -> None:
    with pytest.raises(AssessmentError, match="computed band and the previous band"):
        assess(DASH, dash_answers(12), judged_band="standard", previous_band="high")
    result = assess(
        DASH, dash_answers(12), judged_band="standard", previous_band="high", reason=REASON
    )
    assert result.downgrade_rules == (DowngradeRule.BELOW_COMPUTED, DowngradeRule.BELOW_PREVIOUS)


def test_same_or_higher_than_previous_is_not_a_downgrade() -> None:
    same = assess(DASH, dash_answers(11), previous_band="medium")
    higher = assess(DASH, dash_answers(15), previous_band="medium")
    raised_to_previous = assess(DASH, dash_answers(3), previous_band="high", judged_band="high")
    for result in (same, higher, raised_to_previous):
        assert not result.downgraded and result.downgrade_rules == ()
        assert result.reason is None


def test_bad_band_names_and_overlong_reasons_are_rejected() -> None:
    with pytest.raises(AssessmentError, match="band must be one of"):
        assess(DASH, {}, judged_band="severe")
    with pytest.raises(AssessmentError, match="band must be one of"):
        assess(DASH, {}, previous_band="HIGH")
    with pytest.raises(AssessmentError, match="at most"):
        assess(DASH, dash_answers(14), judged_band="medium", reason="x" * 5000)


def test_marac_is_suggested_when_the_band_is_high() -> None:
    result = assess(DASH, dash_answers(14))
    assert result.marac_suggested
    assert result.marac_triggers == (MaracTrigger.HIGH_BAND,)
    raised = assess(DASH, dash_answers(1), judged_band="high")
    assert raised.marac_triggers == (MaracTrigger.HIGH_BAND,)


def test_marac_is_not_suggested_for_medium_without_other_triggers() -> None:
    result = assess(DASH, dash_answers(13), prior_contacts_12_months=1)
    assert not result.marac_suggested and result.marac_triggers == ()


def test_marac_is_suggested_on_the_third_contact_in_twelve_months() -> None:
    second = assess(DASH, dash_answers(0), prior_contacts_12_months=1)
    third = assess(DASH, dash_answers(0), prior_contacts_12_months=2)
    assert not second.marac_suggested
    assert third.marac_suggested
    assert third.marac_triggers == (MaracTrigger.REPEAT_CONTACTS,)
    with pytest.raises(AssessmentError, match="negative"):
        assess(DASH, {}, prior_contacts_12_months=-1)


def test_marac_is_suggested_on_professional_judgement() -> None:
    result = assess(DASH, dash_answers(0), marac_on_judgement=True)
    assert result.marac_triggers == (MaracTrigger.PROFESSIONAL_JUDGEMENT,)
    every = assess(DASH, dash_answers(20), prior_contacts_12_months=5, marac_on_judgement=True)
    assert set(every.marac_triggers) == set(MaracTrigger)


def test_thrive_band_comes_from_the_judged_priority() -> None:
    levels = {"threat_level": "high", "harm_level": "medium", "risk_level": "medium"}
    result = assess(THRIVE, {**levels, "priority": "medium", "threat": "  Threats to kill.  "})
    assert result.score is None
    assert result.computed_band is RiskBand.MEDIUM and result.final_band is RiskBand.MEDIUM
    assert result.answers["threat"] == "Threats to kill."
    with pytest.raises(AssessmentError, match="question priority must be answered"):
        assess(THRIVE, {"threat": "x"})
    with pytest.raises(AssessmentError, match="answer to harm_level must be one of"):
        assess(THRIVE, {"priority": "high", "harm_level": "extreme"})
    with pytest.raises(AssessmentError, match="longer than 2000"):
        assess(THRIVE, {"priority": "high", "harm": "x" * 2001})


def test_a_form_with_no_band_at_all_needs_a_judged_band() -> None:
    form = Questionnaire(
        id="notes-only",
        title="Notes",
        version="1",
        description="",
        questions=THRIVE.questions[1:2],
        rule=THRIVE.rule,
        bands=THRIVE.bands,
        band_question=None,
    )
    with pytest.raises(AssessmentError, match="choose one"):
        assess(form, {})
    result = assess(form, {}, judged_band="high", previous_band="medium")
    assert result.computed_band is None and result.final_band is RiskBand.HIGH
    assert not result.raised and not result.downgraded


def test_score_answers_drops_blank_text_answers() -> None:
    clean, score, band = score_answers(THRIVE, {"priority": "high", "harm": "   "})
    assert unanswered_questions(THRIVE, clean) == ("threat_level", "harm_level", "risk_level")
    assert clean == {"priority": "high"} and score is None and band is RiskBand.HIGH


def test_round_trip_through_json() -> None:
    result = assess(
        DASH, dash_answers(14), judged_band="medium", previous_band="high", reason=REASON,
        prior_contacts_12_months=3,
    )
    stored = json.loads(json.dumps(result.to_dict()))
    assert stored["downgrade_rules"] == ["below_computed", "below_previous"]
    assert stored["final_band"] == "medium"
    assert RiskAssessment.from_dict(stored) == result


@pytest.mark.parametrize(
    ("field", "value"),
    [("final_band", "severe"), ("score", "14"), ("answers", {"q1": 1}), ("raised", "no"),
     ("downgrade_rules", ["sideways"]), ("marac_triggers", "high_band"), ("reason", 5)],
)
def test_malformed_stored_assessments_are_rejected(field: str, value: object) -> None:
    stored = assess(DASH, dash_answers(3)).to_dict()
    for newer in ("session_band", "complete", "unanswered"):  # older records lack these
        del stored[newer]
    assert RiskAssessment.from_dict(stored).complete
    stored[field] = value
    with pytest.raises(AssessmentError):
        RiskAssessment.from_dict(stored)
    del stored[field]
    with pytest.raises(AssessmentError, match=f"lacks {field}"):
        RiskAssessment.from_dict(stored)
