"""One redaction for every log line, whoever wrote it: aiohttp's own loggers quote raw
request lines and headers (a caller's link token among them), so a Filter on each of the
root logger's handlers rewrites every record, traceback included, before it is written.

What goes: the rest of a /j/ path, anything shaped like a token or a key, runs of digits long
enough to be a phone number, and control characters (a raw CR or ESC in a log could forge a
line or rewrite a terminal)."""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"

# A link's path: whatever follows /j/ up to a space or a quote (tokens, or what was sent
# in their place). /j/upload and /j/{token} are routes and stay.
LINK_PATH = re.compile(r"/j/(?!upload\b|\{token\})[^\s'\"]+")
# Token-shaped: 16 or more URL-safe base64 or hex characters with at least one digit and
# one letter (a module name or a word has no digit; a token of that length nearly always
# has both).
TOKEN = re.compile(r"(?<![A-Za-z0-9_\-])(?=[A-Za-z_\-]*[0-9])(?=[0-9_\-]*[A-Za-z])"
                   r"[A-Za-z0-9_\-]{16,}(?![A-Za-z0-9_\-])")
# A phone number: nine or more digits, maybe with a leading + and spaces, dots, dashes or
# brackets between them.
PHONE = re.compile(r"\+?\(?\d(?:[\s().\-]{0,2}\d){8,}")
# Control characters except the newlines and tabs a traceback is made of.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# In a message (not a traceback) a line break is a forged line too.
LINE_BREAK = re.compile(r"[\r\n]")


def redact(text: str) -> str:
    text = LINK_PATH.sub("/j/" + REDACTED, text)
    text = TOKEN.sub(REDACTED, text)
    text = PHONE.sub(REDACTED, text)
    return CONTROL.sub(_escaped, text)


def redact_message(text: str) -> str:
    """A one-line message: redacted, and any line break in it shown escaped."""
    return LINE_BREAK.sub(_escaped, redact(text))


def _escaped(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


class RedactingFilter(logging.Filter):
    """Rewrites the record in place: its message (arguments merged in), its traceback and
    its stack, so whichever formatter writes it sees only the redacted text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "erv_redacted", False):
            return True  # several handlers share one record
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep the template, drop the arguments
            message = str(record.msg)
        record.msg, record.args = redact_message(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record.erv_redacted = True
        return True


def install(logger: logging.Logger | None = None) -> RedactingFilter:
    """Put the filter on every handler of `logger` (the root by default): a handler's filter
    sees every record that reaches it, from any logger, which a logger's own filter does not."""
    target = logger or logging.getLogger()
    shared = next((f for handler in target.handlers for f in handler.filters
                   if isinstance(f, RedactingFilter)), RedactingFilter())
    for handler in target.handlers:
        if shared not in handler.filters:
            handler.addFilter(shared)
    return shared
