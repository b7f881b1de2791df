"""The application factory: wires config, stores, the control room and the signalling core."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from server import api, evidence_routes, join, keys, monitoring, pages, record_view
from server.account_watch import watch_accounts
from server.auth import csrf_exempt, staff_session_middleware
from server.config import Config
from server.connections import ConnectionStats
from server.contact_link_key import load_or_create_link_key
from server.control_room import ControlRoom
from server.device_cookies import DeviceCookies
from server.json_body import read_json
from server.metrics import Metrics
from server.monitoring import node_label
from server.path_guard import path_guard
from server.record.keys import LiveKeyWrap, service_keyring
from server.record.retention import RetentionStore
from server.redis_link import REDIS_DOWN
from server.security import add_security_headers, error_middleware
from server.session_hooks import ControlRoomHooks
from server.sms import TWILIO_STATUS_PATH, make_gateway, status_callback_handler
from server.static_files import StaticFiles
from server.stores import open_stores
from signaling.endpoint import SignalingEndpoint
from signaling.hub import Hub, LocalHub
from signaling.redis_hub import RedisHub

log = logging.getLogger("erv")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
MAX_REQUEST_BYTES = 256 * 1024
RING_SWEEP_SECONDS = 2.0

def create_app(config: Config) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, path_guard, staff_session_middleware],
        client_max_size=MAX_REQUEST_BYTES,
    )
    app[keys.CONFIG] = config
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(WEB_DIR / "templates")),
        autoescape=True,
        context_processors=[pages.template_context],
    )
    app.on_response_prepare.append(add_security_headers)
    app[keys.CONNECTIONS] = ConnectionStats()
    app.cleanup_ctx.append(_services)
    if config.metrics_listen:
        app.cleanup_ctx.append(monitoring.metrics_listener)
    app.on_shutdown.append(_say_goodbye)

    app.router.add_get("/healthz", monitoring.health, name="health")
    app.router.add_get("/metrics", monitoring.metrics, name="metrics")
    pages.add_routes(app)
    join.add_routes(app)
    api.add_routes(app)
    record_view.add_routes(app)
    evidence_routes.add_routes(app)
    app.router.add_get("/ws", websocket, name="ws")
    app.router.add_post("/ws/leave", leave_call, name="ws_leave")
    if config.sms_gateway == "twilio":
        app.router.add_post(TWILIO_STATUS_PATH, twilio_status, name="twilio_status")
    app.router.add_get("/static/{path:.+}", StaticFiles(WEB_DIR / "static").handle,
                       name="static")
    return app


async def _services(app: web.Application) -> AsyncIterator[None]:
    """Open stores and start the control room; close everything in reverse on shutdown."""
    config = app[keys.CONFIG]
    stores = await open_stores(config)
    metrics = Metrics()
    hub: Hub
    if stores.redis is not None:
        redis_hub = RedisHub(stores.redis, node=node_name(config),
                             key_wrap=LiveKeyWrap(service_keyring(config)),
                             resume_window=config.resume_window,
                             prefix=f"{config.redis_prefix}live:")
        redis_hub.on_round_trip = metrics.redis_round_trip.observe
        await redis_hub.start()
        hub = redis_hub
    else:
        hub = LocalHub(resume_window=config.resume_window)
    sms = make_gateway(config)
    room = ControlRoom(
        config,
        stores.accounts,
        stores.sessions,
        stores.invites,
        stores.invitations,
        sms,
        hub,
        stores.record,
        load_or_create_link_key(config.data_dir / "contact-link.key"),
    )
    await room.invitations.expire_stale()
    hooks = ControlRoomHooks(config, room)
    hub.on_left = hooks.left
    endpoint = SignalingEndpoint(hub, hooks, heartbeat=config.heartbeat)
    metrics.watch(endpoint, hub, app[keys.CONNECTIONS])
    app[keys.STORES] = stores
    app[keys.RECORD] = stores.record
    app[keys.ACCOUNTS] = stores.accounts
    app[keys.STAFF_SESSIONS] = stores.staff_sessions
    app[keys.HUB] = hub
    app[keys.SMS] = sms
    app[keys.ROOM] = room
    app[keys.ENDPOINT] = endpoint
    app[keys.METRICS] = metrics
    loop = asyncio.get_running_loop()
    app[keys.DEVICE_COOKIES] = DeviceCookies(service_keyring(config), config.secure_cookies)
    chores = [loop.create_task(_purge_periodically(config, stores.retention)),
              loop.create_task(_sweep_rings_periodically(room)),
              loop.create_task(watch_accounts(stores.accounts, hub,
                                              config.account_watch_interval))]
    yield
    for chore in chores:
        chore.cancel()
    await asyncio.gather(*chores, return_exceptions=True)
    # Normally closed already by _say_goodbye; this covers a start-up that failed after
    # this point (aiohttp then skips on_shutdown). Closing twice does nothing more.
    await hub.close()
    await room.close()
    await sms.close()
    await stores.close()


async def _say_goodbye(app: web.Application) -> None:
    """Shutting down: every socket gets `bye server_shutdown` and a 1001 close now, while
    its handler still runs (aiohttp cancels handlers later), so clients know to reconnect;
    with Redis, their places are marked away for another node to resume."""
    await app[keys.HUB].close()


def node_name(config: Config) -> str:
    """This process's name among the nodes: configured, or host and port plus a random
    suffix, so a restarted node is never mistaken for the one that died."""
    return f"{node_label(config)}/{secrets.token_hex(3)}"


async def _purge_periodically(config: Config, retention: RetentionStore) -> None:
    """Retention without an operator: crypto-shred expired sessions (legal holds are kept)."""
    while True:
        await asyncio.sleep(config.purge_interval)
        try:
            await retention.purge(config.retention_days)
        except Exception:
            # A failed run is retried next time; the service itself must keep going.
            log.exception("periodic purge failed")


async def _sweep_rings_periodically(room: ControlRoom) -> None:
    """Ring time-outs are timers on the node that rang; if it died, another node ends the
    ring a moment later, so no specialist's desk and no handler's view rings forever."""
    while True:
        await asyncio.sleep(RING_SWEEP_SECONDS)
        try:
            await room.time_out_overdue()
        except REDIS_DOWN:
            pass  # said on /healthz already; the next sweep catches up
        except Exception:
            log.exception("ring sweep failed")


async def websocket(request: web.Request) -> web.StreamResponse:
    return await request.app[keys.ENDPOINT].handle(request)


@csrf_exempt  # the participant's own resume secret is the proof; no cookie is involved
async def leave_call(request: web.Request) -> web.StreamResponse:
    return await request.app[keys.ENDPOINT].leave(await read_json(request))


@csrf_exempt
async def twilio_status(request: web.Request) -> web.StreamResponse:
    config = request.app[keys.CONFIG]
    room = request.app[keys.ROOM]
    handler = status_callback_handler(config.twilio.auth_token, config.public_url,
                                      room.sms_delivery)
    return await handler(request)
