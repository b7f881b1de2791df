"""An SMS gateway that sends nothing: messages land in an in-memory outbox.

Used for demos, development and tests. Staff read the outbox on a staff-only page (what each
of them may see of it is server/outbox.py), so it holds the number, the body and the session;
it is never logged and is bounded so a long-running demo cannot grow without limit.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from server.sms.base import SmsMessage, SmsReceipt

log = logging.getLogger("erv.sms")

OUTBOX_SIZE = 200
PUBLIC_SETTING = "ERV_SMS_CONSOLE_PUBLIC"


def is_loopback_url(url: str) -> bool:
    """Whether `url` can only be reached from this machine (localhost, 127/8, ::1)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(public_url: str) -> str | None:
    """What to say when the console gateway serves a public address, else None.

    With the console gateway no caller gets a text, and the links are on the outbox page
    instead: right for a demo on this machine, wrong for anything callers can reach. The
    words hold no secret (the address is the service's own public one).
    """
    if is_loopback_url(public_url):
        return None
    return (f"ERV_SMS_GATEWAY is console but ERV_PUBLIC_URL ({public_url}) is not a loopback "
            "address: no caller is sent a text, and each link waits on the staff outbox page "
            f"instead. Set a real gateway (twilio or notify), or {PUBLIC_SETTING}=true if this "
            "is a demo meant to be reached from other machines.")


@dataclass(frozen=True)
class OutboxEntry:
    id: str
    to: str
    body: str
    reference: str
    created_at: float  # Unix time, seconds
    session_id: str = ""


class ConsoleGateway:
    name: str = "console"

    def __init__(
        self, *, maxlen: int = OUTBOX_SIZE, clock: Callable[[], float] = time.time
    ) -> None:
        self._outbox: deque[OutboxEntry] = deque(maxlen=maxlen)
        self._clock = clock

    async def send(self, message: SmsMessage) -> SmsReceipt:
        entry = OutboxEntry(
            id=secrets.token_hex(16),
            to=message.to,
            body=message.body,
            reference=message.reference,
            created_at=self._clock(),
            session_id=message.session_id,
        )
        self._outbox.append(entry)  # the deque drops the oldest entry once full
        log.info(
            "sms sent gateway=%s reference=%s status=%s", self.name, message.reference, "delivered"
        )
        return SmsReceipt(gateway=self.name, message_id=entry.id, status="delivered")

    def entries(self) -> list[OutboxEntry]:
        """The outbox, newest first."""
        return list(reversed(self._outbox))

    async def close(self) -> None:
        return None
