"""/healthz and /metrics: what a load balancer may know, and what only monitoring may.

The public origin is the callers' and the staff's: anyone can reach it, so its /healthz says
only whether this node can serve (a load balancer needs no more). The figures (live
sessions, sockets, connections, the node's name and store) are for monitoring: /metrics and
the detailed /healthz need the bearer token ERV_METRICS_TOKEN, or are served only on their
own listen address, ERV_METRICS_LISTEN, which is then the only place they are served. With
neither configured /metrics is not served at all (404): figures are never open by default.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
from collections.abc import AsyncIterator

from aiohttp import web

from server import keys
from server.config import Config, metrics_address
from server.serving import GuardedSite, new_runner
from signaling.redis_hub import RedisHub

log = logging.getLogger("erv")

MAIN_APP: web.AppKey[web.Application] = web.AppKey("main_app")
METRICS_LISTENER_CONNECTIONS = 64  # Prometheus and an operator's probes: a handful
UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="erv monitoring"'}


def node_label(config: Config) -> str:
    return config.node_name or f"{socket.gethostname()}:{config.port}"


def bearer_ok(request: web.Request, token: str) -> bool:
    """The request carries `Authorization: Bearer <token>`; compared in constant time."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), token.encode())


async def health_report(app: web.Application) -> tuple[int, dict[str, object]]:
    """Green only if this node can reach its stores; with the figures monitoring reads."""
    stores = app[keys.STORES]
    hub = app[keys.HUB]
    stats = hub.stats()
    body: dict[str, object] = {
        "ok": True,
        "node": hub.node if isinstance(hub, RedisHub) else node_label(app[keys.CONFIG]),
        "backend": stores.backend,
        "live_sessions": stats.live_sessions,
        "sockets": stats.sockets,
        "connections": app[keys.CONNECTIONS].open,
    }
    store_key = "redis" if stores.backend == "redis" else "database"
    try:
        await asyncio.wait_for(stores.ping(), timeout=2.0)
    except Exception as exc:
        log.warning("health check: %s unreachable (%s)", store_key, type(exc).__name__)
        body.update({"ok": False, store_key: "unreachable",
                     "message": "This node cannot reach its data store. Live calls keep their "
                                "video; new calls are refused until it is back."})
        return 503, body
    if isinstance(hub, RedisHub) and not hub.listening:
        body.update({"ok": False, "redis": "reconnecting",
                     "message": "This node is reconnecting to Redis."})
        return 503, body
    body[store_key] = "ok"
    if isinstance(hub, RedisHub) and hub.round_trip is not None:
        body["redis_round_trip_ms"] = round(hub.round_trip * 1000, 2)
    return 200, body


def _public_monitoring(config: Config) -> bool:
    """The figures are served on the public origin only to the token, and not at all there
    when they have their own listener."""
    return bool(config.metrics_token) and not config.metrics_listen


async def health(request: web.Request) -> web.Response:
    """The public check: `{"ok": true}` (200) or `{"ok": false}` (503), nothing more,
    unless the request carries the metrics token."""
    config = request.app[keys.CONFIG]
    status, body = await health_report(request.app)
    if _public_monitoring(config) and bearer_ok(request, config.metrics_token):
        return web.json_response(body, status=status)
    return web.json_response({"ok": body["ok"]}, status=status)


async def metrics(request: web.Request) -> web.StreamResponse:
    config = request.app[keys.CONFIG]
    if not _public_monitoring(config):
        raise web.HTTPNotFound()
    if not bearer_ok(request, config.metrics_token):
        raise web.HTTPUnauthorized(headers=UNAUTHORIZED)
    return await request.app[keys.METRICS].handle(request)


async def _listener_health(request: web.Request) -> web.Response:
    _require_token_if_set(request)
    status, body = await health_report(request.app[MAIN_APP])
    return web.json_response(body, status=status)


async def _listener_metrics(request: web.Request) -> web.StreamResponse:
    _require_token_if_set(request)
    return await request.app[MAIN_APP][keys.METRICS].handle(request)


def _require_token_if_set(request: web.Request) -> None:
    """On the monitoring listener its address is the control; a token, if one is set too,
    is asked for there as well."""
    token = request.app[MAIN_APP][keys.CONFIG].metrics_token
    if token and not bearer_ok(request, token):
        raise web.HTTPUnauthorized(headers=UNAUTHORIZED)


async def metrics_listener(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: with ERV_METRICS_LISTEN, serve /metrics and the detailed /healthz on that
    address (plain HTTP: it is meant for a private network), and nothing else there."""
    config = app[keys.CONFIG]
    host, port = metrics_address(config.metrics_listen)
    listener = web.Application()
    listener[MAIN_APP] = app
    listener.router.add_get("/metrics", _listener_metrics)
    listener.router.add_get("/healthz", _listener_health)
    runner = new_runner(listener)
    await runner.setup()
    site = GuardedSite(runner, host, port, ssl_context=None,
                       header_timeout=config.header_timeout, per_client=0,
                       total=METRICS_LISTENER_CONNECTIONS)
    await site.start()
    try:
        yield
    finally:
        await runner.cleanup()
