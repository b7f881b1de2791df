"""Refuse request paths no page, link or file of ours can have, before any route sees them.

A NUL byte reaching `Path.resolve()` raised ValueError (a 500), a 300-character file name
raised ENAMETOOLONG (taken for a store outage, a 503), and control bytes or broken
percent-encoding reached the routes as they were. Every path of this service is UTF-8 and
free of control characters, and every file path is short, so anything else is the client's
mistake: a 400 with the usual clear answer (JSON under /api/, plain text elsewhere), for
every route at once, so no file-serving route has to remember it. The query string is not a
path and is not checked.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from aiohttp import web

from server.auth import Handler

# Where a path names a file. Only there is length a file system's business; elsewhere a long
# path is an unknown id (a caller's mangled link still gets the calm "not recognised" page).
FILE_PATHS = ("/static/",)
MAX_PATH_BYTES = 2048  # decoded; Linux's PATH_MAX is 4096
MAX_SEGMENT_BYTES = 255  # decoded; NAME_MAX on every common file system
PERCENT_ENCODED = re.compile(r"(?:[^%]|%[0-9A-Fa-f]{2})*")
# C0 controls (NUL, CR, LF...), DEL and the C1 controls (U+0080 to U+009F).
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MESSAGE = "This address is not valid."


def path_problem(raw_path: str) -> str | None:
    """Why the path of `raw_path` (as sent, with any query) is refused, or None."""
    path = raw_path.split("?", 1)[0]
    if not PERCENT_ENCODED.fullmatch(path):
        return "broken percent-encoding"
    try:
        decoded = unquote_to_bytes(path)
        text = decoded.decode("utf-8")
    except UnicodeError:
        return "not UTF-8"
    if CONTROL.search(text):
        return "a control character"
    if text.startswith(FILE_PATHS) and (len(decoded) > MAX_PATH_BYTES or any(
        len(segment.encode()) > MAX_SEGMENT_BYTES for segment in text.split("/")
    )):
        return "too long"
    return None


@web.middleware
async def path_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if path_problem(request.raw_path) is not None:
        if request.path.startswith("/api/"):
            return web.json_response({"error": "bad_path", "message": MESSAGE}, status=400)
        return web.Response(status=400, text=MESSAGE, content_type="text/plain")
    return await handler(request)
