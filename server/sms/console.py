"""An SMS gateway that sends nothing: messages land in an in-memory outbox.

Used for demos, development and tests. Staff read the outbox on a staff-only page, so it holds
the number and the body; it is never logged and is bounded so a long-running demo cannot grow
without limit.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from server.sms.base import SmsMessage, SmsReceipt

log = logging.getLogger("erv.sms")

OUTBOX_SIZE = 200


@dataclass(frozen=True)
class OutboxEntry:
    id: str
    to: str
    body: str
    reference: str
    created_at: float  # Unix time, seconds


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
