"""What each member of staff may see of the console gateway's outbox.

The outbox is the demo stand-in for the callers' phones, so a link in it is as good as the
caller's own: whoever reads it can redeem it and join as the victim. A handler therefore sees
only the texts of their own sessions, with the link (to read it out or open it in a demo).
A supervisor oversees every session and sees every text, but only its session, masked number
and time, with the link cut out: they never act as the caller. Admins run accounts, not calls
(the routes refuse them). The number is always masked, as in every other staff list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from server.accounts import Staff, StaffRole
from server.control_room import ControlRoom
from server.phone import masked
from server.sms import ConsoleGateway

# Who may open the outbox at all (the routes' require_role).
READERS = (StaffRole.HANDLER, StaffRole.SUPERVISOR)
LINK = re.compile(r"\S*/j/[A-Za-z0-9_\-]+")
LINK_HIDDEN = "[link not shown]"


@dataclass(frozen=True)
class OutboxView:
    """One text as one reader may see it."""

    id: str
    session: str
    to: str  # masked
    body: str  # with the link only for the session's own handler
    reference: str
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "session": self.session, "to": self.to, "body": self.body,
                "reference": self.reference, "created_at": self.created_at}


async def outbox_for(room: ControlRoom, gateway: ConsoleGateway, staff: Staff) -> list[OutboxView]:
    """The outbox, newest first, cut down to what `staff` may act on."""
    handlers: dict[str, int | None] = {}
    shown: list[OutboxView] = []
    for entry in gateway.entries():
        if entry.session_id not in handlers:
            session = await room.sessions.get(entry.session_id) if entry.session_id else None
            handlers[entry.session_id] = session.handler_id if session else None
        handler_id = handlers[entry.session_id]
        if handler_id is None:
            continue  # no session any more (or never): nobody may act on it
        own = staff.role is StaffRole.HANDLER and handler_id == staff.id
        if not own and staff.role is not StaffRole.SUPERVISOR:
            continue
        shown.append(OutboxView(
            id=entry.id, session=entry.session_id, to=masked(entry.to),
            body=entry.body if own else LINK.sub(LINK_HIDDEN, entry.body),
            reference=entry.reference, created_at=entry.created_at,
        ))
    return shown
