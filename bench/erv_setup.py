"""Real sessions on this server, made the way the tests and browsers make them.

A handler signs in (POST /login, JSON), creates sessions (POST /api/sessions with the CSRF
header), reads each link from the console gateway's outbox, and the caller redeems it (POST
/j/<token> with Accept: application/json) for a credential. The sockets then join with
`hello`: the handler with {session} (one handler may be in many sessions), the caller with
{credential}, a supervisor (observer) with {session}.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp

from bench.loadgen import Endpoint, ErvDialect
from bench.servers import HANDLER, PASSWORD, SUPERVISOR

LINK = re.compile(r"/j/([A-Za-z0-9_\-]+)")
COOKIE = "erv_staff"  # the sign-in cookie's name with ERV_SECURE_COOKIES=0
_numbers = itertools.count(1)


class SetupError(RuntimeError):
    pass


@dataclass
class Call:
    session: str
    handler: Endpoint
    caller: Endpoint
    observer: Endpoint | None


class Staff:
    """One signed-in staff member: cookie jar, CSRF token, JSON API."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""
        self.cookie = ""

    async def sign_in(self, username: str) -> Staff:
        async with self.http.post(f"{self.base_url}/login",
                                  data={"username": username, "password": PASSWORD},
                                  headers={"Accept": "application/json"}) as response:
            body = await response.json()
            if response.status != 200:
                raise SetupError(f"sign-in {username}: {response.status} {body}")
            self.csrf = body["csrf_token"]
        for cookie in self.http.cookie_jar:
            if cookie.key == COOKIE:
                self.cookie = cookie.value
        if not self.cookie:
            raise SetupError("no sign-in cookie")
        return self

    async def api(self, method: str, path: str,
                  body: object = None) -> tuple[int, dict[str, object]]:
        async with self.http.request(method, f"{self.base_url}{path}", json=body,
                                     headers={"X-CSRF-Token": self.csrf}) as response:
            return response.status, dict(await response.json())

    async def create_session(self) -> tuple[str, str]:
        """A new session; returns its id and the id of the link texted for it."""
        number = next(_numbers)
        status, body = await self.api("POST", "/api/sessions", {
            "incident_ref": f"BENCH-{number}", "phone": f"07400{number % 1000000:06d}",
        })
        if status != 201:
            raise SetupError(f"POST /api/sessions: {status} {body}")
        session = body["session"]
        invite = body["status"]
        assert isinstance(session, dict) and isinstance(invite, dict)
        assert isinstance(invite["invite"], dict)
        return str(session["id"]), str(invite["invite"]["id"])

    async def token_for(self, invite_id: str) -> str:
        status, body = await self.api("GET", "/api/outbox")
        messages = body.get("messages")
        if status != 200 or not isinstance(messages, list):
            raise SetupError(f"GET /api/outbox: {status}")
        for message in messages:
            if message["reference"] == invite_id:
                match = LINK.search(message["body"])
                if match:
                    return match.group(1)
        raise SetupError("the link is not in the outbox")

    def headers(self) -> dict[str, str]:
        return {"Cookie": f"{COOKIE}={self.cookie}"}

    async def close(self) -> None:
        await self.http.close()


async def redeem(http: aiohttp.ClientSession, base_url: str, token: str) -> dict[str, object]:
    async with http.post(f"{base_url}/j/{token}",
                         headers={"Accept": "application/json"}) as response:
        body = dict(await response.json())
        if response.status != 200:
            raise SetupError(f"POST /j/<token>: {response.status} {body.get('error')}")
        return body


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://", 1) + "/ws"


class Control:
    """The bench's control room: a handler and a supervisor signed in on `base_url`."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.handler = Staff(base_url)
        self.supervisor = Staff(base_url)
        self.caller_http = aiohttp.ClientSession()

    async def open(self) -> Control:
        await self.handler.sign_in(HANDLER)
        await self.supervisor.sign_in(SUPERVISOR)
        return self

    async def close(self) -> None:
        await self.handler.close()
        await self.supervisor.close()
        await self.caller_http.close()

    async def call(self, *, handler_url: str | None = None, caller_url: str | None = None,
                   observer: bool = False) -> Call:
        """One session with a redeemed link; the sockets' addresses may differ per node."""
        session, invite = await self.handler.create_session()
        token = await self.handler.token_for(invite)
        caller_base = caller_url or self.base_url
        redeemed = await redeem(self.caller_http, caller_base, token)
        dialect = ErvDialect()
        hello_session = json.dumps({"type": "hello", "v": 1, "session": session})
        return Call(
            session=session,
            handler=Endpoint(ws_url(handler_url or self.base_url), dialect,
                             self.handler.headers(), hello_session),
            caller=Endpoint(ws_url(caller_base), dialect, {},
                            json.dumps({"type": "hello", "v": 1,
                                        "credential": redeemed["credential"]})),
            observer=Endpoint(ws_url(handler_url or self.base_url), dialect,
                              self.supervisor.headers(), hello_session) if observer else None,
        )

    async def calls(self, count: int, *, concurrency: int = 6, observer: bool = False,
                    placement: Callable[[int], tuple[str, str]] | None = None) -> list[Call]:
        """`count` calls; `placement(i)` gives call i's handler and caller node addresses."""
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> Call:
            handler_url, caller_url = placement(i) if placement else (None, None)
            async with gate:
                return await self.call(handler_url=handler_url, caller_url=caller_url,
                                       observer=observer)

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def pairs_of(calls: Sequence[Call]) -> list[tuple[Endpoint, Endpoint]]:
    return [(c.handler, c.caller) for c in calls]
