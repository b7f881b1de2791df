"""The Twilio adapter against a real local HTTP server standing in for api.twilio.com, and the
signed status callback mounted on a real aiohttp app."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from server.config import Config, TwilioSettings
from server.sms import (
    TWILIO_STATUS_PATH,
    SmsError,
    SmsMessage,
    TwilioGateway,
    make_gateway,
    status_callback_handler,
)
from server.sms.twilio import twilio_signature, valid_twilio_signature

ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
AUTH_TOKEN = "twilio-test-auth-token"
FROM = "+447700900000"
NUMBER = "+447700900123"
BODY = "Here is the link you asked for: https://erv.example.org/j/SECRETLINK"
PUBLIC_URL = "https://erv.example.org"
MESSAGES_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    content_type: str
    authorization: str
    body: bytes


@dataclass
class FakeTwilio:
    """Records every request and answers with whatever the test set."""

    status: int = 201
    answer: dict[str, Any] = field(default_factory=lambda: {"sid": "SM123", "status": "queued"})
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
async def twilio(aiohttp_server: ServerFactory) -> tuple[FakeTwilio, str]:
    fake = FakeTwilio()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = await aiohttp_server(app)
    assert server.host == "127.0.0.1"
    return fake, str(server.make_url("")).rstrip("/")


def settings(base_url: str, *, from_number: str = FROM, service: str = "") -> TwilioSettings:
    return TwilioSettings(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        from_number=from_number,
        messaging_service_sid=service,
        base_url=base_url,
    )


def form_of(recorded: Recorded) -> dict[str, str]:
    parsed = parse_qs(recorded.body.decode(), keep_blank_values=True, strict_parsing=True)
    assert all(len(values) == 1 for values in parsed.values()), parsed
    return {name: values[0] for name, values in parsed.items()}


def message(reference: str = "inv-1") -> SmsMessage:
    return SmsMessage(to=NUMBER, body=BODY, reference=reference)


def expected_basic_auth() -> str:
    return "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()


def assert_nothing_secret_logged(caplog: pytest.LogCaptureFixture) -> None:
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("erv"))
    for secret in (NUMBER, "SECRETLINK", AUTH_TOKEN, FROM):
        assert secret not in text


# --- sending -----------------------------------------------------------------------------------


async def test_send_posts_the_exact_request(
    twilio: tuple[FakeTwilio, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="erv.sms")
    fake, base_url = twilio
    fake.answer = {"sid": "SM0123456789", "status": "queued", "to": NUMBER, "body": BODY}
    gateway = TwilioGateway(settings(base_url), f"{PUBLIC_URL}/sms/twilio/status")

    receipt = await gateway.send(message("inv-42"))
    await gateway.close()

    assert (receipt.gateway, receipt.message_id, receipt.status) == (
        "twilio",
        "SM0123456789",
        "queued",
    )
    [req] = fake.requests
    assert req.method == "POST"
    assert req.path == MESSAGES_PATH
    assert req.query == ""
    assert req.content_type.split(";")[0] == "application/x-www-form-urlencoded"
    assert req.authorization == expected_basic_auth()
    assert form_of(req) == {
        "To": NUMBER,
        "Body": BODY,
        "From": FROM,
        "StatusCallback": f"{PUBLIC_URL}/sms/twilio/status",
    }
    assert "inv-42" in caplog.text
    assert_nothing_secret_logged(caplog)


async def test_send_uses_the_messaging_service_without_a_from_number_or_callback(
    twilio: tuple[FakeTwilio, str],
) -> None:
    fake, base_url = twilio
    gateway = TwilioGateway(settings(base_url, from_number="", service="MG0123"), None)

    await gateway.send(message())
    await gateway.close()

    [req] = fake.requests
    assert form_of(req) == {"To": NUMBER, "Body": BODY, "MessagingServiceSid": "MG0123"}


@pytest.mark.parametrize(
    ("twilio_status", "normalised"),
    [
        ("queued", "queued"),
        ("accepted", "queued"),
        ("scheduled", "queued"),
        ("sending", "queued"),
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("read", "delivered"),
        ("failed", "failed"),
        ("undelivered", "failed"),
        ("canceled", "failed"),
    ],
)
async def test_send_normalises_the_status(
    twilio: tuple[FakeTwilio, str], twilio_status: str, normalised: str
) -> None:
    fake, base_url = twilio
    fake.answer = {"sid": "SM1", "status": twilio_status}
    gateway = TwilioGateway(settings(base_url), None)
    receipt = await gateway.send(message())
    await gateway.close()
    assert receipt.status == normalised


async def test_make_gateway_gives_twilio_the_status_callback_url(
    twilio: tuple[FakeTwilio, str],
) -> None:
    fake, base_url = twilio
    config = Config(sms_gateway="twilio", public_url=PUBLIC_URL, twilio=settings(base_url))
    config.validate()
    gateway = make_gateway(config)
    await gateway.send(message())
    await gateway.close()
    [req] = fake.requests
    assert form_of(req)["StatusCallback"] == PUBLIC_URL + TWILIO_STATUS_PATH
    assert TWILIO_STATUS_PATH == "/sms/twilio/status"


async def test_400_is_rejected_with_twilios_code_but_not_the_number(
    twilio: tuple[FakeTwilio, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="erv.sms")
    fake, base_url = twilio
    fake.status = 400
    fake.answer = {
        "code": 21211,
        "message": f"The 'To' number {NUMBER} is not a valid phone number.",
        "more_info": "https://www.twilio.com/docs/errors/21211",
        "status": 400,
    }
    gateway = TwilioGateway(settings(base_url), None)

    with pytest.raises(SmsError) as caught:
        await gateway.send(message())
    await gateway.close()

    error = caught.value
    assert error.code == "sms_rejected"
    assert error.retryable is False
    assert "21211" in str(error)
    assert NUMBER not in str(error)
    assert "SECRETLINK" not in str(error)
    assert error.__cause__ is None
    assert_nothing_secret_logged(caplog)


async def test_401_is_rejected(twilio: tuple[FakeTwilio, str]) -> None:
    fake, base_url = twilio
    fake.status = 401
    fake.answer = {"code": 20003, "message": "Authenticate", "status": 401}
    gateway = TwilioGateway(settings(base_url), None)
    with pytest.raises(SmsError) as caught:
        await gateway.send(message())
    await gateway.close()
    assert caught.value.code == "sms_rejected"
    assert "20003" in str(caught.value)


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_server_errors_and_throttling_are_retryable(
    twilio: tuple[FakeTwilio, str], status: int
) -> None:
    fake, base_url = twilio
    fake.status = status
    fake.answer = {"code": 20500, "message": f"oops for {NUMBER}", "status": status}
    gateway = TwilioGateway(settings(base_url), None)
    with pytest.raises(SmsError) as caught:
        await gateway.send(message())
    await gateway.close()
    assert caught.value.code == "sms_unavailable"
    assert caught.value.retryable is True
    assert NUMBER not in str(caught.value)


async def test_a_success_without_a_sid_is_not_retried(twilio: tuple[FakeTwilio, str]) -> None:
    fake, base_url = twilio
    fake.answer = {"status": "queued"}
    gateway = TwilioGateway(settings(base_url), None)
    with pytest.raises(SmsError) as caught:
        await gateway.send(message())
    await gateway.close()
    assert caught.value.code == "sms_unavailable"
    assert caught.value.retryable is False


async def test_connection_refused_is_retryable() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gateway = TwilioGateway(settings(f"http://127.0.0.1:{port}"), None)
    with pytest.raises(SmsError) as caught:
        await gateway.send(message())
    await gateway.close()
    assert caught.value.code == "sms_unavailable"
    assert caught.value.retryable is True
    assert caught.value.__cause__ is None


async def test_a_slow_provider_times_out_as_retryable(twilio: tuple[FakeTwilio, str]) -> None:
    fake, base_url = twilio
    fake.delay = 2.0
    gateway = TwilioGateway(settings(base_url), None, timeout=0.2)
    with pytest.raises(SmsError) as caught:
        await gateway.send(message())
    await gateway.close()
    assert caught.value.code == "sms_unavailable"
    assert caught.value.retryable is True


async def test_a_given_session_is_used_and_left_open(twilio: tuple[FakeTwilio, str]) -> None:
    fake, base_url = twilio
    async with aiohttp.ClientSession() as session:
        gateway = TwilioGateway(settings(base_url), None, session)
        await gateway.send(message())
        await gateway.close()
        assert not session.closed
    assert len(fake.requests) == 1


async def test_an_owned_session_is_closed_and_sending_after_close_fails(
    twilio: tuple[FakeTwilio, str],
) -> None:
    _, base_url = twilio
    gateway = TwilioGateway(settings(base_url), None)
    await gateway.send(message())
    owned = gateway._session
    assert owned is not None
    await gateway.close()
    assert owned.closed
    with pytest.raises(SmsError):
        await gateway.send(message())


def test_incomplete_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        TwilioGateway(TwilioSettings(account_sid=ACCOUNT_SID, from_number=FROM), None)
    with pytest.raises(ValueError):
        TwilioGateway(TwilioSettings(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN), None)


# --- signatures --------------------------------------------------------------------------------


def reference_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """Twilio's documented scheme, written out independently of server.sms.twilio."""
    data = url
    for name in sorted(params.keys()):
        data += name
        data += params[name]
    mac = hmac.HMAC(auth_token.encode("utf-8"), data.encode("utf-8"), digestmod=hashlib.sha1)
    return base64.standard_b64encode(mac.digest()).decode("ascii")


# Twilio's published example (its security docs and the twilio-php/twilio-csharp test suites).
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
DOC_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_signature_matches_twilios_documented_example() -> None:
    assert reference_signature("12345", DOC_URL, DOC_PARAMS) == DOC_SIGNATURE
    assert twilio_signature("12345", DOC_URL, DOC_PARAMS) == DOC_SIGNATURE
    # Parameter order as sent does not matter: the scheme sorts by name.
    assert twilio_signature("12345", DOC_URL, dict(reversed(DOC_PARAMS.items()))) == DOC_SIGNATURE
    assert valid_twilio_signature("12345", DOC_URL, DOC_PARAMS, DOC_SIGNATURE)


def test_signature_rejects_any_change() -> None:
    assert not valid_twilio_signature("12346", DOC_URL, DOC_PARAMS, DOC_SIGNATURE)
    assert not valid_twilio_signature("12345", DOC_URL + "&x=1", DOC_PARAMS, DOC_SIGNATURE)
    assert not valid_twilio_signature(
        "12345", DOC_URL, {**DOC_PARAMS, "Digits": "9999"}, DOC_SIGNATURE
    )
    assert not valid_twilio_signature("12345", DOC_URL, DOC_PARAMS, "")
    assert not valid_twilio_signature("12345", DOC_URL, DOC_PARAMS, "invalid 王")
    assert not valid_twilio_signature(
        "", DOC_URL, DOC_PARAMS, reference_signature("", DOC_URL, DOC_PARAMS)
    )


# --- status callback ---------------------------------------------------------------------------


@dataclass
class Listener:
    calls: list[tuple[str, str]] = field(default_factory=list)

    async def __call__(self, message_id: str, status: str) -> None:
        self.calls.append((message_id, status))


def callback_form(status: str = "delivered") -> dict[str, str]:
    # Deliberately not in name order: the signature must sort them.
    return {
        "SmsSid": "SM0123456789",
        "SmsStatus": status,
        "MessageStatus": status,
        "To": NUMBER,
        "MessageSid": "SM0123456789",
        "AccountSid": ACCOUNT_SID,
        "From": FROM,
        "ApiVersion": "2010-04-01",
    }


@pytest.fixture
async def callback_app(
    aiohttp_client: ClientFactory,
) -> tuple[TestClient[web.Request, web.Application], Listener]:
    listener = Listener()
    app = web.Application()
    # A trailing slash on the configured public URL must not change the signed URL.
    app.router.add_post(
        TWILIO_STATUS_PATH, status_callback_handler(AUTH_TOKEN, PUBLIC_URL + "/", listener)
    )
    client = await aiohttp_client(app)
    assert client.server.host == "127.0.0.1"
    return client, listener


async def test_a_correctly_signed_callback_reaches_the_listener(
    callback_app: tuple[TestClient[web.Request, web.Application], Listener],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="erv.sms")
    client, listener = callback_app
    form = callback_form("delivered")
    signature = reference_signature(AUTH_TOKEN, PUBLIC_URL + TWILIO_STATUS_PATH, form)

    response = await client.post(
        TWILIO_STATUS_PATH, data=form, headers={"X-Twilio-Signature": signature}
    )

    assert response.status == 204
    assert listener.calls == [("SM0123456789", "delivered")]
    assert_nothing_secret_logged(caplog)


@pytest.mark.parametrize(
    ("twilio_status", "normalised"),
    [("sent", "sent"), ("undelivered", "failed"), ("read", "delivered"), ("queued", "queued")],
)
async def test_callback_statuses_are_normalised(
    callback_app: tuple[TestClient[web.Request, web.Application], Listener],
    twilio_status: str,
    normalised: str,
) -> None:
    client, listener = callback_app
    form = callback_form(twilio_status)
    signature = reference_signature(AUTH_TOKEN, PUBLIC_URL + TWILIO_STATUS_PATH, form)
    response = await client.post(
        TWILIO_STATUS_PATH, data=form, headers={"X-Twilio-Signature": signature}
    )
    assert response.status == 204
    assert listener.calls == [("SM0123456789", normalised)]


async def test_the_query_string_is_part_of_the_signed_url(
    callback_app: tuple[TestClient[web.Request, web.Application], Listener],
) -> None:
    client, listener = callback_app
    form = callback_form()
    path = TWILIO_STATUS_PATH + "?site=north%20west&n=1"
    good = reference_signature(AUTH_TOKEN, PUBLIC_URL + path, form)
    without_query = reference_signature(AUTH_TOKEN, PUBLIC_URL + TWILIO_STATUS_PATH, form)

    bad = await client.post(path, data=form, headers={"X-Twilio-Signature": without_query})
    assert bad.status == 403
    assert listener.calls == []
    ok = await client.post(path, data=form, headers={"X-Twilio-Signature": good})
    assert ok.status == 204
    assert listener.calls == [("SM0123456789", "delivered")]


async def test_a_bad_signature_is_refused(
    callback_app: tuple[TestClient[web.Request, web.Application], Listener],
) -> None:
    client, listener = callback_app
    form = callback_form()
    wrong_token = reference_signature("not-the-token", PUBLIC_URL + TWILIO_STATUS_PATH, form)

    response = await client.post(
        TWILIO_STATUS_PATH, data=form, headers={"X-Twilio-Signature": wrong_token}
    )

    assert response.status == 403
    assert response.content_type == "text/plain"
    assert 0 < len(await response.text()) < 100
    assert listener.calls == []


async def test_a_signature_over_the_local_url_is_refused(
    callback_app: tuple[TestClient[web.Request, web.Application], Listener],
) -> None:
    """The public URL is what Twilio signs, not whatever host and scheme reached us."""
    client, listener = callback_app
    form = callback_form()
    local = str(client.make_url(TWILIO_STATUS_PATH))
    response = await client.post(
        TWILIO_STATUS_PATH,
        data=form,
        headers={"X-Twilio-Signature": reference_signature(AUTH_TOKEN, local, form)},
    )
    assert response.status == 403
    assert listener.calls == []


async def test_a_tampered_status_is_refused(
    callback_app: tuple[TestClient[web.Request, web.Application], Listener],
) -> None:
    client, listener = callback_app
    signature = reference_signature(
        AUTH_TOKEN, PUBLIC_URL + TWILIO_STATUS_PATH, callback_form("failed")
    )
    response = await client.post(
        TWILIO_STATUS_PATH,
        data=callback_form("delivered"),
        headers={"X-Twilio-Signature": signature},
    )
    assert response.status == 403
    assert listener.calls == []


async def test_a_missing_signature_is_refused(
    callback_app: tuple[TestClient[web.Request, web.Application], Listener],
) -> None:
    client, listener = callback_app
    response = await client.post(TWILIO_STATUS_PATH, data=callback_form())
    assert response.status == 403
    assert response.content_type == "text/plain"
    assert listener.calls == []


async def test_an_unknown_status_is_ignored(
    callback_app: tuple[TestClient[web.Request, web.Application], Listener],
) -> None:
    client, listener = callback_app
    form = callback_form("receiving")
    signature = reference_signature(AUTH_TOKEN, PUBLIC_URL + TWILIO_STATUS_PATH, form)
    response = await client.post(
        TWILIO_STATUS_PATH, data=form, headers={"X-Twilio-Signature": signature}
    )
    assert response.status == 204
    assert listener.calls == []


def test_the_callback_needs_an_auth_token() -> None:
    with pytest.raises(ValueError):
        status_callback_handler("", PUBLIC_URL, Listener())
