"""The caller's page in Chromium: quick exit leaves no trace, the call recovers by itself
after the socket is cut, the page is light, and its headers are strict."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, Request, Route

from server import keys
from server.accounts import StaffRole
from signaling.protocol import Role
from tests.support.browser import (
    artifact,
    create_session,
    expect_state,
    frames_rising,
    join_as_caller,
    link_from_outbox,
    new_context,
    sign_in,
)
from tests.support.live import PASSWORD, LiveServer, start_server

NEUTRAL = "https://weather.example/"


async def neutral_site(route: Route) -> None:
    await route.fulfill(status=200, content_type="text/html",
                        body="<!doctype html><title>Weather</title><p>Sunny</p>")


async def handler_with_call(live: LiveServer, browser: Browser) -> tuple[Page, str]:
    await live.add_staff("hannah", StaffRole.HANDLER)
    handler = await sign_in(await new_context(browser, live.url), "hannah", PASSWORD)
    await create_session(handler, "CAD-9", "07911 123456")
    return handler, await link_from_outbox(handler)


@pytest.fixture
async def exit_live(backend: dict[str, Any], tmp_path: Path) -> AsyncIterator[LiveServer]:
    """A server whose quick exit goes to a neutral site that the browser context fakes."""
    live = await start_server(tmp_path, quick_exit_url=NEUTRAL, **backend)
    try:
        yield live
    finally:
        await live.stop()


async def phone_with_neutral_site(browser: Browser, live: LiveServer) -> BrowserContext:
    context = await new_context(browser, live.url, phone=True)
    await context.route("https://weather.example/**", neutral_site)
    return context


async def test_quick_exit_leaves_no_way_back(exit_live: LiveServer, browser: Browser) -> None:
    _, link = await handler_with_call(exit_live, browser)
    context = await phone_with_neutral_site(browser, exit_live)
    stopped: list[str] = []
    await context.expose_function("__trackStopped", lambda kind: stopped.append(kind))
    caller = await context.new_page()
    await caller.goto(f"{exit_live.url}/healthz")  # something before the link in history
    await join_as_caller(caller, link, location=False)
    assert await caller.evaluate("sessionStorage.length") > 0
    # The camera is really on (getUserMedia has answered) before the caller leaves.
    await caller.wait_for_function(
        "() => document.querySelector('[data-testid=local-video]').videoWidth > 0"
    )

    for _ in range(3):
        await caller.keyboard.press("Shift")
    await caller.wait_for_url(NEUTRAL)
    assert sorted(stopped) == ["audio", "video"]

    await caller.go_back()
    assert "/j/" not in caller.url
    await caller.goto(f"{exit_live.url}/healthz")
    assert await caller.evaluate("sessionStorage.length") == 0
    assert await caller.evaluate("localStorage.length") == 0
    assert await context.cookies() == []
    await context.close()


async def test_quick_exit_works_before_joining(exit_live: LiveServer, browser: Browser) -> None:
    """The button, and Escape, work on the first screen, before any socket or media."""
    _, link = await handler_with_call(exit_live, browser)
    context = await phone_with_neutral_site(browser, exit_live)
    caller = await context.new_page()
    await caller.goto(link)
    await caller.get_by_test_id("quick-exit").click()
    await caller.wait_for_url(NEUTRAL)
    await caller.goto(link)
    await caller.keyboard.press("Escape")
    await caller.wait_for_url(NEUTRAL)
    await context.close()


async def test_call_recovers_after_the_socket_is_cut(live: LiveServer, browser: Browser) -> None:
    handler, link = await handler_with_call(live, browser)
    context = await new_context(browser, live.url, phone=True)
    caller = await context.new_page()
    await join_as_caller(caller, link)
    await frames_rising(handler)

    # Cut the caller's socket from the server side, as a dropped mobile network would.
    hub = live.app[keys.HUB]
    victim = next(p for p in hub.held() if p.role is Role.VICTIM)
    assert victim.connection is not None
    await victim.connection.socket.close(code=1011, message=b"cut")
    await expect_state(caller, "reconnecting", timeout=5_000)
    await expect_state(caller, "connected")
    assert any(p.pid == victim.pid for p in hub.held())  # the same participant resumed

    # Then the phone goes offline for a moment and comes back.
    await context.set_offline(True)
    await caller.wait_for_timeout(1500)
    await context.set_offline(False)
    await expect_state(caller, "connected")

    await frames_rising(handler)
    await caller.get_by_test_id("canned-safe_now").click()
    await handler.locator("[data-testid=chat-message][data-canned=safe_now]").wait_for()
    await context.close()


async def test_caller_page_is_light_and_strict(live: LiveServer, browser: Browser,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    _, link = await handler_with_call(live, browser)
    context = await new_context(browser, live.url, phone=True)
    page = await context.new_page()
    requests: list[Request] = []
    page.on("requestfinished", lambda request: requests.append(request))
    response = await page.goto(link)
    assert response is not None
    await page.get_by_test_id("join").wait_for()
    headers = response.headers
    assert headers["cache-control"] == "no-store"
    assert headers["referrer-policy"] == "no-referrer"
    assert "'unsafe-inline'" not in headers["content-security-policy"]
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "set-cookie" not in headers

    raw = compressed = transferred = 0
    for request in requests:
        assert request.url.startswith(live.url), f"loaded from elsewhere: {request.url}"
        body = await (await request.response()).body()  # type: ignore[union-attr]
        raw += len(body)
        compressed += len(gzip.compress(body, 9))
        sizes = await request.sizes()
        transferred += sizes["responseBodySize"] + sizes["responseHeadersSize"]
    figure = (f"caller page: {len(requests)} files, {raw} bytes as written, {compressed} bytes "
              f"gzipped, {transferred} bytes on the wire (bodies and headers)")
    artifact("caller-page-weight.txt").write_text(figure + "\n")
    with capsys.disabled():  # shown in every run's output, not only on failure
        print(f"\n{figure}")
    assert compressed < 60 * 1024
    assert transferred < 60 * 1024
    await context.close()
