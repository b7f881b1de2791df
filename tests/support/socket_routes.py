"""A page's signalling sockets through a route the test controls (Playwright's WebSocket
routing): passed through to the server, with a hand on the valve."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Browser, Page, WebSocketRoute

from tests.support.browser import expect_state, start_call
from tests.support.live import LiveServer


@dataclass
class SocketRoutes:
    """Every socket the page opens, passed through to the server, with the test's hand on
    the valve: pongs can be held back, a socket can be closed as a proxy would."""

    hold_pongs: float = 0.0
    refuse: bool = False  # new sockets are closed at once, as a dead network would
    swallow: bool = False  # what the page sends is lost, as into a socket that has died
    hold_chat: float = 0.0  # chat from the server, and all after it, reach the page this much later
    sent: list[tuple[int, str]] = field(default_factory=list)  # (socket number, text frame)
    sockets: list[WebSocketRoute] = field(default_factory=list)
    servers: list[WebSocketRoute] = field(default_factory=list)
    hellos: list[dict[str, Any]] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def attach(self, page: Page) -> None:
        await page.route_web_socket("**/ws", self.handle)

    def handle(self, route: WebSocketRoute) -> None:
        if self.refuse:
            self.spawn(route.close(code=1011))
            return
        server = route.connect_to_server()
        number = len(self.sockets)
        self.sockets.append(route)
        self.servers.append(server)

        def to_server(message: str | bytes) -> None:
            if isinstance(message, str):
                self.sent.append((number, message))
                if '"hello"' in message:
                    self.hellos.append(json.loads(message))
            if not self.swallow:
                server.send(message)

        backlog: list[str | bytes] = []  # a held chat and everything after it, in order

        def to_page(message: str | bytes) -> None:
            if self.hold_pongs and message == '{"type":"pong"}':  # pongs carry no seq
                self.spawn(self.later(route, [message], self.hold_pongs))
            elif backlog:
                backlog.append(message)
            elif self.hold_chat and isinstance(message, str) and '"type":"chat"' in message:
                backlog.append(message)
                self.spawn(self.later(route, backlog, self.hold_chat))
            else:
                route.send(message)

        route.on_message(to_server)
        server.on_message(to_page)

    def spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def later(self, route: WebSocketRoute, messages: list[str | bytes],
                    held: float) -> None:
        """Pass `messages` on after `held` s, in order (a list still growing meanwhile is
        emptied as it is sent, so later frames go straight through again)."""
        await asyncio.sleep(held)
        while messages:
            try:
                route.send(messages.pop(0))
            except Exception:
                pass  # the page already gave that socket up

    async def cut(self, code: int = 1011, reason: str = "") -> None:
        """Close the newest socket on both sides, as a network or a proxy would: the page
        sees `code`, the server sees its client go."""
        await self.servers[-1].close(code=1000)  # a page-side socket may close only so
        await self.sockets[-1].close(code=code, reason=reason)


async def routed_call(live: LiveServer, browser: Browser,
                      **options: Any) -> tuple[Page, Page, SocketRoutes]:
    """A joined call (tests.support.browser.start_call) whose caller's every socket goes
    through SocketRoutes, from the first one."""
    handler, caller = await start_call(live, browser, join=False, **options)
    routes = SocketRoutes()
    await routes.attach(caller)
    await caller.reload()
    await caller.get_by_test_id("join").click()
    await expect_state(caller, "connected")
    return handler, caller, routes
