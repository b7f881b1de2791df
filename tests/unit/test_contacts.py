"""server.contacts: keyed-hash linking of numbers and the repeat-contact history summary."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from server.contacts import (
    ContactHistory,
    ContactHistoryError,
    PhoneLinkKey,
    PriorContact,
    phone_link,
    summarise_history,
    twelve_months_before,
)
from server.referrals import ReferralKind, ReferralOutcome
from server.risk.assessment import MaracTrigger, assess
from server.risk.questionnaire import RiskBand, builtin_questionnaires

NUMBER = "+447911123456"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def referral(kind: str, status: str) -> ReferralOutcome:
    return ReferralOutcome.from_dict({"kind": kind, "status": status})


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def test_same_number_same_key_gives_the_same_link() -> None:
    assert phone_link(NUMBER, KEY) == phone_link(NUMBER, KEY)
    assert PhoneLinkKey(KEY).link(NUMBER) == phone_link(NUMBER, KEY)
    expected = hmac.new(KEY, NUMBER.encode(), hashlib.sha256).hexdigest()
    assert phone_link(NUMBER, KEY) == expected
    assert len(expected) == 64


def test_a_different_key_or_number_gives_a_different_link() -> None:
    assert phone_link(NUMBER, KEY) != phone_link(NUMBER, OTHER_KEY)
    assert phone_link(NUMBER, KEY) != phone_link("+447911123457", KEY)
    # A plain hash would let anyone with the database hash every number; the key prevents it.
    assert phone_link(NUMBER, KEY) != hashlib.sha256(NUMBER.encode()).hexdigest()


def test_the_number_never_appears_in_the_link_or_the_key_repr() -> None:
    link = phone_link(NUMBER, KEY)
    for form in (NUMBER, NUMBER[1:], "07911123456", "7911123456", "123456"):
        assert form not in link
    key = PhoneLinkKey(KEY)
    assert KEY.hex() not in repr(key) and "hidden" in repr(key)


@pytest.mark.parametrize("raw", ["07911123456", "447911123456", "+44 7911 123456", "", "+0123"])
def test_only_normalised_numbers_are_linked(raw: str) -> None:
    with pytest.raises(ContactHistoryError, match=r"E\.164"):
        phone_link(raw, KEY)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ContactHistoryError, match="at least 32 bytes"):
        PhoneLinkKey(b"short")
    with pytest.raises(ContactHistoryError, match="at least 32 bytes"):
        phone_link(NUMBER, b"x" * 31)


def test_a_first_contact_has_an_empty_history() -> None:
    history = summarise_history([], NOW)
    assert history == ContactHistory(0, 0, None, None, (), False, False)


def test_repeat_contacts_are_counted_within_twelve_months_only() -> None:
    prior = [
        PriorContact("a", days_ago(400), RiskBand.HIGH),
        PriorContact("b", days_ago(200)),
        PriorContact("c", days_ago(30)),
        PriorContact("d", days_ago(2)),
    ]
    history = summarise_history(prior, NOW)
    assert history.contacts_12_months == 3
    assert history.total_contacts == 4
    assert history.repeat_contact
    only_old = summarise_history(prior[:1], NOW)
    assert only_old.contacts_12_months == 0 and not only_old.repeat_contact
    assert only_old.last_band is RiskBand.HIGH  # an old band is still the last band


def test_the_twelve_month_boundary_is_a_calendar_year() -> None:
    edge = datetime(2023, 6, 1, 12, 0, tzinfo=UTC)
    assert twelve_months_before(NOW) == edge
    assert summarise_history([PriorContact("a", edge)], NOW).contacts_12_months == 1
    just_out = edge - timedelta(seconds=1)
    assert summarise_history([PriorContact("a", just_out)], NOW).contacts_12_months == 0
    leap = datetime(2024, 2, 29, 8, 0, tzinfo=UTC)
    assert twelve_months_before(leap) == datetime(2023, 2, 28, 8, 0, tzinfo=UTC)


def test_the_last_band_is_the_most_recently_assessed() -> None:
    prior = [
        PriorContact("a", days_ago(100), RiskBand.MEDIUM, days_ago(20)),  # assessed after the call
        PriorContact("b", days_ago(50), RiskBand.HIGH),
        PriorContact("c", days_ago(5)),  # no assessment
    ]
    history = summarise_history(prior, NOW)
    assert history.last_band is RiskBand.MEDIUM
    assert history.last_band_at == days_ago(20)


def test_open_referrals_are_listed_whatever_their_age() -> None:
    old_idva = referral("idva", "accepted")
    prior = [
        PriorContact("a", days_ago(500), referrals=(old_idva, referral("refuge", "closed"))),
        PriorContact("b", days_ago(10), referrals=(referral("marac", "suggested"),
                                                    referral("clares_law", "made"))),
    ]
    history = summarise_history(prior, NOW)
    assert [r.kind for r in history.open_referrals] == [
        ReferralKind.IDVA, ReferralKind.CLARES_LAW,
    ]
    assert not history.marac_12_months  # suggested only


@pytest.mark.parametrize(
    ("status", "age_days", "expected"),
    [
        ("made", 100, True),
        ("accepted", 300, True),
        ("closed", 364, True),
        ("suggested", 100, False),
        ("declined", 100, False),
        ("made", 400, False),
    ],
)
def test_marac_in_twelve_months(status: str, age_days: int, expected: bool) -> None:
    prior = [PriorContact("a", days_ago(age_days), referrals=(referral("marac", status),))]
    assert summarise_history(prior, NOW).marac_12_months is expected


def test_history_feeds_the_marac_repeat_contact_rule_and_previous_band() -> None:
    prior = [PriorContact("a", days_ago(90), RiskBand.MEDIUM), PriorContact("b", days_ago(9))]
    history = summarise_history(prior, NOW)
    result = assess(
        builtin_questionnaires()["dash"],
        {f"q{i}": "yes" if i == 1 else "no" for i in range(1, 25)},
        previous_band=history.last_band,
        prior_contacts_12_months=history.contacts_12_months,
        reason="Perpetrator has left the country; victim safe at her sister's.",
    )
    assert result.marac_triggers == (MaracTrigger.REPEAT_CONTACTS,)
    assert result.downgraded  # standard now, medium last time


def test_naive_times_are_refused() -> None:
    with pytest.raises(ContactHistoryError, match="time zone"):
        PriorContact("a", datetime(2024, 1, 1))
    with pytest.raises(ContactHistoryError, match="time zone"):
        summarise_history([], datetime(2024, 1, 1))


def test_summaries_round_trip_through_json() -> None:
    prior = PriorContact(
        "s1", days_ago(3), RiskBand.HIGH, days_ago(2), (referral("idva", "made"),)
    )
    assert PriorContact.from_dict(json.loads(json.dumps(prior.to_dict()))) == prior
    history = summarise_history([prior], NOW)
    stored = json.loads(json.dumps(history.to_dict()))
    assert stored["last_band"] == "high" and stored["repeat_contact"] is True
    assert "+44" not in json.dumps(stored)
    assert ContactHistory.from_dict(stored) == history


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("session_id", "", "session_id"),
        ("started_at", "yesterday", "ISO 8601"),
        ("started_at", "2024-01-01T00:00:00", "time zone"),
        ("risk_band", "severe", "risk_band must be one of"),
        ("referrals", [{"kind": "idva"}], "status is missing"),
        ("referrals", "idva", "must be a list"),
    ],
)
def test_malformed_stored_summaries_are_refused(field: str, value: object, message: str) -> None:
    stored = PriorContact("s1", days_ago(3)).to_dict()
    stored[field] = value
    with pytest.raises(ContactHistoryError, match=message):
        PriorContact.from_dict(stored)


def test_malformed_stored_history_is_refused() -> None:
    stored = summarise_history([], NOW).to_dict()
    with pytest.raises(ContactHistoryError, match="contacts_12_months must be a count"):
        ContactHistory.from_dict({**stored, "contacts_12_months": -1})
    with pytest.raises(ContactHistoryError, match="repeat_contact must be true"):
        ContactHistory.from_dict({**stored, "repeat_contact": "yes"})
