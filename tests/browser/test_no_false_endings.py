"""The caller's page never says "the call has ended" while the call is alive.

Found in a walkthrough: when the page's own heartbeat gave up on its socket (close 4001) the
server answered with close 1000, the page took 1000 as final, cleared its credential and never
reconnected, while the handler was told "connection lost, may come back". Here every socket
the page opens goes through a route the test controls (Playwright's WebSocket routing), so the
test can hold back the server's `pong`s past the page's timeout, or close the socket with 1000
and no `bye` as a proxy would; the page must resume its place, keep its credential and carry
on with the call. Only a `bye` ends it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from playwright.async_api import Page

from tests.support.browser import (
    caller_media,
    expect_state,
    frames_rising,
    start_call,
)
from tests.support.live import LiveServer, start_server
from tests.support.socket_routes import routed_call


async def held_credential(page: Page) -> str | None:
    saved = await page.evaluate("() => sessionStorage.getItem('erv.caller')")
    return json.loads(saved).get("credential") if saved else None


async def still_in_the_call(handler: Page, caller: Page, words: str) -> None:
    """The caller's page shows the call, the handler sees video and chat goes both ways."""
    await expect_state(caller, "connected", timeout=20_000)
    assert not await caller.get_by_test_id("ended").is_visible()
    await caller_media(handler, "flowing")
    await frames_rising(handler)
    await caller.get_by_test_id("chat-input").fill(words)
    await caller.get_by_test_id("chat-send").click()
    await handler.get_by_test_id("chat-log").get_by_text(words).wait_for()


async def test_a_pong_held_past_the_timeout_resumes_the_call(fast_live: LiveServer,
                                                           browser: Any) -> None:
    handler, caller, routes = await routed_call(fast_live, browser)
    await caller_media(handler, "flowing")
    credential = await held_credential(caller)
    assert credential

    # The link is alive but slow: pongs arrive 3 s late, past the page's 2 s timeout.
    # The page gives its socket up itself (close 4001), is answered 1000, and must resume.
    routes.hold_pongs = 3.0
    for _ in range(100):
        if len(routes.hellos) >= 2:
            break
        await caller.wait_for_timeout(100)
    assert len(routes.hellos) >= 2, "the page never gave up its silent socket"
    routes.hold_pongs = 0.0
    # Every later socket resumed the same place (pid and secret), none joined afresh.
    later = routes.hellos[1:]
    assert later and all("resume" in h and "credential" not in h for h in later), later
    assert len({h["resume"]["pid"] for h in later}) == 1
    await still_in_the_call(handler, caller, "still here after the slow pong")
    assert await held_credential(caller) == credential


async def test_a_close_without_bye_is_not_the_end(fast_live: LiveServer, browser: Any) -> None:
    """1000 with no `bye` (a proxy, a load balancer, the server's answer to our own close),
    1008 hello_timeout, 1011 and 4001: each time the page comes back into the same call."""
    handler, caller, routes = await routed_call(fast_live, browser)
    credential = await held_credential(caller)
    for code, reason in ((1000, "closed"), (1008, "hello_timeout"), (1011, ""), (4001, "")):
        before = len(routes.sockets)
        await routes.cut(code, reason)
        for _ in range(150):
            if len(routes.sockets) > before:
                break
            await caller.wait_for_timeout(100)
        assert len(routes.sockets) > before, f"no reconnect after close {code}"
        await still_in_the_call(handler, caller, f"back after {code}")
        assert await held_credential(caller) == credential
    # The handler saw the caller come and go as away, never as gone.
    people = handler.get_by_test_id("participants")
    assert "Caller" in await people.inner_text()


async def test_only_a_bye_ends_the_callers_page(fast_live: LiveServer, browser: Any) -> None:
    handler, caller = await start_call(fast_live, browser)
    await handler.get_by_test_id("end-session").click()
    await handler.get_by_test_id("end-session-confirm").click()
    await caller.get_by_test_id("ended").wait_for(state="visible")
    await expect_state(caller, "ended")
    assert await held_credential(caller) is None  # nothing left on the phone


async def test_a_chat_swallowed_by_a_dying_socket_is_sent_again(fast_live: LiveServer,
                                                               browser: Any) -> None:
    """Sent into a socket that has died but is not yet known to be dead, a message is gone;
    the page keeps it until its echo, and sends it again once it has resumed."""
    handler, caller, routes = await routed_call(fast_live, browser)
    routes.swallow = True  # the link died a moment ago; nobody knows yet
    await caller.get_by_test_id("canned-they_are_here").click()
    await caller.get_by_test_id("chat-input").fill("he has a knife")
    await caller.get_by_test_id("chat-send").click()
    before = len(routes.sockets)
    for _ in range(100):  # the page's heartbeat finds out, and it reconnects
        if len(routes.sockets) > before:
            break
        await caller.wait_for_timeout(100)
    routes.swallow = False
    log = handler.get_by_test_id("chat-log")
    await log.get_by_text("he has a knife").wait_for(timeout=20_000)
    await log.locator("[data-canned=they_are_here]").wait_for()
    await caller.wait_for_timeout(2000)  # nothing more arrives: each was sent again once
    assert await log.get_by_text("he has a knife").count() == 1
    assert await log.locator("[data-canned=they_are_here]").count() == 1
    assert await caller.get_by_test_id("chat-log").get_by_text("he has a knife").count() == 1


async def test_a_chat_sent_while_the_page_settles_goes_once(tmp_path: Path,
                                                           browser: Any) -> None:
    """After a resume the page asks (a ping) when the replay is done and sends again what the
    old socket swallowed. A chat typed on the new socket in that moment, whose echo comes after
    the pong, was not lost: it goes once and shows once (the page once sent it twice)."""
    live = await start_server(tmp_path)  # the usual heartbeat: the page waits 7.5 s for a pong
    try:
        handler, caller, routes = await routed_call(live, browser)
        routes.hold_pongs = 3.0  # the settling pong comes late (well inside the page's timeout)
        routes.hold_chat = 6.0  # and the chat's echo later still
        before = len(routes.sockets)
        await routes.cut()  # a proxy drops the socket: the page resumes on a new one
        for _ in range(200):
            if len(routes.sockets) > before:
                break
            await caller.wait_for_timeout(50)
        await expect_state(caller, "connected", timeout=20_000)
        await caller.get_by_test_id("chat-input").fill("he is outside the door")
        await caller.get_by_test_id("chat-send").click()
        log = handler.get_by_test_id("chat-log")
        await log.get_by_text("he is outside the door").wait_for(timeout=20_000)
        # The echo comes after the pong: once the caller's own copy is shown, the page has
        # settled and has had its chance to send it again.
        mine = caller.get_by_test_id("chat-log").get_by_test_id("chat-message").filter(
            has_text="he is outside the door")
        await mine.first.wait_for(timeout=30_000)
        await caller.wait_for_timeout(1000)
        # Never twice on one socket. (A resume after this one, if the mesh's ICE restart
        # stalls behind the held frames, rightly sends it again on the next.)
        sockets = [n for n, frame in routes.sent if "he is outside the door" in frame]
        assert sockets and len(sockets) == len(set(sockets)), sockets
        assert await log.get_by_text("he is outside the door").count() == 1
        assert await mine.count() == 1
    finally:
        await live.stop()
