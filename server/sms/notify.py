"""GOV.UK Notify adapter.

Notify only sends text from a template set up in its web admin, so the service's template must
be exactly

    ((body))

and nothing else: we render the whole message ourselves (ERV_SMS_TEMPLATE) and pass it as the
`body` personalisation. ERV_NOTIFY_TEMPLATE_ID is that template's id.

Authentication is a short-lived HS256 JWT ({"iss": service_id, "iat": now}) signed with the
secret half of the API key, sent as `Authorization: Bearer <jwt>`. Notify rejects tokens whose
`iat` is more than 30 seconds from its clock, so a new one is made for every request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from server.config import NotifySettings
from server.sms.base import SmsError, SmsMessage, SmsReceipt

log = logging.getLogger("erv.sms")

# A 999 call handler is waiting on this; fail fast so they can retry or read the link out.
TIMEOUT_SECONDS = 10.0

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_UUID_LEN = 36
# Notify error names are identifiers like "BadRequestError"; anything else is not echoed.
_ERROR_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


def parse_api_key(api_key: str) -> tuple[str, str]:
    """(service_id, secret_key) from a `{key_name}-{service_id}-{secret_key}` API key.

    Split from the end because the key name may itself contain hyphens.
    """
    key = api_key.strip()
    secret_key = key[-_UUID_LEN:]
    service_id = key[-2 * _UUID_LEN - 1 : -_UUID_LEN - 1]
    name = key[: -2 * _UUID_LEN - 2]
    ok = (
        len(key) > 2 * _UUID_LEN + 2
        and key[-_UUID_LEN - 1] == "-"
        and key[-2 * _UUID_LEN - 2] == "-"
        and bool(name)
        and _UUID.fullmatch(service_id) is not None
        and _UUID.fullmatch(secret_key) is not None
    )
    if not ok:
        # Never include the key itself in the message: it is a secret.
        raise ValueError("malformed GOV.UK Notify API key: expected {key_name}-{uuid}-{uuid}")
    return service_id, secret_key


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def notify_jwt(service_id: str, secret_key: str, now: float) -> str:
    """An HS256 JWT for the Notify API, issued at `now` (Unix seconds)."""
    header = _b64url(json.dumps({"typ": "JWT", "alg": "HS256"}, separators=(",", ":")).encode())
    claims = _b64url(
        json.dumps({"iss": service_id, "iat": int(now)}, separators=(",", ":")).encode()
    )
    signing_input = f"{header}.{claims}"
    signature = hmac.new(secret_key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


def _notify_error_name(body: str) -> str | None:
    """The first error name from a Notify error answer. Only the name is kept: the message
    can quote what was sent."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return None
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None
    name = errors[0].get("error")
    if isinstance(name, str) and _ERROR_NAME.fullmatch(name):
        return name
    return None


class NotifyGateway:
    name: str = "notify"

    def __init__(
        self,
        settings: NotifySettings,
        session: aiohttp.ClientSession | None = None,
        *,
        clock: Callable[[], float] = time.time,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        self._service_id, self._secret_key = parse_api_key(settings.api_key)
        if not settings.template_id:
            raise ValueError("GOV.UK Notify needs a template id")
        self._template_id = settings.template_id
        self._url = f"{settings.base_url.rstrip('/')}/v2/notifications/sms"
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock

    def _client(self) -> aiohttp.ClientSession:
        if self._closed:
            raise SmsError("sms_unavailable", "the SMS gateway is shut down", retryable=False)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def send(self, message: SmsMessage) -> SmsReceipt:
        session = self._client()
        payload = {
            "phone_number": message.to,
            "template_id": self._template_id,
            "personalisation": {"body": message.body},
            "reference": message.reference,
        }
        token = notify_jwt(self._service_id, self._secret_key, self._clock())
        try:
            async with session.post(
                self._url,
                json=payload,
                headers={"Authorization": f"Bearer {token}"},
                timeout=self._timeout,
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
            # `from None`: the exception text can include the URL; keep it out of tracebacks.
            raise SmsError(
                "sms_unavailable", "GOV.UK Notify could not be reached", retryable=True
            ) from None
        if status == 429 or status >= 500:
            log.warning(
                "sms failed gateway=%s reference=%s status=http_%d",
                self.name,
                message.reference,
                status,
            )
            raise SmsError(
                "sms_unavailable", f"GOV.UK Notify is unavailable (HTTP {status})", retryable=True
            )
        if status >= 400:
            error = _notify_error_name(body) or "unknown error"
            log.warning(
                "sms failed gateway=%s reference=%s status=http_%d notify_error=%s",
                self.name,
                message.reference,
                status,
                error,
            )
            raise SmsError(
                "sms_rejected", f"GOV.UK Notify rejected the message (HTTP {status}, {error})"
            )
        return self._receipt(message, status, body)

    def _receipt(self, message: SmsMessage, http_status: int, body: str) -> SmsReceipt:
        try:
            data: Any = json.loads(body)
        except ValueError:
            data = None
        notification_id = data.get("id") if isinstance(data, dict) else None
        if (
            not (200 <= http_status < 300)
            or not isinstance(notification_id, str)
            or not notification_id
        ):
            log.warning(
                "sms failed gateway=%s reference=%s status=unexpected_answer_http_%d",
                self.name,
                message.reference,
                http_status,
            )
            # Not retryable: Notify may well have accepted the message, and a retry would text
            # the caller twice.
            raise SmsError(
                "sms_unavailable", "GOV.UK Notify gave an unexpected answer", retryable=False
            )
        log.info("sms sent gateway=%s reference=%s status=queued", self.name, message.reference)
        return SmsReceipt(gateway=self.name, message_id=notification_id, status="queued")

    async def close(self) -> None:
        self._closed = True
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None
