"""Twilio Programmable Messaging adapter and its signed delivery-status callback.

Sending: POST /2010-04-01/Accounts/{sid}/Messages.json, form-encoded, HTTP basic auth.
Status callbacks: Twilio POSTs a form to the StatusCallback URL we gave it, signed with the
X-Twilio-Signature header (base64 HMAC-SHA1, keyed with the auth token, over the full URL
followed by every POST parameter name and value, sorted by name).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from server.config import TwilioSettings
from server.form_body import read_form
from server.sms.base import SmsError, SmsMessage, SmsReceipt, StatusListener

log = logging.getLogger("erv.sms")

# A 999 call handler is waiting on this; better to fail fast and let them retry or read the
# link out than to hang on a slow provider.
TIMEOUT_SECONDS = 10.0

SIGNATURE_HEADER = "X-Twilio-Signature"

# Twilio's message statuses mapped to the normalised ones in SmsReceipt. Statuses not listed
# (receiving, received, partially_delivered) are for inbound or group messages and are ignored.
TWILIO_STATUSES: Mapping[str, str] = {
    "queued": "queued",
    "accepted": "queued",
    "scheduled": "queued",
    "sending": "queued",
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "failed": "failed",
    "undelivered": "failed",
    "canceled": "failed",
}

Handler = Callable[[web.Request], Awaitable[web.Response]]


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The X-Twilio-Signature Twilio would send for a form POST of `params` to `url`."""
    payload = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def valid_twilio_signature(
    auth_token: str, url: str, params: Mapping[str, str], signature: str
) -> bool:
    if not auth_token or not signature:
        return False
    expected = twilio_signature(auth_token, url, params)
    # Compare bytes: compare_digest refuses non-ASCII str, and the header is attacker-supplied.
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))


def _twilio_error_code(body: str) -> int | None:
    """Twilio's numeric error code from an error answer. Only the number is kept: the
    accompanying message can quote the phone number."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    code = data.get("code") if isinstance(data, dict) else None
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    return None


class TwilioGateway:
    name: str = "twilio"

    def __init__(
        self,
        settings: TwilioSettings,
        status_callback_url: str | None,
        session: aiohttp.ClientSession | None = None,
        *,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        if not (settings.account_sid and settings.auth_token):
            raise ValueError("Twilio needs an account SID and an auth token")
        if not (settings.from_number or settings.messaging_service_sid):
            raise ValueError("Twilio needs a from number or a messaging service SID")
        self._settings = settings
        self._status_callback_url = status_callback_url
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        base = settings.base_url.rstrip("/")
        self._url = (
            f"{base}/2010-04-01/Accounts/{quote(settings.account_sid, safe='')}/Messages.json"
        )
        # Built by hand: aiohttp.BasicAuth is deprecated and its replacement is too new to rely on.
        credentials = f"{settings.account_sid}:{settings.auth_token}".encode()
        self._headers = {"Authorization": "Basic " + base64.b64encode(credentials).decode("ascii")}

    def _client(self) -> aiohttp.ClientSession:
        if self._closed:
            raise SmsError("sms_unavailable", "the SMS gateway is shut down", retryable=False)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    def _form(self, message: SmsMessage) -> dict[str, str]:
        form = {"To": message.to, "Body": message.body}
        if self._settings.from_number:
            form["From"] = self._settings.from_number
        else:
            form["MessagingServiceSid"] = self._settings.messaging_service_sid
        if self._status_callback_url:
            form["StatusCallback"] = self._status_callback_url
        return form

    async def send(self, message: SmsMessage) -> SmsReceipt:
        session = self._client()
        try:
            async with session.post(
                self._url, data=self._form(message), headers=self._headers, timeout=self._timeout
            ) as response:
                status = response.status
                body = await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning(
                "sms failed gateway=%s reference=%s status=%s",
                self.name,
                message.reference,
                type(exc).__name__,
            )
            raise SmsError(
                "sms_unavailable", "Twilio could not be reached", retryable=True
            ) from None  # the exception text can include the URL; keep it out of tracebacks
        if status == 429 or status >= 500:
            log.warning(
                "sms failed gateway=%s reference=%s status=http_%d",
                self.name,
                message.reference,
                status,
            )
            raise SmsError(
                "sms_unavailable", f"Twilio is unavailable (HTTP {status})", retryable=True
            )
        if status >= 400:
            code = _twilio_error_code(body)
            detail = f"Twilio error {code}" if code is not None else "no Twilio error code"
            log.warning(
                "sms failed gateway=%s reference=%s status=http_%d twilio_code=%s",
                self.name,
                message.reference,
                status,
                code,
            )
            raise SmsError("sms_rejected", f"Twilio rejected the message (HTTP {status}, {detail})")
        return self._receipt(message, status, body)

    def _receipt(self, message: SmsMessage, http_status: int, body: str) -> SmsReceipt:
        try:
            data: Any = json.loads(body)
        except ValueError:
            data = None
        sid = data.get("sid") if isinstance(data, dict) else None
        if not (200 <= http_status < 300) or not isinstance(sid, str) or not sid:
            log.warning(
                "sms failed gateway=%s reference=%s status=unexpected_answer_http_%d",
                self.name,
                message.reference,
                http_status,
            )
            # Not retryable: Twilio may well have accepted the message, and a retry would text
            # the caller twice.
            raise SmsError("sms_unavailable", "Twilio gave an unexpected answer", retryable=False)
        raw_status = data.get("status")
        # A message Twilio accepted but reported in a state we do not know is still on its way.
        normalised = (
            TWILIO_STATUSES.get(raw_status, "queued") if isinstance(raw_status, str) else "queued"
        )
        log.info(
            "sms sent gateway=%s reference=%s status=%s", self.name, message.reference, normalised
        )
        return SmsReceipt(gateway=self.name, message_id=sid, status=normalised)

    async def close(self) -> None:
        self._closed = True
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None


def status_callback_handler(auth_token: str, public_url: str, listener: StatusListener) -> Handler:
    """An aiohttp handler for Twilio's message status callbacks.

    `public_url` is the scheme and host Twilio was given (e.g. "https://erv.example.org"):
    behind TLS termination or a proxy, request.url is not the URL Twilio signed.
    """
    if not auth_token:
        raise ValueError("the Twilio status callback needs the auth token to check signatures")
    base = public_url.rstrip("/")

    async def handler(request: web.Request) -> web.Response:
        form = await read_form(request)
        params: dict[str, str] = {}
        for name, value in form.items():
            if not isinstance(value, str):  # Twilio never uploads files
                return web.Response(status=400, text="bad request")
            params.setdefault(name, value)
        # raw_path_qs keeps the percent-encoding as sent, which is what Twilio signed.
        url = base + request.rel_url.raw_path_qs
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not valid_twilio_signature(auth_token, url, params, signature):
            log.warning("sms status callback rejected gateway=twilio status=bad_signature")
            return web.Response(status=403, text="invalid signature")
        message_id = params.get("MessageSid", "")
        status = TWILIO_STATUSES.get(params.get("MessageStatus", ""))
        if not message_id or status is None:
            # Signed by Twilio, just nothing we track; a 204 stops Twilio flagging errors.
            log.info("sms status callback ignored gateway=twilio")
            return web.Response(status=204)
        log.info("sms status gateway=twilio status=%s", status)
        await listener(message_id, status)
        return web.Response(status=204)

    return handler
