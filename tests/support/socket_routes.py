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
    hold_chat: float = 0.0  # chat from the server reaches the page this much later
    sent: list[str] = field(default_factory=list)  # every text frame the page sent
    sockets: list[WebSocketRoute] = field(default_factory=list)
    servers: list[WebSocketRoute] = field(default_factory=list)
    hellos: list[dict[str, Any]] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def attach(self, page: Page) -> None:
        await page.route_web_socket("**/ws", self.handle)

    def handle(self, route: WebSocketRoute) -> None:
        if self.refuse:
            task = asyncio.get_running_loop().create_task(route.close(code=1011))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return
        server = route.connect_to_server()
        self.sockets.append(route)
        self.servers.append(server)

        def to_server(message: str | bytes) -> None:
            if isinstance(message, str):
                self.sent.append(message)
                if '"hello"' in message:
                    self.hellos.append(json.loads(message))
            if not self.swallow:
                server.send(message)

        def to_page(message: str | bytes) -> None:
            held = (self.hold_pongs if message == '{"type":"pong"}' else
                    self.hold_chat if isinstance(message, str) and '"type":"chat"' in message
                    else 0.0)
            if held:
                task = asyncio.get_running_loop().create_task(self.later(route, message, held))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            else:
                route.send(message)

        route.on_message(to_server)
        server.on_message(to_page)

    async def later(self, route: WebSocketRoute, message: str | bytes, held: float) -> None:
        await asyncio.sleep(held)
        try:
            route.send(message)
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
