"""The one interface every SMS gateway implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SmsMessage:
    to: str  # E.164, e.g. +447700900123; never logged
    body: str  # contains the invite link; never logged
    reference: str  # our invite id: opaque, safe to log and to send to the provider
    session_id: str = ""  # whose caller it is; kept by the console outbox, never sent


@dataclass(frozen=True)
class SmsReceipt:
    gateway: str  # "console" | "twilio" | "notify"
    message_id: str  # the provider's id for the message
    status: str  # normalised: "queued" | "sent" | "delivered" | "failed"


class SmsError(Exception):
    """Sending failed. `code` is stable and safe to show staff; the message never holds the
    number or the body."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


# Called by a gateway's delivery-status callback with (message_id, normalised status).
StatusListener = Callable[[str, str], Awaitable[None]]


class SmsGateway(Protocol):
    name: str

    async def send(self, message: SmsMessage) -> SmsReceipt: ...

    async def close(self) -> None: ...
