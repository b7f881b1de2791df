"""Staff web sessions: the sign-in cookie, CSRF protection and role checks.

The cookie holds a random token; the database holds only its SHA-256, so a copy of the
database cannot be replayed as a cookie. Every state-changing request carries the session's
CSRF token (form field or `X-CSRF-Token` header) and, when the browser sends one, an Origin
that is ours.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from server import keys
from server.accounts import Staff, StaffAccounts, StaffRole, same_secret
from server.config import Config
from server.db import Database
from server.form_body import read_form

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def cookie_name(config: Config) -> str:
    # The __Host- prefix makes browsers refuse the cookie unless Secure, Path=/ and no Domain.
    return "__Host-erv" if config.secure_cookies else "erv_staff"


@dataclass(frozen=True)
class StaffSession:
    staff: Staff
    csrf_token: str


class StaffSessionStore(Protocol):
    """What the rest of the service uses of a sign-in session store (SQLite or Redis).

    Only the token's hash (`token_hash`) is stored; a session ends at its `expires_at`, or
    when the account's generation moves on (a password change or disable).
    """

    async def create(self, staff: Staff) -> tuple[str, StaffSession]: ...

    async def lookup(self, token: str) -> StaffSession | None: ...

    async def end(self, token: str) -> None: ...


class StaffSessions:
    def __init__(self, db: Database, accounts: StaffAccounts, ttl: int) -> None:
        self.db = db
        self.accounts = accounts
        self.ttl = ttl

    async def create(self, staff: Staff) -> tuple[str, StaffSession]:
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = time.time()
        await self.db.execute(
            "INSERT INTO staff_sessions"
            " (token_hash, staff_id, csrf_token, created_at, expires_at, generation)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (token_hash(token), staff.id, csrf, now, now + self.ttl, staff.generation),
        )
        return token, StaffSession(staff, csrf)

    async def lookup(self, token: str) -> StaffSession | None:
        if not token or len(token) > 128:
            return None
        row = await self.db.fetchone(
            "SELECT staff_id, csrf_token, expires_at, generation FROM staff_sessions"
            " WHERE token_hash = ?",
            (token_hash(token),),
        )
        if row is None or row["expires_at"] < time.time():
            return None
        staff = await self.accounts.get(row["staff_id"])
        if staff is None or staff.generation != row["generation"]:
            return None  # disabled, or signed in before a password change
        return StaffSession(staff, row["csrf_token"])

    async def end(self, token: str) -> None:
        await self.db.execute(
            "DELETE FROM staff_sessions WHERE token_hash = ?", (token_hash(token),)
        )


STAFF_SESSION: web.RequestKey[StaffSession | None] = web.RequestKey("staff_session")


def set_session_cookie(response: web.StreamResponse, config: Config, token: str) -> None:
    response.set_cookie(
        cookie_name(config),
        token,
        httponly=True,
        secure=config.secure_cookies,
        samesite="Strict",
        path="/",
        max_age=config.staff_session_ttl,
    )


def clear_session_cookie(response: web.StreamResponse, config: Config) -> None:
    # Same attributes as when set: browsers drop a __Host- cookie (even an expiring one) that
    # lacks Secure, which would leave the old cookie in place.
    response.del_cookie(
        cookie_name(config), path="/", secure=config.secure_cookies, httponly=True,
        samesite="Strict",
    )


def same_origin(request: web.Request, config: Config) -> bool:
    """False only when the browser names an Origin that is not ours."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    allowed = {config.public_url, f"{request.scheme}://{request.host}"}
    return origin in allowed


def csrf_exempt(handler: Any) -> Any:
    """For endpoints protected otherwise: bearer tokens in the URL, provider signatures."""
    handler.csrf_exempt = True
    return handler


@web.middleware
async def staff_session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    config = request.app[keys.CONFIG]
    sessions = request.app[keys.STAFF_SESSIONS]
    token = request.cookies.get(cookie_name(config), "")
    session = await sessions.lookup(token) if token else None
    request[STAFF_SESSION] = session
    if request.method not in SAFE_METHODS and not getattr(
        request.match_info.handler, "csrf_exempt", False
    ):
        if not same_origin(request, config):
            raise web.HTTPForbidden(text="This request came from another site and was refused.")
        if session is not None:
            sent = request.headers.get(CSRF_HEADER, "")
            if not sent and request.content_type in (
                "application/x-www-form-urlencoded",
                "multipart/form-data",
            ):
                sent = str((await read_form(request)).get(CSRF_FIELD, ""))
            if not sent or not same_secret(sent, session.csrf_token):
                raise web.HTTPForbidden(text="The form was out of date. Reload and try again.")
    return await handler(request)


def current_staff(request: web.Request) -> StaffSession | None:
    return request.get(STAFF_SESSION)


def wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def require_role(*roles: StaffRole) -> Callable[[Handler], Handler]:
    """Only signed-in staff holding one of `roles` get through."""

    def decorate(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            session = current_staff(request)
            if session is None:
                if wants_json(request):
                    raise web.HTTPUnauthorized(
                        text='{"error": "unauthorized", "message": "Sign in first."}',
                        content_type="application/json",
                    )
                raise web.HTTPSeeOther("/login")
            if roles and session.staff.role not in roles:
                if wants_json(request):
                    raise web.HTTPForbidden(
                        text='{"error": "forbidden", "message": "Your role cannot do this."}',
                        content_type="application/json",
                    )
                raise web.HTTPForbidden(text="Your role cannot open this page.")
            return await handler(request)

        guarded.__name__ = handler.__name__
        guarded.__doc__ = handler.__doc__
        if getattr(handler, "csrf_exempt", False):
            csrf_exempt(guarded)
        return guarded

    return decorate
