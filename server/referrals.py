"""Referral outcomes: what was done for the victim, in structured form, and when to call.

Each outcome records the kind of referral, where it stands, bounded notes, whether the
victim's number is safe to call and, if it is, the day/time windows when it is. A call at
the wrong moment can put a victim in danger, so the windows are checked strictly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise
from typing import TypeVar

_E = TypeVar("_E", bound=StrEnum)

MAX_NOTES_LENGTH = 2000
MAX_AGENCY_LENGTH = 200
MAX_SAFE_WINDOWS = 28  # four windows a day is already more than anyone needs
_TIME = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


class ReferralError(ValueError):
    """A referral outcome is malformed; the message is safe to show staff."""


class ReferralKind(StrEnum):
    IDVA = "idva"
    MARAC = "marac"
    REFUGE = "refuge"  # refuge or emergency accommodation
    POLICE_ATTENDANCE = "police_attendance"  # police attendance dispatched
    DVPN_DAPO = "dvpn_dapo"
    CLARES_LAW = "clares_law"  # Domestic Violence Disclosure Scheme
    CHILDRENS_SAFEGUARDING = "childrens_safeguarding"
    NATIONAL_HELPLINE = "national_helpline"  # National Domestic Abuse Helpline
    OTHER_AGENCY = "other_agency"
    DECLINED_BY_VICTIM = "declined_by_victim"


KIND_LABELS: dict[ReferralKind, str] = {
    ReferralKind.IDVA: "IDVA",
    ReferralKind.MARAC: "MARAC",
    ReferralKind.REFUGE: "Refuge or emergency accommodation",
    ReferralKind.POLICE_ATTENDANCE: "Police attendance dispatched",
    ReferralKind.DVPN_DAPO: "DVPN / DAPO",
    ReferralKind.CLARES_LAW: "Clare's Law (DVDS) disclosure",
    ReferralKind.CHILDRENS_SAFEGUARDING: "Children's safeguarding referral",
    ReferralKind.NATIONAL_HELPLINE: "National Domestic Abuse Helpline",
    ReferralKind.OTHER_AGENCY: "Other agency",
    ReferralKind.DECLINED_BY_VICTIM: "Declined by victim",
}


class ReferralStatus(StrEnum):
    SUGGESTED = "suggested"
    MADE = "made"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    CLOSED = "closed"


OPEN_STATUSES = frozenset({ReferralStatus.MADE, ReferralStatus.ACCEPTED})


class SafeToCall(StrEnum):
    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


def _minutes(value: object, name: str) -> int:
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        raise ReferralError(f"{name} must be a time as HH:MM (00:00 to 23:59)")
    return int(value[:2]) * 60 + int(value[3:])


@dataclass(frozen=True)
class SafeTimeWindow:
    """A window on one day when calling is safe, e.g. Tuesday 09:30-11:00.

    A window never crosses midnight: an overnight window is two windows, one per day.
    """

    day: Weekday
    start: str  # HH:MM
    end: str  # HH:MM, after start

    def __post_init__(self) -> None:
        try:
            Weekday(self.day)
        except ValueError as exc:
            raise ReferralError(
                f"day must be one of {', '.join(d.value for d in Weekday)}"
            ) from exc
        if _minutes(self.start, "start") >= _minutes(self.end, "end"):
            raise ReferralError("a safe time window must end after it starts, on the same day")

    def span(self) -> tuple[int, int]:
        return _minutes(self.start, "start"), _minutes(self.end, "end")

    def to_dict(self) -> dict[str, object]:
        return {"day": Weekday(self.day).value, "start": self.start, "end": self.end}

    @classmethod
    def from_dict(cls, data: object) -> SafeTimeWindow:
        if not isinstance(data, Mapping) or set(data) != {"day", "start", "end"}:
            raise ReferralError("a safe time window needs exactly day, start and end")
        day = data["day"]
        if not isinstance(day, str) or day not in {d.value for d in Weekday}:
            raise ReferralError(f"day must be one of {', '.join(d.value for d in Weekday)}")
        start, end = data["start"], data["end"]
        if not isinstance(start, str) or not isinstance(end, str):
            raise ReferralError("start and end must be times as HH:MM")
        return cls(Weekday(day), start, end)


@dataclass(frozen=True)
class ReferralOutcome:
    """One referral as recorded for a session."""

    kind: ReferralKind
    status: ReferralStatus
    safe_to_call: SafeToCall = SafeToCall.UNKNOWN
    safe_times: tuple[SafeTimeWindow, ...] = ()
    notes: str = ""
    agency: str | None = None  # the agency's name; required for other_agency

    def __post_init__(self) -> None:
        kind = _enum(self.kind, ReferralKind, "kind")
        _enum(self.status, ReferralStatus, "status")
        safe = _enum(self.safe_to_call, SafeToCall, "safe_to_call")
        if not isinstance(self.notes, str) or len(self.notes) > MAX_NOTES_LENGTH:
            raise ReferralError(f"notes must be text of at most {MAX_NOTES_LENGTH} characters")
        if self.agency is not None and (
            not isinstance(self.agency, str)
            or not self.agency.strip()
            or len(self.agency) > MAX_AGENCY_LENGTH
        ):
            raise ReferralError(f"agency must be a name of 1 to {MAX_AGENCY_LENGTH} characters")
        if kind is ReferralKind.OTHER_AGENCY and self.agency is None:
            raise ReferralError("a referral to another agency must name the agency")
        if len(self.safe_times) > MAX_SAFE_WINDOWS:
            raise ReferralError(f"at most {MAX_SAFE_WINDOWS} safe time windows")
        if safe is not SafeToCall.YES and self.safe_times:
            raise ReferralError("safe times to call only make sense if the number is safe to call")
        by_day: dict[Weekday, list[tuple[int, int]]] = {}
        for window in self.safe_times:
            if not isinstance(window, SafeTimeWindow):
                raise ReferralError("safe_times must be SafeTimeWindow values")
            by_day.setdefault(Weekday(window.day), []).append(window.span())
        for day, spans in by_day.items():
            spans.sort()
            for (_, end), (start, _) in pairwise(spans):
                if start < end:
                    raise ReferralError(f"safe time windows on {day.value} overlap")

    @property
    def is_open(self) -> bool:
        """Made or accepted, and not yet closed or declined."""
        return (
            ReferralStatus(self.status) in OPEN_STATUSES
            and ReferralKind(self.kind) is not ReferralKind.DECLINED_BY_VICTIM
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": ReferralKind(self.kind).value,
            "status": ReferralStatus(self.status).value,
            "safe_to_call": SafeToCall(self.safe_to_call).value,
            "safe_times": [window.to_dict() for window in self.safe_times],
            "notes": self.notes,
            "agency": self.agency,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ReferralOutcome:
        """Build from stored or submitted JSON; unknown fields and bad values are refused."""
        allowed = {"kind", "status", "safe_to_call", "safe_times", "notes", "agency"}
        unknown = set(data) - allowed
        if unknown:
            raise ReferralError(f"unknown field(s): {', '.join(sorted(unknown))}")
        for name in ("kind", "status"):
            if name not in data:
                raise ReferralError(f"{name} is missing")
        notes = data.get("notes", "")
        if not isinstance(notes, str):
            raise ReferralError("notes must be text")
        agency = data.get("agency")
        if agency is not None and not isinstance(agency, str):
            raise ReferralError("agency must be text")
        raw_times = data.get("safe_times", [])
        if not isinstance(raw_times, list):
            raise ReferralError("safe_times must be a list")
        if len(raw_times) > MAX_SAFE_WINDOWS:
            raise ReferralError(f"at most {MAX_SAFE_WINDOWS} safe time windows")
        return cls(
            kind=_enum(data["kind"], ReferralKind, "kind"),
            status=_enum(data["status"], ReferralStatus, "status"),
            safe_to_call=_enum(data.get("safe_to_call", "unknown"), SafeToCall, "safe_to_call"),
            safe_times=tuple(SafeTimeWindow.from_dict(item) for item in raw_times),
            notes=notes.strip(),
            agency=agency.strip() if isinstance(agency, str) else None,
        )


def _enum(value: object, enum: type[_E], name: str) -> _E:
    allowed = [member.value for member in enum]
    if not isinstance(value, str) or value not in allowed:
        raise ReferralError(f"{name} must be one of {', '.join(allowed)}")
    return enum(value)
