"""The GOV.UK Notify adapter against a real local HTTP server standing in for the Notify API.

The JWT is decoded and its HS256 signature checked here independently of server.sms.notify.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from server.config import Config, NotifySettings
from server.sms import NotifyGateway, SmsError, SmsMessage, make_gateway
from server.sms.notify import notify_jwt, parse_api_key

SERVICE_ID = "26785a09-ab16-4eb0-8407-a37497a57506"
SECRET_KEY = "3d844edf-8d35-48ac-975b-e847b4f122b0"
# Key names may contain hyphens, hence parsing from the end.
API_KEY = f"erv-live-key-{SERVICE_ID}-{SECRET_KEY}"
TEMPLATE_ID = "f33517ff-2a88-4f6e-b855-c550268ce08a"
NOTIFICATION_ID = "740e5834-3a29-46b4-9a6f-16142fde533a"
NUMBER = "+447700900123"
BODY = "Here is the link you asked for: https://erv.example.org/j/SECRETLINK"
NOW = 1_700_000_000.75

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    content_type: str
    authorization: str
    body: bytes


@dataclass
class FakeNotify:
    status: int = 201
    answer: dict[str, Any] = field(
        default_factory=lambda: {
            "id": NOTIFICATION_ID,
            "reference": "inv-1",
            "content": {"body": BODY, "from_number": "GOVUK"},
            "uri": f"https://api.notifications.service.gov.uk/v2/notifications/{NOTIFICATION_ID}",
            "template": {"id": TEMPLATE_ID, "version": 1, "uri": "https://example"},
        }
    )
    delay: float = 0.0
    requests: list[Recorded] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            Recorded(
                method=request.method,
                path=request.path,
                query=request.query_string,
                content_type=request.headers.get("Content-Type", ""),
                authorization=request.headers.get("Authorization", ""),
                body=await request.read(),
            )
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.json_response(self.answer, status=self.status)


@pytest.fixture
async def notify(aiohttp_server: ServerFactory) -> tuple[FakeNotify, str]:
    fake = FakeNotify()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = await aiohttp_server(app)
    assert server.host == "127.0.0.1"
    return fake, str(server.make_url("")).rstrip("/")


def settings(base_url: str) -> NotifySettings:
    return NotifySettings(api_key=API_KEY, template_id=TEMPLATE_ID, base_url=base_url)


def message(reference: str = "inv-1") -> SmsMessage:
    return SmsMessage(to=NUMBER, body=BODY, reference=reference)


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def decode_and_verify_jwt(token: str, secret: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """RFC 7519/7515 compact HS256, checked without the module under test."""
    header_b64, claims_b64, signature_b64 = token.split(".")
    for part in (header_b64, claims_b64, signature_b64):
        assert "=" not in part, "JWT parts are unpadded base64url"
    expected = hmac.new(
        secret.encode(), f"{header_b64}.{claims_b64}".encode("ascii"), hashlib.sha256
    ).digest()
    assert hmac.compare_digest(b64url_decode(signature_b64), expected), "bad HS256 signature"
    return json.loads(b64url_decode(header_b64)), json.loads(b64url_decode(claims_b64))


def assert_nothing_secret_logged(caplog: pytest.LogCaptureFixture) -> None:
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("erv"))
    for secret in (NUMBER, "SECRETLINK", SECRET_KEY, API_KEY, "Bearer"):
        assert secret not in text


# --- sending -----------------------------------------------------------------------------------


async def test_send_posts_the_exact_request(
    notify: tuple[FakeNotify, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="erv.sms")
    fake, base_url = notify
    gateway = NotifyGateway(settings(base_url), clock=lambda: NOW)

    receipt = await gateway.send(message("inv-42"))
    await gateway.close()

    assert (receipt.gateway, receipt.message_id, receipt.status) == (
        "notify",
        NOTIFICATION_ID,
        "queued",
    )
    [req] = fake.requests
    assert req.method == "POST"
    assert req.path == "/v2/notifications/sms"
    assert req.query == ""
    assert req.content_type.split(";")[0] == "application/json"
    assert json.loads(req.body) == {
        "phone_number": NUMBER,
        "template_id": TEMPLATE_ID,
        "personalisation": {"body": BODY},
        "reference": "inv-42",
    }
    scheme, _, token = req.authorization.partition(" ")
    assert scheme == "Bearer"
    header, claims = decode_and_verify_jwt(token, SECRET_KEY)
    assert header == {"typ": "JWT", "alg": "HS256"}
    assert claims == {"iss": SERVICE_ID, "iat": 1_700_000_000}
    assert "inv-42" in caplog.text
    assert_nothing_secret_logged(caplog)


async def test_each_request_gets_a_fresh_token_at_the_real_time(
    notify: tuple[FakeNotify, str],
) -> None:
    fake, base_url = notify
    gateway = NotifyGateway(settings(base_url))
    before = int(time.time())
    await gateway.send(message())
    after = int(time.time())
    await gateway.close()

    [req] = fake.requests
    _, claims = decode_and_verify_jwt(req.authorization.removeprefix("Bearer "), SECRET_KEY)
    assert before <= claims["iat"] <= after
    assert claims["iss"] == SERVICE_ID


def test_a_token_signed_with_another_key_does_not_verify() -> None:
    token = notify_jwt(SERVICE_ID, SECRET_KEY, NOW)
    with pytest.raises(AssertionError):
        decode_and_verify_jwt(token, "a-different-secret")


async def test_make_gateway_builds_a_working_notify_gateway(notify: tuple[FakeNotify, str]) -> None:
    fake, base_url = notify
    config = Config(sms_gateway="notify", notify=settings(base_url))
    config.validate()
    gateway = make_gateway(config)
    receipt = await gateway.send(message())
    await gateway.close()
    assert receipt.gateway == "notify"
    assert len(fake.requests) == 1


async def test_400_is_rejected_with_the_error_name_but_not_the_number(
    notify: tuple[FakeNotify, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="erv.sms")
    fake, base_url = notify
    fake.status = 400
    fake.answer = {
        "errors": [
            {
                "error": "BadRequestError",
                "message": f"Can't send to this recipient using a team-only API key ({NUMBER})",
            }
        ],
        "status_code": 400,
    }
    gateway = NotifyGateway(settings(base_url))

    with pytest.raises(SmsError) as caught:
        await gateway.send(message())
    await gateway.close()

    error = caught.value
    assert error.code == "sms_rejected"
    assert error.retryable is False
    assert "BadRequestError" in str(error)
    assert NUMBER not in str(error)
    assert "team-only" not in str(error)
    assert "SECRETLINK" not in str(error)
    assert_nothing_secret_logged(caplog)


async def test_403_auth_error_is_rejected(notify: tuple[FakeNotify, str]) -> None:
    fake, base_url = notify
    fake.status = 403
    fake.answer = {
        "errors": [
            {"error": "AuthError", "message": "Invalid token: signature, api token is not valid"}
        ],
        "status_code": 403,
    }
    gateway = NotifyGateway(settings(base_url))
    with pytest.raises(SmsError) as caught:
        await gateway.send(message())
    await gateway.close()
    assert caught.value.code == "sms_rejected"
    assert "AuthError" in str(caught.value)


async def test_an_error_name_that_is_not_an_identifier_is_not_echoed(
    notify: tuple[FakeNotify, str],
) -> None:
    fake, base_url = notify
    fake.status = 400
    fake.answer = {"errors": [{"error": f"bad {NUMBER}", "message": "x"}], "status_code": 400}
    gateway = NotifyGateway(settings(base_url))
    with pytest.raises(SmsError) as caught:
        await gateway.send(message())
    await gateway.close()
    assert caught.value.code == "sms_rejected"
    assert NUMBER not in str(caught.value)


@pytest.mark.parametrize("status", [500, 502, 429])
async def test_server_errors_and_rate_limits_are_retryable(
    notify: tuple[FakeNotify, str], status: int
) -> None:
    fake, base_url = notify
    fake.status = status
    fake.answer = {
        "errors": [{"error": "Exception", "message": f"Internal server error {NUMBER}"}],
        "status_code": status,
    }
    gateway = NotifyGateway(settings(base_url))
    with pytest.raises(SmsError) as caught:
        await gateway.send(message())
    await gateway.close()
    assert caught.value.code == "sms_unavailable"
    assert caught.value.retryable is True
    assert NUMBER not in str(caught.value)


async def test_a_success_without_an_id_is_not_retried(notify: tuple[FakeNotify, str]) -> None:
    fake, base_url = notify
    fake.answer = {"reference": "inv-1"}
    gateway = NotifyGateway(settings(base_url))
    with pytest.raises(SmsError) as caught:
        await gateway.send(message())
    await gateway.close()
    assert caught.value.code == "sms_unavailable"
    assert caught.value.retryable is False


async def test_connection_refused_is_retryable() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gateway = NotifyGateway(settings(f"http://127.0.0.1:{port}"))
    with pytest.raises(SmsError) as caught:
        await gateway.send(message())
    await gateway.close()
    assert caught.value.code == "sms_unavailable"
    assert caught.value.retryable is True
    assert caught.value.__cause__ is None


async def test_a_slow_provider_times_out_as_retryable(notify: tuple[FakeNotify, str]) -> None:
    fake, base_url = notify
    fake.delay = 2.0
    gateway = NotifyGateway(settings(base_url), timeout=0.2)
    with pytest.raises(SmsError) as caught:
        await gateway.send(message())
    await gateway.close()
    assert caught.value.code == "sms_unavailable"
    assert caught.value.retryable is True


async def test_a_given_session_is_used_and_left_open(notify: tuple[FakeNotify, str]) -> None:
    fake, base_url = notify
    async with aiohttp.ClientSession() as session:
        gateway = NotifyGateway(settings(base_url), session)
        await gateway.send(message())
        await gateway.close()
        assert not session.closed
    assert len(fake.requests) == 1


async def test_an_owned_session_is_closed_and_sending_after_close_fails(
    notify: tuple[FakeNotify, str],
) -> None:
    _, base_url = notify
    gateway = NotifyGateway(settings(base_url))
    await gateway.send(message())
    owned = gateway._session
    assert owned is not None
    await gateway.close()
    assert owned.closed
    with pytest.raises(SmsError):
        await gateway.send(message())


# --- API key and JWT ---------------------------------------------------------------------------


def test_parse_api_key_splits_from_the_end() -> None:
    assert parse_api_key(API_KEY) == (SERVICE_ID, SECRET_KEY)
    assert parse_api_key(f"k-{SERVICE_ID}-{SECRET_KEY}") == (SERVICE_ID, SECRET_KEY)


@pytest.mark.parametrize(
    "key",
    [
        "",
        SECRET_KEY,
        f"{SERVICE_ID}-{SECRET_KEY}",  # no key name
        f"-{SERVICE_ID}-{SECRET_KEY}",  # empty key name
        f"name-{SERVICE_ID}{SECRET_KEY}",  # missing separator
        f"name-{SERVICE_ID}-{SECRET_KEY[:-1]}",  # secret too short
        f"name-{SERVICE_ID}-{SECRET_KEY[:-1]}z",  # not hex
        f"name-{SERVICE_ID.replace('-', '_')}-{SECRET_KEY}",
    ],
)
def test_parse_api_key_refuses_malformed_keys(key: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_api_key(key)
    assert SECRET_KEY[:8] not in str(caught.value)


def test_a_malformed_key_is_refused_at_construction() -> None:
    with pytest.raises(ValueError):
        NotifyGateway(NotifySettings(api_key="nonsense", template_id=TEMPLATE_ID))
    with pytest.raises(ValueError):
        NotifyGateway(NotifySettings(api_key=API_KEY, template_id=""))


def test_notify_jwt_verifies_independently() -> None:
    token = notify_jwt(SERVICE_ID, SECRET_KEY, NOW)
    header, claims = decode_and_verify_jwt(token, SECRET_KEY)
    assert header == {"typ": "JWT", "alg": "HS256"}
    assert claims == {"iss": SERVICE_ID, "iat": 1_700_000_000}
    assert isinstance(claims["iat"], int)
