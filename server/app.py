"""The application factory: wires config, stores, the control room and the signalling core."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from server import api, evidence_routes, join, keys, pages, record_view
from server.accounts import StaffAccounts
from server.auth import StaffSessions, csrf_exempt, staff_session_middleware
from server.config import Config
from server.contact_link_key import load_or_create_link_key
from server.control_room import ControlRoom
from server.db import Database
from server.invites import InviteBook
from server.record import SqliteCaseRecordStore
from server.record.keys import service_keyring
from server.record.retention import Retention
from server.security import add_security_headers, error_middleware
from server.session_hooks import ControlRoomHooks
from server.sessions import VideoSessions
from server.sms import TWILIO_STATUS_PATH, make_gateway, status_callback_handler
from server.specialists import SpecialistInvitations
from server.static_files import StaticFiles
from signaling.endpoint import SignalingEndpoint
from signaling.hub import Hub

log = logging.getLogger("erv")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
MAX_REQUEST_BYTES = 256 * 1024

def create_app(config: Config) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, staff_session_middleware],
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
    app.cleanup_ctx.append(_services)

    app.router.add_get("/healthz", health, name="health")
    pages.add_routes(app)
    join.add_routes(app)
    api.add_routes(app)
    record_view.add_routes(app)
    evidence_routes.add_routes(app)
    app.router.add_get("/ws", websocket, name="ws")
    if config.sms_gateway == "twilio":
        app.router.add_post(TWILIO_STATUS_PATH, twilio_status, name="twilio_status")
    app.router.add_get("/static/{path:.+}", StaticFiles(WEB_DIR / "static").handle,
                       name="static")
    return app


async def _services(app: web.Application) -> AsyncIterator[None]:
    """Open stores and start the control room; close everything in reverse on shutdown."""
    config = app[keys.CONFIG]
    db = Database(config.db_path)
    await db.open()
    accounts = StaffAccounts(db, config.login_max_failures, config.login_lock_seconds)
    record = SqliteCaseRecordStore(db, service_keyring(config))
    await record.open()
    hub = Hub(resume_window=config.resume_window)
    sms = make_gateway(config)
    room = ControlRoom(
        config,
        accounts,
        VideoSessions(db),
        InviteBook(db, config.invite_ttl, config.credential_ttl),
        SpecialistInvitations(db, config.specialist_ring),
        sms,
        hub,
        record,
        load_or_create_link_key(config.data_dir / "contact-link.key"),
    )
    await room.invitations.expire_stale()
    hooks = ControlRoomHooks(config, room)
    hub.on_left = hooks.left
    endpoint = SignalingEndpoint(hub, hooks, heartbeat=config.heartbeat)
    app[keys.DB] = db
    app[keys.RECORD] = record
    app[keys.ACCOUNTS] = accounts
    app[keys.STAFF_SESSIONS] = StaffSessions(db, accounts, config.staff_session_ttl)
    app[keys.HUB] = hub
    app[keys.SMS] = sms
    app[keys.ROOM] = room
    app[keys.ENDPOINT] = endpoint
    retention = Retention(db, record, config.data_dir / "evidence")
    await retention.open()
    purging = asyncio.get_running_loop().create_task(_purge_periodically(config, retention))
    yield
    purging.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await purging
    await hub.close()
    await room.close()
    await sms.close()
    await db.close()


async def _purge_periodically(config: Config, retention: Retention) -> None:
    """Retention without an operator: crypto-shred expired sessions (legal holds are kept)."""
    while True:
        await asyncio.sleep(config.purge_interval)
        try:
            await retention.purge(config.retention_days)
        except Exception:
            # A failed run is retried next time; the service itself must keep going.
            log.exception("periodic purge failed")


async def websocket(request: web.Request) -> web.StreamResponse:
    return await request.app[keys.ENDPOINT].handle(request)


async def health(request: web.Request) -> web.Response:
    try:
        await request.app[keys.DB].fetchone("SELECT 1")
    except Exception:
        log.exception("health check: database unreachable")
        return web.json_response({"ok": False, "database": "unreachable"}, status=503)
    hub = request.app[keys.HUB]
    return web.json_response({
        "ok": True,
        "database": "ok",
        "live_sessions": sum(1 for key in hub.sessions if not key.startswith("lobby:")),
        "sockets": sum(1 for p in hub.participants.values() if p.present),
    })


@csrf_exempt
async def twilio_status(request: web.Request) -> web.StreamResponse:
    config = request.app[keys.CONFIG]
    room = request.app[keys.ROOM]
    handler = status_callback_handler(config.twilio.auth_token, config.public_url,
                                      room.sms_delivery)
    return await handler(request)
