"""A victim's history across sessions, linked only by a keyed hash of the phone number.

The record never stores a number in the clear. Sessions from the same number are linked by
HMAC-SHA256 of its E.164 form under a key of its own (not the record's master keys), so a
copy of the database alone cannot be turned back into numbers by hashing every mobile
number there is. `summarise_history` is the pure computation behind "3 contacts in 12
months, last risk HIGH": it takes the summaries of earlier sessions from that number.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from server.referrals import ReferralError, ReferralKind, ReferralOutcome, ReferralStatus
from server.risk.questionnaire import RiskBand

MIN_KEY_BYTES = 32
LINK_HEX_LENGTH = 64
_E164 = re.compile(r"\+[1-9]\d{6,14}")
# A MARAC "happened" once the referral was made; a mere suggestion or a refusal does not count.
_MARAC_HELD = frozenset({ReferralStatus.MADE, ReferralStatus.ACCEPTED, ReferralStatus.CLOSED})


class ContactHistoryError(ValueError):
    """Bad input to the history computation (a bad key, number, date or stored summary)."""


class PhoneLinkKey:
    """The secret that links sessions by number; it never appears in repr or logs."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
            raise ContactHistoryError(f"the phone link key must be at least {MIN_KEY_BYTES} bytes")
        self._key = key

    def __repr__(self) -> str:
        return "PhoneLinkKey(<hidden>)"

    def link(self, e164: str) -> str:
        """The link id for a number: hex HMAC-SHA256 of its E.164 form."""
        return phone_link(e164, self._key)


def phone_link(e164: str, key: bytes) -> str:
    """HMAC-SHA256(key, E.164 number) as 64 hex digits; the number must be normalised."""
    if not isinstance(e164, str) or not _E164.fullmatch(e164):
        raise ContactHistoryError("the number must be normalised to E.164 before linking")
    if len(key) < MIN_KEY_BYTES:
        raise ContactHistoryError(f"the phone link key must be at least {MIN_KEY_BYTES} bytes")
    return hmac.new(key, e164.encode("ascii"), hashlib.sha256).hexdigest()


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ContactHistoryError(f"{name} must carry a time zone")
    return value


def _parse_time(value: object, name: str) -> datetime:
    if not isinstance(value, str):
        raise ContactHistoryError(f"{name} must be an ISO 8601 time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ContactHistoryError(f"{name} must be an ISO 8601 time") from exc
    return _aware(parsed, name)


def _parse_band(value: object, name: str) -> RiskBand | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in {b.value for b in RiskBand}:
        raise ContactHistoryError(f"{name} must be one of {', '.join(b.value for b in RiskBand)}")
    return RiskBand(value)


def _parse_referrals(value: object, name: str) -> tuple[ReferralOutcome, ...]:
    if not isinstance(value, list):
        raise ContactHistoryError(f"{name} must be a list")
    out: list[ReferralOutcome] = []
    for item in value:
        if not isinstance(item, dict):
            raise ContactHistoryError(f"{name} must hold objects")
        try:
            out.append(ReferralOutcome.from_dict(item))
        except ReferralError as exc:
            raise ContactHistoryError(f"{name}: {exc}") from exc
    return tuple(out)


def twelve_months_before(now: datetime) -> datetime:
    """The same moment a calendar year earlier (29 February falls back to the 28th)."""
    try:
        return now.replace(year=now.year - 1)
    except ValueError:
        return now.replace(year=now.year - 1, day=28)


@dataclass(frozen=True)
class PriorContact:
    """What history needs from one earlier session from the same number."""

    session_id: str
    started_at: datetime
    risk_band: RiskBand | None = None  # the final band of its assessment, if one was made
    risk_assessed_at: datetime | None = None
    referrals: tuple[ReferralOutcome, ...] = ()
    band_downgraded: bool = False  # that band was a flagged downgrade (with a reason)
    band_lowered_from: RiskBand | None = None  # the higher band it reached before, if any
    band_by_role: str | None = None  # who set that band, by role ("handler", "specialist")
    band_reason: str | None = None  # the written reason, if that band was a downgrade

    def __post_init__(self) -> None:
        _aware(self.started_at, "started_at")
        if self.risk_assessed_at is not None:
            _aware(self.risk_assessed_at, "risk_assessed_at")

    @property
    def band_time(self) -> datetime:
        return self.risk_assessed_at or self.started_at

    def to_dict(self) -> dict[str, object]:
        return {
            "session_id": self.session_id,
            "started_at": self.started_at.isoformat(),
            "risk_band": None if self.risk_band is None else RiskBand(self.risk_band).value,
            "risk_assessed_at": (
                None if self.risk_assessed_at is None else self.risk_assessed_at.isoformat()
            ),
            "referrals": [referral.to_dict() for referral in self.referrals],
            "band_downgraded": self.band_downgraded,
            "band_lowered_from": (
                None if self.band_lowered_from is None else RiskBand(self.band_lowered_from).value
            ),
            "band_by_role": self.band_by_role,
            "band_reason": self.band_reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> PriorContact:
        session_id = data.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            raise ContactHistoryError("session_id must be a non-empty string")
        assessed = data.get("risk_assessed_at")
        return cls(
            session_id=session_id,
            started_at=_parse_time(data.get("started_at"), "started_at"),
            risk_band=_parse_band(data.get("risk_band"), "risk_band"),
            risk_assessed_at=(
                None if assessed is None else _parse_time(assessed, "risk_assessed_at")
            ),
            referrals=_parse_referrals(data.get("referrals", []), "referrals"),
            band_downgraded=data.get("band_downgraded") is True,
            band_lowered_from=_parse_band(data.get("band_lowered_from"), "band_lowered_from"),
            band_by_role=by_role if isinstance(by_role := data.get("band_by_role"), str) else None,
            band_reason=reason if isinstance(reason := data.get("band_reason"), str) else None,
        )


@dataclass(frozen=True)
class ContactHistory:
    """What the handler sees when a session is created for a number seen before."""

    contacts_12_months: int  # earlier sessions in the last 12 months (not this one)
    total_contacts: int  # earlier sessions ever
    last_band: RiskBand | None
    last_band_at: datetime | None
    open_referrals: tuple[ReferralOutcome, ...]
    marac_12_months: bool
    repeat_contact: bool  # at least one earlier contact in the last 12 months
    # The contact the last band comes from (its downgrade flag); not part of the summary.
    last_banded: PriorContact | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, object]:
        return {
            "contacts_12_months": self.contacts_12_months,
            "total_contacts": self.total_contacts,
            "last_band": None if self.last_band is None else RiskBand(self.last_band).value,
            "last_band_at": None if self.last_band_at is None else self.last_band_at.isoformat(),
            "open_referrals": [referral.to_dict() for referral in self.open_referrals],
            "marac_12_months": self.marac_12_months,
            "repeat_contact": self.repeat_contact,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ContactHistory:
        counts: list[int] = []
        for name in ("contacts_12_months", "total_contacts"):
            value = data.get(name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ContactHistoryError(f"{name} must be a count")
            counts.append(value)
        flags: list[bool] = []
        for name in ("marac_12_months", "repeat_contact"):
            flag = data.get(name)
            if not isinstance(flag, bool):
                raise ContactHistoryError(f"{name} must be true or false")
            flags.append(flag)
        band_at = data.get("last_band_at")
        return cls(
            contacts_12_months=counts[0],
            total_contacts=counts[1],
            last_band=_parse_band(data.get("last_band"), "last_band"),
            last_band_at=None if band_at is None else _parse_time(band_at, "last_band_at"),
            open_referrals=_parse_referrals(data.get("open_referrals", []), "open_referrals"),
            marac_12_months=flags[0],
            repeat_contact=flags[1],
        )


def summarise_history(prior: Iterable[PriorContact], now: datetime) -> ContactHistory:
    """Summarise earlier sessions from one number, as of `now` (time-zone aware).

    Open referrals are listed whatever their age: an IDVA case opened 14 months ago and
    still open matters today.
    """
    since = twelve_months_before(_aware(now, "now"))
    contacts = list(prior)
    recent = [c for c in contacts if c.started_at >= since]
    banded = [c for c in contacts if c.risk_band is not None]
    last = max(banded, key=lambda c: c.band_time, default=None)
    open_referrals = tuple(
        referral
        for contact in sorted(contacts, key=lambda c: c.started_at)
        for referral in contact.referrals
        if referral.is_open
    )
    marac = any(
        ReferralKind(r.kind) is ReferralKind.MARAC and ReferralStatus(r.status) in _MARAC_HELD
        for contact in recent
        for r in contact.referrals
    )
    return ContactHistory(
        contacts_12_months=len(recent),
        total_contacts=len(contacts),
        last_band=None if last is None else last.risk_band,
        last_band_at=None if last is None else last.band_time,
        open_referrals=open_referrals,
        marac_12_months=marac,
        repeat_contact=bool(recent),
        last_banded=last,
    )
