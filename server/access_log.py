"""The access log: route patterns, never paths, because paths can hold invite tokens."""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from server.log_redaction import redact_message

# aiohttp's own methods, and the few WebDAV ones a scanner tries: any other is logged as "?"
# (a method is whatever token the client sent, so it could hold a token).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
                           "CONNECT", "TRACE", "PROPFIND", "MKCOL", "COPY", "MOVE"})


class AccessLogger(AbstractAccessLogger):
    """Logs the route pattern, never the path: paths can hold invite tokens."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        method = request.method if request.method in KNOWN_METHODS else "?"
        self.logger.info("%s %s %d %.1fms", method, redact_message(route_pattern(request)),
                         response.status, time * 1000)


def route_pattern(request: web.BaseRequest) -> str:
    """The matched route's pattern, or "-" for a request that matched none: one aiohttp
    could not read at all (a bad request line) has no match info, and asking for it
    raises AssertionError."""
    if not isinstance(request, web.Request):
        return "-"
    try:
        match_info = request.match_info
    except AssertionError:
        return "-"
    resource = match_info.route.resource
    return resource.canonical if resource is not None else "-"
