"""Sending the invite SMS: the gateway interface, the three gateways and the message text."""

from __future__ import annotations

import logging
import re

import aiohttp

from server.config import Config
from server.sms.base import SmsError, SmsGateway, SmsMessage, SmsReceipt, StatusListener
from server.sms.console import ConsoleGateway, OutboxEntry, exposure_warning
from server.sms.notify import NotifyGateway
from server.sms.twilio import TwilioGateway, status_callback_handler

__all__ = [
    "TWILIO_STATUS_PATH",
    "ConsoleGateway",
    "NotifyGateway",
    "OutboxEntry",
    "SmsError",
    "SmsGateway",
    "SmsMessage",
    "SmsReceipt",
    "StatusListener",
    "TwilioGateway",
    "make_gateway",
    "render_sms",
    "status_callback_handler",
]

# Where the app must mount status_callback_handler for Twilio's delivery reports.
TWILIO_STATUS_PATH = "/sms/twilio/status"

log = logging.getLogger("erv.sms")

_PLACEHOLDER = re.compile(r"\{(link|minutes)\}")


def make_gateway(config: Config, session: aiohttp.ClientSession | None = None) -> SmsGateway:
    """The gateway config.sms_gateway names. A given session is used but not closed."""
    if config.sms_gateway == "console":
        warning = exposure_warning(config.public_url)
        if warning:
            log.warning("%s", warning)
        return ConsoleGateway()
    if config.sms_gateway == "twilio":
        return TwilioGateway(
            config.twilio, f"{config.public_url.rstrip('/')}{TWILIO_STATUS_PATH}", session
        )
    if config.sms_gateway == "notify":
        return NotifyGateway(config.notify, session)
    raise ValueError(f"unknown SMS gateway {config.sms_gateway!r}")


def render_sms(template: str, link: str, minutes: int) -> str:
    """The template with {link} and {minutes} filled in.

    Not str.format: a deployment's template is free text, and format() would raise on a stray
    brace and could reach attributes ("{link.__class__}"). One pass, so a value that happens to
    contain "{minutes}" is not substituted again.
    """
    values = {"link": link, "minutes": str(minutes)}
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)
