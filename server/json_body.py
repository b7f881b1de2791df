"""The one reader of JSON request bodies: bounded in size and depth, every failure a 400.

Every route that takes JSON reads it here, so a body that is too big (413), not UTF-8, not
JSON as RFC 8259 defines it (NaN, lone surrogates and trailing garbage are refused), or nested
more than `MAX_JSON_DEPTH` levels (400) is answered the same clear way on each, and no
handler ever sees a value that could make later code recurse. orjson parses without Python
recursion and stops by itself past 1,024 levels; the depth check after it is a loop.
JSON is UTF-8 by definition, so a charset named in the Content-Type is not consulted (an
unknown one used to raise LookupError, a 500).
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from aiohttp import web

from signaling.json_depth import MAX_JSON_DEPTH, deeper_than

# The same as the app's client_max_size: a body this size is already the most aiohttp reads.
MAX_JSON_BYTES = 256 * 1024


def json_error(code: str, message: str) -> web.HTTPBadRequest:
    """A 400 whose body is the API's `{"error", "message"}`."""
    return web.HTTPBadRequest(text=json.dumps({"error": code, "message": message}),
                              content_type="application/json")


def too_large() -> web.HTTPRequestEntityTooLarge:
    message = f"The body is over {MAX_JSON_BYTES // 1024} KiB."
    return web.HTTPRequestEntityTooLarge(
        MAX_JSON_BYTES, MAX_JSON_BYTES + 1, content_type="application/json",
        text=json.dumps({"error": "too_large", "message": message}),
    )


def decode_json(raw: bytes) -> Any:
    """`raw` as JSON, or the 400 to answer."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise json_error("bad_json", "The body is not valid JSON.") from exc
    if deeper_than(value):
        raise json_error("bad_json", f"The body nests more than {MAX_JSON_DEPTH} levels.")
    return value


async def read_json(request: web.Request) -> Any:
    """The request's JSON body (None when there is none), bounded before it is parsed."""
    if not request.can_read_body:
        return None
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise too_large()
    parts: list[bytes] = []
    size = 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            raise too_large()
        parts.append(chunk)
    if not parts:
        return None
    return decode_json(b"".join(parts))


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The JSON object a route takes (`{}` for no body), or a clear 400."""
    body = await read_json(request)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise json_error("bad_json", "The body must be a JSON object.")
    return body
