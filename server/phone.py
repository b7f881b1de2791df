"""Callers' mobile numbers: validated and normalised to E.164, UK by default."""

from __future__ import annotations

import phonenumbers

DEFAULT_REGION = "GB"


class PhoneNumberError(ValueError):
    """The number cannot receive an SMS link; the message is safe to show the handler."""


def normalise_mobile(raw: str, region: str = DEFAULT_REGION) -> str:
    """Return the number in E.164 (+447911123456) or raise PhoneNumberError.

    Foreign mobiles written with their + prefix are accepted: visitors call 999 too.
    """
    text = raw.strip()
    if not text or len(text) > 32:
        raise PhoneNumberError("Enter the caller's mobile number.")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise PhoneNumberError("That does not look like a phone number.") from exc
    if not phonenumbers.is_valid_number(number):
        raise PhoneNumberError("That is not a valid phone number.")
    kind = phonenumbers.number_type(number)
    if kind not in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        raise PhoneNumberError("That number is not a mobile number, so it cannot get a text.")
    formatted: str = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return formatted


def masked(e164: str) -> str:
    """The number as staff lists show it: enough to recognise, not enough to copy."""
    if len(e164) <= 6:
        return "•" * len(e164)
    return e164[:3] + "•" * (len(e164) - 6) + e164[-3:]
