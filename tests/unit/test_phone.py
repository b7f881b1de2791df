"""server.phone: UK mobile numbers normalised to E.164; anything else refused."""

from __future__ import annotations

import pytest

from server.phone import PhoneNumberError, masked, normalise_mobile

E164 = "+447911123456"


@pytest.mark.parametrize(
    "spelling",
    [
        "07911123456",
        "07911 123456",
        "07911 123 456",
        " 07911-123-456 ",
        "(07911) 123456",
        "+447911123456",
        "+44 7911 123456",
        "+44 (0)7911 123456",
        "+44-7911-123-456",
        "0044 7911 123456",
        "447911123456",
        "+44\u00a07911\u00a0123456",  # non-breaking spaces, as pasted from some systems
    ],
)
def test_uk_mobile_spellings_normalise_to_the_same_e164(spelling: str) -> None:
    assert normalise_mobile(spelling) == E164


def test_other_uk_mobile_ranges() -> None:
    assert normalise_mobile("07400 123456") == "+447400123456"
    assert normalise_mobile("07624 123456") == "+447624123456"  # Isle of Man mobile


@pytest.mark.parametrize(
    "landline",
    ["020 7946 0123", "+44 20 7946 0123", "0161 496 0123", "0800 123 4567"],
    ids=["london", "london-intl", "manchester", "freephone"],
)
def test_landlines_are_refused_as_not_mobile(landline: str) -> None:
    with pytest.raises(PhoneNumberError, match="not a mobile"):
        normalise_mobile(landline)


@pytest.mark.parametrize(
    "garbage",
    ["", "   ", "hello", "999", "07911", "07911 1234567", "+44", "0" * 33,
     "07911 123456 ext. 9" + "9" * 20, "🙂", "DROP TABLE"],
)
def test_garbage_is_refused(garbage: str) -> None:
    with pytest.raises(PhoneNumberError) as info:
        normalise_mobile(garbage)
    assert str(info.value)  # a message the handler can read
    assert isinstance(info.value, ValueError)


def test_masked_shows_only_the_ends() -> None:
    shown = masked(E164)
    assert shown == "+44•••••••456"
    assert len(shown) == len(E164)
    assert "7911123" not in shown


def test_masked_short_input_shows_nothing() -> None:
    assert masked("+4412") == "•••••"
    assert masked("") == ""
    assert masked("+44123") == "••••••"
