"""Response headers every page gets, and calm error pages instead of stack traces."""

from __future__ import annotations

import logging

from aiohttp import HttpVersion10, web

from server import keys
from server.auth import Handler
from server.phone import PhoneNumberError
from server.redis_link import REDIS_DOWN
from server.refusals import ControlRoomError
from server.sessions import SessionInputError

log = logging.getLogger("erv.http")

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "media-src 'self' blob:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))


def plain_response_headers() -> dict[str, str]:
    """The headers of an answer made outside the application (aiohttp's own, to a request
    it could not read), where on_response_prepare does not run."""
    return {"Server": "erv", "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Cache-Control": "no-store"}


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: reaches error responses and redirects too."""
    headers = response.headers
    headers["Server"] = "erv"
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault(
        "Permissions-Policy", "camera=(self), microphone=(self), geolocation=(self)"
    )
    if request.app[keys.CONFIG].tls:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if response.content_type == "application/javascript":
        # RFC 9239's type on every Python (aiohttp's own table says application/ before 3.12).
        response.content_type = "text/javascript"
    # Nothing may stay in a browser's or a proxy's cache: not a page, and not the caller
    # page's scripts and strings either, on a phone the abuser may check. The whole caller
    # page is about 20 KB gzipped, so fetching it again costs little.
    headers["Cache-Control"] = "no-store"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes a short, plain answer; details go to the log, not the client."""
    if request.version < HttpVersion10:
        # HTTP/0.9 (a request line with no version): no headers, so no Host, no cookies and
        # no Origin to check; nothing here is meant for it.
        return web.json_response({"error": "bad_request", "message": "HTTP/1.0 or later only."},
                                 status=400, headers={"Connection": "close"})
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith("/api/") and \
                exc.content_type != "application/json":
            return web.json_response(
                {"error": HTTP_CODES.get(exc.status, "error"), "message": exc.text or exc.reason},
                status=exc.status,
            )
        raise
    except ControlRoomError as exc:
        if request.path.startswith("/api/"):
            return web.json_response({"error": exc.code, "message": exc.message},
                                     status=exc.status)
        return web.Response(status=exc.status, text=exc.message, content_type="text/plain")
    except (PhoneNumberError, SessionInputError) as exc:
        code = "bad_phone" if isinstance(exc, PhoneNumberError) else "bad_field"
        if request.path.startswith("/api/"):
            return web.json_response({"error": code, "message": str(exc)}, status=400)
        return web.Response(status=400, text=str(exc), content_type="text/plain")
    except REDIS_DOWN as exc:
        # The shared store is away: say so plainly and ask for a retry; nothing was written.
        log.warning("store unreachable on %s %s (%s)", request.method,
                    request.match_info.route.name or "route", type(exc).__name__)
        headers = {"Retry-After": "5"}
        if request.path.startswith("/api/"):
            return web.json_response({"error": "unavailable", "message": UNAVAILABLE},
                                     status=503, headers=headers)
        return web.Response(status=503, text=UNAVAILABLE, content_type="text/plain",
                            headers=headers)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.match_info.route.name
                      or "route")
        if request.path.startswith("/api/"):
            return web.json_response(
                {"error": "internal", "message": "Something went wrong. Try again."}, status=500
            )
        return web.Response(
            status=500, text="Something went wrong. Please try again.", content_type="text/plain"
        )


UNAVAILABLE = ("The service cannot reach its records for a moment, so nothing was saved and no "
               "new call can start. Calls already connected keep their video. Please try again "
               "in a few seconds.")

HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 413: "too_large"}
