"""A whole call in real Chromium: handler, caller on a phone, specialist; real WebRTC media.

Screenshots of all three pages during the live call go to test-artifacts/ (README shows
copies from docs/screenshots/).
"""

from __future__ import annotations

import json
from typing import Any

from playwright.async_api import Browser, Page, WebSocket

from server import keys
from server.accounts import StaffRole
from tests.support.browser import (
    artifact,
    create_session,
    expect_state,
    frames_rising,
    join_as_caller,
    link_from_outbox,
    new_context,
    sign_in,
    wait_video,
)
from tests.support.live import PASSWORD, LiveServer

ADVICE = "Pattern of coercive control; ask about children"
STAFF_CHAT = "Stay on the line, help is coming"


def record_frames(page: Page) -> list[dict[str, Any]]:
    """Every JSON frame the page's sockets receive."""
    frames: list[dict[str, Any]] = []

    def on_socket(ws: WebSocket) -> None:
        def on_frame(payload: str | bytes) -> None:
            if isinstance(payload, str):
                frames.append(json.loads(payload))

        ws.on("framereceived", on_frame)

    page.on("websocket", on_socket)
    return frames


async def test_whole_call_in_chromium(live: LiveServer, browser: Browser) -> None:
    await live.add_staff("hannah", StaffRole.HANDLER)
    await live.add_staff("sam", StaffRole.SPECIALIST)

    specialist_ctx = await new_context(browser, live.url)
    specialist = await sign_in(specialist_ctx, "sam", PASSWORD)
    await specialist.goto("/specialist")
    toggle = specialist.get_by_test_id("availability-toggle")
    await toggle.click()
    await specialist.wait_for_selector("[data-testid=availability-toggle][aria-pressed=true]")

    handler_ctx = await new_context(browser, live.url)
    handler = await sign_in(handler_ctx, "hannah", PASSWORD)
    await create_session(handler, "CAD-4471", "07911 123456", language="cy")
    await expect_state(handler, "connected")

    # The caller, on a phone, opens the texted link, picks Welsh, consents and joins.
    caller_ctx = await new_context(browser, live.url, phone=True)
    caller = await caller_ctx.new_page()
    caller_frames = record_frames(caller)
    await join_as_caller(caller, await link_from_outbox(handler), language="cy")

    # What the caller agreed to share is on the case record.
    session_id = handler.url.rstrip("/").rsplit("/", 1)[1]
    for _ in range(50):
        kinds = {e.header.kind: e.body for e in await live.app[keys.RECORD].read(session_id)}
        if "consent_given" in kinds:
            break
        await caller.wait_for_timeout(100)
    assert kinds["consent_given"] == {"camera": True, "microphone": True, "location": True}

    # The handler sees and hears the caller: video playing, frames decoded rising.
    assert await wait_video(handler) > 0
    await frames_rising(handler)
    await handler.wait_for_selector("[data-testid=link-state][data-state=connected]")
    await handler.wait_for_selector("[data-testid=location-lat]:not(:empty)")
    assert (await handler.get_by_test_id("location-lat").inner_text()).startswith("51.48")

    # The specialist is invited, accepts, and also gets the caller's video.
    await handler.get_by_test_id("invite-specialist").click()
    await specialist.get_by_test_id("invitation-alert").wait_for(state="visible")
    assert "CAD-4471" in await specialist.get_by_test_id("invitation-incident").inner_text()
    await specialist.get_by_test_id("accept-invitation").click()
    await handler.wait_for_selector("[data-testid=specialist-state][data-state=accepted]")
    assert await wait_video(specialist) > 0
    await frames_rising(specialist)

    # Chat both ways; the caller's Welsh quick reply reads in English for the handler.
    await caller.get_by_test_id("canned-cant_talk").click()
    canned = handler.locator("[data-testid=chat-message][data-canned=cant_talk]")
    await canned.wait_for()
    assert "I can't talk" in await canned.inner_text()
    await handler.get_by_test_id("chat-input").fill(STAFF_CHAT)
    await handler.get_by_test_id("chat-send").click()
    await caller.get_by_text(STAFF_CHAT).wait_for()

    # Advice stays between staff: the specialist gets it, the caller never does.
    await handler.get_by_test_id("advice-input").fill(ADVICE)
    await handler.get_by_test_id("advice-send").click()
    await specialist.get_by_test_id("advice-log").get_by_text(ADVICE).wait_for()
    await caller.get_by_test_id("chat-log").get_by_text(STAFF_CHAT).wait_for()

    for page in (caller, handler, specialist):
        await page.evaluate("window.scrollTo(0, 0)")
    await caller.screenshot(path=artifact("caller-phone.png"))
    await handler.screenshot(path=artifact("handler-console.png"), full_page=True)
    await specialist.screenshot(path=artifact("specialist-console.png"), full_page=True)

    assert ADVICE not in await caller.content()
    assert all(frame.get("type") != "advice" for frame in caller_frames)
    assert not any(ADVICE in json.dumps(frame) for frame in caller_frames)

    # The handler ends the call; all three pages say so.
    await handler.get_by_test_id("end-session").click()
    await handler.get_by_test_id("end-session-confirm").click()
    await handler.get_by_test_id("session-ended").wait_for(state="visible")
    await specialist.get_by_test_id("session-ended").wait_for(state="visible")
    await caller.get_by_test_id("ended").wait_for(state="visible")
    await expect_state(caller, "ended")

    for context in (caller_ctx, handler_ctx, specialist_ctx):
        await context.close()
