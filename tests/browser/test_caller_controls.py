"""The caller's choices hold: declining everything still gives a working text chat; sound
from the control room stays off until the caller turns it on; a dark screen keeps streaming;
camera off really stops the picture; the handler's quality panel reads real numbers."""

from __future__ import annotations

import re

from playwright.async_api import Browser, Page

from server.accounts import StaffRole
from tests.support.browser import (
    FRAMES_DECODED,
    create_session,
    frames_rising,
    join_as_caller,
    link_from_outbox,
    new_context,
    sign_in,
)
from tests.support.live import PASSWORD, LiveServer


async def call_with_handler(live: LiveServer, browser: Browser) -> tuple[Page, Page]:
    await live.add_staff("hannah", StaffRole.HANDLER)
    handler = await sign_in(await new_context(browser, live.url), "hannah", PASSWORD)
    await create_session(handler, "CAD-31", "07911 123456")
    caller = await (await new_context(browser, live.url, phone=True)).new_page()
    return handler, caller


async def test_declining_everything_still_gives_text_chat(live: LiveServer,
                                                          browser: Browser) -> None:
    handler, caller = await call_with_handler(live, browser)
    asked: list[str] = []
    await caller.expose_function("__gum", lambda kinds: asked.append(kinds))
    await caller.add_init_script(
        "const g = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);"
        "navigator.mediaDevices.getUserMedia = (c) => {"
        " window.__gum(Object.keys(c).filter(k => c[k]).join(',')); return g(c); };"
    )
    await join_as_caller(caller, await link_from_outbox(handler),
                         camera=False, microphone=False, location=False)
    assert asked == []  # never asked for the camera or microphone
    await caller.get_by_test_id("chat-input").fill("I am in the kitchen")
    await caller.get_by_test_id("chat-send").click()
    await handler.get_by_test_id("chat-log").get_by_text("I am in the kitchen").wait_for()
    await handler.get_by_test_id("chat-input").fill("Understood")
    await handler.get_by_test_id("chat-send").click()
    await caller.get_by_test_id("chat-log").get_by_text("Understood").wait_for()
    assert int(await handler.evaluate(FRAMES_DECODED)) == 0
    assert await handler.get_by_test_id("location-lat").inner_text() in ("", "—", "-")


async def test_discreet_mode_and_camera_off(live: LiveServer, browser: Browser) -> None:
    handler, caller = await call_with_handler(live, browser)
    await join_as_caller(caller, await link_from_outbox(handler))
    await frames_rising(handler)

    # Control-room sound is off until the caller asks for it.
    audio = caller.get_by_test_id("remote-audio").first
    await audio.wait_for(state="attached")
    assert await audio.evaluate("a => a.muted") is True
    assert await caller.get_by_test_id("sound-toggle").get_attribute("data-state") == "off"
    await caller.get_by_test_id("sound-toggle").click()
    assert await audio.evaluate("a => a.muted") is False

    # A dark screen hides the call on the phone but the picture keeps going.
    await caller.get_by_test_id("screen-dark").click()
    await caller.get_by_test_id("dark-overlay").wait_for(state="visible")
    await frames_rising(handler)
    await caller.get_by_test_id("dark-overlay").click()
    await caller.get_by_test_id("dark-overlay").wait_for(state="hidden")

    # Camera off stops the picture; on again brings it back.
    await caller.get_by_test_id("camera-off").click()
    await caller.wait_for_selector("[data-testid=camera-off][data-state=off]")
    await handler.wait_for_timeout(1500)
    before = int(await handler.evaluate(FRAMES_DECODED))
    await handler.wait_for_timeout(1500)
    assert int(await handler.evaluate(FRAMES_DECODED)) == before
    await caller.get_by_test_id("camera-off").click()
    await caller.wait_for_selector("[data-testid=camera-off][data-state=on]")
    await frames_rising(handler)

    # The handler's quality panel shows real measurements.
    resolution = handler.get_by_test_id("quality-resolution")
    await handler.wait_for_function(
        "() => /\\d+x\\d+/.test(document.querySelector('[data-testid=quality-resolution]')"
        ".textContent)"
    )
    assert re.fullmatch(r"\d+x\d+", (await resolution.inner_text()).strip())
    assert re.search(r"\d", await handler.get_by_test_id("quality-rtt").inner_text())


async def test_handler_reload_rejoins_without_breaking_the_call(live: LiveServer,
                                                                browser: Browser) -> None:
    """A participant may leave and come back: the handler's tab reloads mid-call and the
    caller's video reaches it again, while the caller's page stays connected throughout."""
    handler, caller = await call_with_handler(live, browser)
    await join_as_caller(caller, await link_from_outbox(handler))
    await frames_rising(handler)
    await handler.reload()
    await handler.wait_for_selector("[data-testid=connection-state][data-state=connected]")
    await frames_rising(handler)
    assert await caller.get_by_test_id("connection-state").get_attribute("data-state") \
        == "connected"
    await caller.get_by_test_id("canned-yes").click()
    await handler.locator("[data-testid=chat-message][data-canned=yes]").wait_for()
