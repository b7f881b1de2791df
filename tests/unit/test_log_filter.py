"""The one redaction every log line goes through, on any logger, traceback included."""

from __future__ import annotations

import io
import logging
import secrets
from collections.abc import Iterator

import pytest

from server import log_redaction

TOKEN = secrets.token_urlsafe(32)


@pytest.fixture
def written() -> Iterator[io.StringIO]:
    """A root handler like `erv run`'s, with the redaction installed as `erv run` does."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.DEBUG)
    log_redaction.install()
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        for other in root.handlers:  # pytest's own: leave them as they were
            for f in [f for f in other.filters if isinstance(f, log_redaction.RedactingFilter)]:
                other.removeFilter(f)


@pytest.mark.parametrize("logger", ["aiohttp.server", "aiohttp.access", "aiohttp.web", "erv",
                                    "erv.http", "asyncio", "some.library"])
def test_every_logger_is_redacted(written: io.StringIO, logger: str) -> None:
    log = logging.getLogger(logger)
    log.error("Bad status line b'GET /j/%s HTTP/1.x' from +44 7911 123456", TOKEN)
    try:
        raise ValueError(f"token {TOKEN} in the exception, phone 07911123456\x1b[2J")
    except ValueError:
        log.exception("failed on %s", f"/j/{TOKEN}\rINFO forged")
    text = written.getvalue()
    assert TOKEN not in text and "7911" not in text and "\x1b" not in text
    assert "\r" not in text and "ValueError" in text and "Traceback" in text
    assert text.count("[redacted]") >= 4


def test_what_operators_need_stays(written: io.StringIO) -> None:
    logging.getLogger("erv").info("GET /j/{token} 200 1.2ms; purged 3 sessions; redis at "
                                  "redis://10.0.0.5:6379/0; file web_protocol.py line 446")
    assert written.getvalue().strip().endswith(
        "GET /j/{token} 200 1.2ms; purged 3 sessions; redis at redis://10.0.0.5:6379/0; "
        "file web_protocol.py line 446")


def test_installing_twice_filters_once(written: io.StringIO) -> None:
    log_redaction.install()
    handler = logging.getLogger().handlers[-1]
    assert sum(isinstance(f, log_redaction.RedactingFilter) for f in handler.filters) == 1
