"""The console gateway, message rendering and gateway selection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from server.config import DEFAULT_SMS_TEMPLATE, Config, NotifySettings, TwilioSettings
from server.sms import (
    ConsoleGateway,
    NotifyGateway,
    SmsMessage,
    TwilioGateway,
    make_gateway,
    render_sms,
)
from server.sms.console import exposure_warning, is_loopback_url

NUMBER = "+447700900123"
BODY = "Here is the link you asked for: https://erv.example.org/j/SECRETLINK"


def _clock(start: float = 1_700_000_000.0) -> Iterator[float]:
    now = start
    while True:
        yield now
        now += 1.0


async def test_send_keeps_the_message_and_reports_delivered() -> None:
    ticks = _clock()
    gateway = ConsoleGateway(clock=lambda: next(ticks))

    receipt = await gateway.send(SmsMessage(to=NUMBER, body=BODY, reference="inv-1"))

    assert receipt.gateway == "console"
    assert receipt.status == "delivered"
    assert receipt.message_id
    [entry] = gateway.entries()
    assert entry.id == receipt.message_id
    assert (entry.to, entry.body, entry.reference) == (NUMBER, BODY, "inv-1")
    assert entry.created_at == 1_700_000_000.0
    await gateway.close()


async def test_entries_are_newest_first_with_distinct_ids() -> None:
    gateway = ConsoleGateway()
    receipts = [
        await gateway.send(SmsMessage(to=NUMBER, body=BODY, reference=f"inv-{i}")) for i in range(3)
    ]

    assert [e.reference for e in gateway.entries()] == ["inv-2", "inv-1", "inv-0"]
    assert len({r.message_id for r in receipts}) == 3


async def test_outbox_is_bounded_at_200_dropping_the_oldest() -> None:
    gateway = ConsoleGateway()
    for i in range(205):
        await gateway.send(SmsMessage(to=NUMBER, body=BODY, reference=f"inv-{i}"))

    entries = gateway.entries()
    assert len(entries) == 200
    assert entries[0].reference == "inv-204"
    assert entries[-1].reference == "inv-5"


async def test_entries_is_a_copy() -> None:
    gateway = ConsoleGateway()
    await gateway.send(SmsMessage(to=NUMBER, body=BODY, reference="inv-1"))
    gateway.entries().clear()
    assert len(gateway.entries()) == 1


async def test_logs_never_hold_the_number_or_the_body(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="erv.sms")
    gateway = ConsoleGateway()
    await gateway.send(SmsMessage(to=NUMBER, body=BODY, reference="inv-logged"))

    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "inv-logged" in text
    assert NUMBER not in text
    assert "SECRETLINK" not in text


# --- render_sms ------------------------------------------------------------------------------


def test_render_default_template() -> None:
    text = render_sms(DEFAULT_SMS_TEMPLATE, "https://erv.example.org/j/abc", 10)
    assert text == (
        "Here is the link you asked for: https://erv.example.org/j/abc It works for 10 minutes."
    )


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Open {link} {", "Open L {"),
        ("} Open {link}", "} Open L"),
        ("{0} {link} {}", "{0} L {}"),
        ("{link.__class__} {link}", "{link.__class__} L"),
        ("{link!r} {link:>20} {link}", "{link!r} {link:>20} L"),
        ("{name} {{link}} {minutes}m", "{name} {L} 7m"),
        ("{link}{link} ({minutes})", "LL (7)"),
    ],
)
def test_render_leaves_stray_braces_alone(template: str, expected: str) -> None:
    assert render_sms(template, "L", 7) == expected


def test_render_does_not_substitute_inside_the_link() -> None:
    assert render_sms("{link} {minutes}", "https://x/{minutes}", 5) == "https://x/{minutes} 5"


# --- make_gateway ------------------------------------------------------------------------------


API_KEY = "erv-test-key-26785a09-ab16-4eb0-8407-a37497a57506-3d844edf-8d35-48ac-975b-e847b4f122b0"


def test_make_gateway_console_by_default() -> None:
    gateway = make_gateway(Config())
    assert isinstance(gateway, ConsoleGateway)
    assert gateway.name == "console"


def test_make_gateway_twilio() -> None:
    config = Config(
        sms_gateway="twilio",
        twilio=TwilioSettings(account_sid="AC1", auth_token="t", from_number="+447700900000"),
    )
    gateway = make_gateway(config)
    assert isinstance(gateway, TwilioGateway)
    assert gateway.name == "twilio"


def test_make_gateway_notify() -> None:
    config = Config(sms_gateway="notify", notify=NotifySettings(api_key=API_KEY, template_id="t"))
    gateway = make_gateway(config)
    assert isinstance(gateway, NotifyGateway)
    assert gateway.name == "notify"


def test_make_gateway_unknown() -> None:
    with pytest.raises(ValueError, match="carrier-pigeon"):
        make_gateway(Config(sms_gateway="carrier-pigeon"))


@pytest.mark.parametrize(("url", "loopback"), [
    ("https://localhost:8443", True), ("http://127.0.0.1:8080", True),
    ("http://127.9.9.9", True), ("https://[::1]:8443", True), ("https://app.localhost", True),
    ("https://erv.example.org", False), ("https://10.0.0.5", False),
    ("https://192.168.1.20:8443", False), ("https://[2001:db8::1]", False),
    ("https://localhost.example.org", False),
])
def test_only_a_loopback_public_url_keeps_the_console_gateway_quiet(url: str,
                                                                  loopback: bool) -> None:
    assert is_loopback_url(url) is loopback
    warning = exposure_warning(url)
    assert (warning is None) is loopback
    if warning:
        assert "ERV_SMS_CONSOLE_PUBLIC" in warning and "/j/" not in warning


def test_the_outbox_keeps_the_session_of_each_text() -> None:
    gateway = ConsoleGateway()
    asyncio.run(gateway.send(SmsMessage(NUMBER, BODY, "inv1", "session-1")))
    [entry] = gateway.entries()
    assert entry.session_id == "session-1"
