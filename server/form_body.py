"""The one reader of form bodies (sign-in, the no-script pages, the CSRF field, Twilio).

aiohttp's `request.post()` raises ValueError for a multipart body without its boundary or
with a wrong one, and for an unknown charset, LookupError: either was a 500. A form that
cannot be read is the client's mistake, answered 400 (JSON under /api/, by the error
middleware). Size is bounded by the app's client_max_size (413) as before.
"""

from __future__ import annotations

from aiohttp import web
from multidict import MultiDictProxy

NOT_A_FORM = "The form could not be read."


async def read_form(
    request: web.Request,
) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    try:
        return await request.post()
    except (ValueError, LookupError) as exc:
        raise web.HTTPBadRequest(text=NOT_A_FORM) from exc
