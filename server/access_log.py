"""The access log: route patterns, never paths, because paths can hold invite tokens."""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger


class AccessLogger(AbstractAccessLogger):
    """Logs the route pattern, never the path: paths can hold invite tokens."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        match_info = getattr(request, "match_info", None)
        route = match_info.route.resource if match_info is not None else None
        pattern = route.canonical if route is not None else "-"
        self.logger.info("%s %s %d %.1fms", request.method, pattern, response.status,
                         time * 1000)
