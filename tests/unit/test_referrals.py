"""server.referrals: structured referral outcomes, statuses, notes and safe times to call."""

from __future__ import annotations

import json

import pytest

from server.referrals import (
    KIND_LABELS,
    MAX_NOTES_LENGTH,
    MAX_SAFE_WINDOWS,
    ReferralError,
    ReferralKind,
    ReferralOutcome,
    ReferralStatus,
    SafeTimeWindow,
    SafeToCall,
    Weekday,
)


def test_every_kind_named_in_the_issue_exists_with_a_label() -> None:
    assert {k.value for k in ReferralKind} == {
        "idva", "marac", "refuge", "police_attendance", "dvpn_dapo", "clares_law",
        "childrens_safeguarding", "national_helpline", "other_agency", "declined_by_victim",
    }
    assert set(KIND_LABELS) == set(ReferralKind)
    assert KIND_LABELS[ReferralKind.CLARES_LAW] == "Clare's Law (DVDS) disclosure"
    assert {s.value for s in ReferralStatus} == {
        "suggested", "made", "accepted", "declined", "closed",
    }


@pytest.mark.parametrize("kind", list(ReferralKind))
def test_each_kind_round_trips_through_json(kind: ReferralKind) -> None:
    outcome = ReferralOutcome(
        kind=kind,
        status=ReferralStatus.MADE,
        safe_to_call=SafeToCall.YES,
        safe_times=(
            SafeTimeWindow(Weekday.MON, "09:00", "11:30"),
            SafeTimeWindow(Weekday.MON, "14:00", "15:00"),
            SafeTimeWindow(Weekday.SAT, "00:00", "23:59"),
        ),
        notes="Prefers a female caller.",
        agency="Local outreach service" if kind is ReferralKind.OTHER_AGENCY else None,
    )
    stored = json.loads(json.dumps(outcome.to_dict()))
    assert stored["kind"] == kind.value
    assert stored["safe_times"][0] == {"day": "mon", "start": "09:00", "end": "11:30"}
    assert ReferralOutcome.from_dict(stored) == outcome


def test_defaults_are_unknown_safety_and_no_windows() -> None:
    outcome = ReferralOutcome.from_dict({"kind": "idva", "status": "suggested"})
    assert outcome.safe_to_call is SafeToCall.UNKNOWN
    assert outcome.safe_times == () and outcome.notes == "" and outcome.agency is None


@pytest.mark.parametrize(
    ("status", "kind", "is_open"),
    [
        ("suggested", "idva", False),
        ("made", "idva", True),
        ("accepted", "marac", True),
        ("declined", "refuge", False),
        ("closed", "idva", False),
        ("made", "declined_by_victim", False),
    ],
)
def test_open_means_made_or_accepted(status: str, kind: str, is_open: bool) -> None:
    assert ReferralOutcome.from_dict({"kind": kind, "status": status}).is_open is is_open


def test_notes_are_bounded() -> None:
    ReferralOutcome.from_dict({"kind": "idva", "status": "made", "notes": "x" * MAX_NOTES_LENGTH})
    with pytest.raises(ReferralError, match="notes"):
        ReferralOutcome.from_dict(
            {"kind": "idva", "status": "made", "notes": "x" * (MAX_NOTES_LENGTH + 1)}
        )
    with pytest.raises(ReferralError, match="notes must be text"):
        ReferralOutcome.from_dict({"kind": "idva", "status": "made", "notes": 5})


def test_other_agency_must_name_the_agency() -> None:
    with pytest.raises(ReferralError, match="must name the agency"):
        ReferralOutcome.from_dict({"kind": "other_agency", "status": "made"})
    with pytest.raises(ReferralError, match="agency must be a name"):
        ReferralOutcome.from_dict({"kind": "other_agency", "status": "made", "agency": "  "})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"status": "made"}, "kind is missing"),
        ({"kind": "idva"}, "status is missing"),
        ({"kind": "IDVA", "status": "made"}, "kind must be one of"),
        ({"kind": "idva", "status": "pending"}, "status must be one of"),
        ({"kind": "idva", "status": "made", "safe_to_call": True}, "safe_to_call must be one"),
        ({"kind": "idva", "status": "made", "phone": "07911"}, r"unknown field\(s\): phone"),
        ({"kind": "idva", "status": "made", "safe_times": "mon"}, "safe_times must be a list"),
    ],
)
def test_malformed_outcomes_are_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(ReferralError, match=message):
        ReferralOutcome.from_dict(data)


def safe(*windows: object, safe_to_call: str = "yes") -> ReferralOutcome:
    return ReferralOutcome.from_dict(
        {"kind": "idva", "status": "made", "safe_to_call": safe_to_call,
         "safe_times": list(windows)}
    )


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"day": "monday", "start": "09:00", "end": "10:00"}, "day must be one of"),
        ({"day": "mon", "start": "9:00", "end": "10:00"}, "start must be a time"),
        ({"day": "mon", "start": "09:00", "end": "24:00"}, "end must be a time"),
        ({"day": "mon", "start": "09:60", "end": "10:00"}, "start must be a time"),
        ({"day": "mon", "start": "10:00", "end": "10:00"}, "end after it starts"),
        ({"day": "mon", "start": "22:00", "end": "02:00"}, "end after it starts"),
        ({"day": "mon", "start": 900, "end": "10:00"}, "start and end must be times"),
        ({"day": "mon", "start": "09:00"}, "exactly day, start and end"),
        ({"day": "mon", "start": "09:00", "end": "10:00", "tz": "UTC"}, "exactly day"),
        ("mon 09:00-10:00", "exactly day, start and end"),
    ],
)
def test_bad_safe_time_windows_are_refused(window: object, message: str) -> None:
    with pytest.raises(ReferralError, match=message):
        ReferralOutcome.from_dict({"kind": "idva", "status": "made", "safe_to_call": "yes",
                                   "safe_times": [window]})


def test_overlapping_windows_on_one_day_are_refused_but_touching_ones_are_fine() -> None:
    with pytest.raises(ReferralError, match="on tue overlap"):
        safe({"day": "tue", "start": "09:00", "end": "11:00"},
             {"day": "tue", "start": "10:30", "end": "12:00"})
    outcome = safe({"day": "tue", "start": "11:00", "end": "12:00"},
                   {"day": "tue", "start": "09:00", "end": "11:00"},
                   {"day": "wed", "start": "10:30", "end": "12:00"})
    assert len(outcome.safe_times) == 3


def test_no_windows_unless_the_number_is_safe_to_call() -> None:
    window = {"day": "fri", "start": "09:00", "end": "10:00"}
    for answer in ("no", "unknown"):
        with pytest.raises(ReferralError, match="only make sense if the number is safe"):
            safe(window, safe_to_call=answer)
    assert safe(safe_to_call="no").safe_to_call is SafeToCall.NO


def test_the_number_of_windows_is_bounded() -> None:
    days = [d.value for d in Weekday]
    windows = [
        {"day": days[i % 7], "start": f"{i // 7:02d}:00", "end": f"{i // 7:02d}:30"}
        for i in range(MAX_SAFE_WINDOWS + 1)
    ]
    assert len(safe(*windows[:MAX_SAFE_WINDOWS]).safe_times) == MAX_SAFE_WINDOWS
    with pytest.raises(ReferralError, match=f"at most {MAX_SAFE_WINDOWS}"):
        safe(*windows)


def test_constructing_directly_is_validated_too() -> None:
    with pytest.raises(ReferralError, match="end after it starts"):
        SafeTimeWindow(Weekday.SUN, "18:00", "17:00")
    with pytest.raises(ReferralError, match="status must be one of"):
        ReferralOutcome(kind=ReferralKind.IDVA, status="lost")  # type: ignore[arg-type]
