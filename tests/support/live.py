"""A running server for tests, and clients that talk to it the way browsers do."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from server import keys
from server.accounts import Staff, StaffRole
from server.app import create_app
from server.config import Config
from server.serving import new_runner, start_public_site
from tests.support.redis_server import RedisServer

PASSWORD = "correct horse battery staple"
TEST_SCRYPT_N = 2**11
LINK = re.compile(r"/j/([A-Za-z0-9_\-]+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    config: Config
    app: web.Application
    runner: web.AppRunner
    url: str
    clients: list[aiohttp.ClientSession] = field(default_factory=list)

    async def stop(self) -> None:
        for client in self.clients:
            await client.close()
        await self.runner.cleanup()

    async def add_staff(self, username: str, role: StaffRole | str) -> Staff:
        return await self.app[keys.ACCOUNTS].add(username, username.title(), role, PASSWORD)

    async def staff_client(self, username: str, role: StaffRole | str | None = None) -> StaffClient:
        if role is not None:
            await self.add_staff(username, role)
        client = StaffClient(self, self.new_http())
        await client.sign_in(username, PASSWORD)
        return client

    def new_http(self) -> aiohttp.ClientSession:
        http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.clients.append(http)
        return http

    @property
    def backend(self) -> str:
        """"sqlite" (the embedded default) or "redis"."""
        return self.app[keys.STORES].backend

    async def stored_bytes(self) -> bytes:
        """Everything the service's store holds: the SQLite files, or every Redis key and
        value (for checks that a secret is never stored in the clear)."""
        stores = self.app[keys.STORES]
        if stores.redis is not None:
            from tests.support.call_stores import redis_contents

            return await redis_contents(stores.redis)
        from tests.support.unit_db import database_bytes

        return database_bytes(self.config.data_dir)

    async def persisted_bytes(self, redis_server: RedisServer | None = None) -> bytes:
        """`stored_bytes()` and everything the store has written to disk: the SQLite files,
        or, on Redis, the append-only files of `redis_server` (the server's own Redis), read
        once any rewrite has finished. Call it while the server runs."""
        held = await self.stored_bytes()
        stores = self.app[keys.STORES]
        if stores.redis is None:
            return held
        assert redis_server is not None, "a Redis-backed server needs its redis_server"
        return held + await settled_aof_bytes(stores.redis, redis_server)

    async def credential_count(self, session_id: str | None = None) -> int:
        """How many victim credentials the store holds (for one session, or in all)."""
        stores = self.app[keys.STORES]
        prefix = self.config.redis_prefix
        if stores.redis is not None and session_id is not None:
            return int(await stores.redis.scard(f"{prefix}call:credentials:{session_id}"))
        if stores.redis is not None:
            pattern = f"{prefix}call:credential:*"
            return len([key async for key in stores.redis.scan_iter(match=pattern)])
        assert stores.db is not None
        if session_id is None:
            return len(await stores.db.fetchall("SELECT * FROM credentials"))
        return len(await stores.db.fetchall("SELECT * FROM credentials WHERE session_id = ?",
                                            (session_id,)))

    def outbox(self) -> list[Any]:
        return list(self.app[keys.SMS].entries())  # type: ignore[attr-defined]

    def latest_token(self) -> str:
        match = LINK.search(self.outbox()[0].body)
        assert match, "no link in the newest text"
        return match.group(1)

    async def redeem(self, token: str) -> dict[str, Any]:
        http = self.new_http()
        async with http.post(f"{self.url}/j/{token}", headers={"Accept": "application/json"}) as r:
            body = await r.json()
            assert r.status == 200, body
            return dict(body)

    async def caller(self, token: str | None = None) -> SignalClient:
        """Redeem the newest link and join as the caller."""
        credential = await self.redeem(token or self.latest_token())
        client = await SignalClient.connect(self, self.new_http())
        await client.hello(credential=credential["credential"])
        return client


async def settled_aof_bytes(client: Redis, redis_server: RedisServer) -> bytes:
    """Redis's append-only files, read once any rewrite (a shred asks for one) is done."""
    for _ in range(200):
        info = await client.info("persistence")
        if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
            break
        await asyncio.sleep(0.05)
    return redis_server.aof_bytes()


async def start_server(tmp_path: Path, **overrides: Any) -> LiveServer:
    port = free_port()
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "public_url": f"http://127.0.0.1:{port}",
        "data_dir": tmp_path / "data",
        "tls": False,
        "secure_cookies": False,
        "scrypt_n": TEST_SCRYPT_N,  # OWASP's 2^17 takes a second a hash; tests need many
    }
    config = replace(Config(), **{**settings, **overrides})
    app = create_app(config)
    runner = new_runner(app)  # as `erv run` does, behind the connection guard
    await runner.setup()
    await start_public_site(runner, config, None)
    return LiveServer(config, app, runner, f"http://127.0.0.1:{port}")


class StaffClient:
    """A signed-in staff browser: cookie jar, CSRF token, JSON API."""

    def __init__(self, server: LiveServer, http: aiohttp.ClientSession) -> None:
        self.server = server
        self.http = http
        self.csrf = ""

    async def sign_in(self, username: str, password: str) -> None:
        async with self.http.post(
            f"{self.server.url}/login",
            data={"username": username, "password": password},
            headers={"Accept": "application/json"},
        ) as response:
            body = await response.json()
            assert response.status == 200, body
            self.csrf = body["csrf_token"]

    async def api(self, method: str, path: str, body: Any = None,
                  expect: int | None = None) -> tuple[int, Any]:
        async with self.http.request(
            method, f"{self.server.url}{path}",
            json=body, headers={"X-CSRF-Token": self.csrf},
        ) as response:
            data = await response.json()
            if expect is not None:
                assert response.status == expect, (response.status, data)
            return response.status, data

    async def create_session(self, phone: str = "07911 123456", ref: str = "CAD-1") -> str:
        _, body = await self.api("POST", "/api/sessions",
                                 {"incident_ref": ref, "phone": phone}, expect=201)
        return str(body["session"]["id"])

    async def signal(self, session: str | None) -> SignalClient:
        client = await SignalClient.connect(self.server, self.http)
        await client.hello(session=session)
        return client


class SignalClient:
    """One /ws socket, speaking the protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.welcome: dict[str, Any] = {}
        self.last_seq = 0
        self.received: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, server: LiveServer, http: aiohttp.ClientSession) -> SignalClient:
        ws = await http.ws_connect(f"{server.url}/ws", heartbeat=None)
        return cls(ws)

    @property
    def pid(self) -> str:
        return str(self.welcome["pid"])

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def hello(self, **fields: Any) -> dict[str, Any]:
        await self.send({"type": "hello", "v": 1, **fields})
        message = await self.next()
        assert message["type"] == "welcome", message
        self.welcome = message
        return message

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"socket closed: {msg.type} {self.ws.close_code} {msg.extra}")
        message: dict[str, Any] = json.loads(msg.data)
        if "seq" in message:
            assert message["seq"] == self.last_seq + 1, (message, self.last_seq)
            self.last_seq = message["seq"]
        self.received.append(message)
        return message

    async def expect(self, kind: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """The next message of `kind` (matching fields); others before it are kept."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(f"no {kind} {match} within {timeout}s")
            message = await self.next(left)
            if message["type"] == kind and all(message.get(k) == v for k, v in match.items()):
                return message

    async def expect_closed(self, timeout: float = 5.0) -> tuple[int | None, str]:
        """Read until the socket closes; returns (close code, bye reason)."""
        reason = ""
        while True:
            msg = await self.ws.receive(timeout=timeout)
            if msg.type == aiohttp.WSMsgType.TEXT:
                message = json.loads(msg.data)
                self.received.append(message)
                if message["type"] == "bye":
                    reason = message["reason"]
                continue
            return self.ws.close_code, reason

    async def close(self) -> None:
        await self.ws.close()
