"""Serving an application: its listening socket behind the connection guard, and aiohttp's
request handler answering unreadable requests with a plain JSON 400 that quotes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import ssl
from collections.abc import Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from server import keys
from server.access_log import AccessLogger
from server.config import Config
from server.connections import ConnectionGuard, ConnectionStats
from server.security import HTTP_CODES, plain_response_headers

log = logging.getLogger("erv.http")

KEEPALIVE_SECONDS = 75.0  # an idle kept-alive connection (aiohttp's run_app default)
# Descriptors kept back from the connection cap for the database, Redis, evidence files,
# logs and listening sockets, so a full house of connections never makes those fail.
RESERVED_DESCRIPTORS = 128


class ErvRequestHandler(RequestHandler):
    """aiohttp's handler, except for requests it could not read: its own answer quotes the
    request line back and its log line holds it whole (a caller's token among it). This one
    logs only the kind of error and answers JSON like every other refusal."""

    __slots__ = ()

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        kind = type(exc).__name__ if exc is not None else "error"
        if status >= 500:
            self.log_exception("error handling a request (%s)", kind, exc_info=exc)
            body = {"error": "internal", "message": "Something went wrong. Try again."}
        else:
            log.info("refused an unreadable request: %d %s", status, kind)
            body = {"error": HTTP_CODES.get(status, "bad_request"),
                    "message": "The request could not be read."}
        if request.writer.output_size > 0:  # as aiohttp: too late for another answer
            raise ConnectionError("Response is sent already, cannot send another response")
        response = web.json_response(body, status=status, headers=plain_response_headers())
        response.force_close()
        return response


def handler_factory(server: web.Server) -> Callable[[], asyncio.Protocol]:
    """What `server()` makes, as an ErvRequestHandler: aiohttp keeps the handler's settings
    in Server._kwargs (tests/integration/test_log_redaction.py shows if that changes)."""
    def make() -> asyncio.Protocol:
        return ErvRequestHandler(server, loop=asyncio.get_running_loop(), **server._kwargs)
    return make


class GuardedSite(web.TCPSite):
    """A TCP site whose connections the ConnectionGuard accepts, counts and times before
    aiohttp sees them; TLS, if any, is set up by the guard after it has counted them."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *,
                 ssl_context: ssl.SSLContext | None, header_timeout: float, per_client: int,
                 total: int, stats: ConnectionStats | None = None) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self.limits = (header_timeout, per_client, total)
        self.stats = stats
        self.guard: ConnectionGuard | None = None

    async def start(self) -> None:
        self._runner._reg_site(self)  # what BaseSite.start does
        server = self._runner.server
        assert server is not None
        header_timeout, per_client, total = self.limits
        self.guard = ConnectionGuard(handler_factory(server), ssl_context=self._ssl_context,
                                     header_timeout=header_timeout, per_client=per_client,
                                     total=total, stats=self.stats)
        host = self._host or "0.0.0.0"  # noqa: S104 - as TCPSite: no host is every address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, self._port), family=family, backlog=self._backlog)
        self._bound_port = sock.getsockname()[1]
        self.guard.listen(sock)

    async def stop(self) -> None:
        self._runner._check_site(self)
        if self.guard is not None:
            self.guard.close()
        self._runner._unreg_site(self)


def connection_cap(config: Config) -> int:
    """ERV_MAX_CONNECTIONS, or what the file limit leaves after the reserve."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = max(soft - RESERVED_DESCRIPTORS, 16) if soft != resource.RLIM_INFINITY else 1 << 20
    return config.max_connections or room


async def start_public_site(runner: web.AppRunner, config: Config,
                            ssl_context: ssl.SSLContext | None) -> GuardedSite:
    """The service's own listener, with the configured connection limits; its counts go to
    /metrics through the application's CONNECTIONS stats."""
    site = GuardedSite(runner, config.host, config.port, ssl_context=ssl_context,
                       header_timeout=config.header_timeout,
                       per_client=config.client_connection_cap,
                       total=connection_cap(config), stats=runner.app[keys.CONNECTIONS])
    await site.start()
    return site


def new_runner(app: web.Application, *, handle_signals: bool = False) -> web.AppRunner:
    return web.AppRunner(app, access_log_class=AccessLogger, handle_signals=handle_signals,
                         keepalive_timeout=KEEPALIVE_SECONDS)


def serve(app: web.Application, config: Config, ssl_context: ssl.SSLContext | None,
          loop: asyncio.AbstractEventLoop) -> None:
    """Run until SIGINT or SIGTERM, then shut down gracefully (what web.run_app does, with
    the guarded site)."""
    async def main() -> None:
        runner = new_runner(app, handle_signals=True)
        await runner.setup()
        try:
            await start_public_site(runner, config, ssl_context)
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    asyncio.set_event_loop(loop)
    task = loop.create_task(main())
    try:
        loop.run_until_complete(task)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, web.GracefulExit):
            loop.run_until_complete(task)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
