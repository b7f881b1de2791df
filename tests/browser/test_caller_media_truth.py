"""What the handler is told about the caller's media comes from what arrives.

Found in a walkthrough: "Connected: video is flowing" stayed green through a 20 s frozen
picture and after the caller had left. Here the caller's page really stops sending (its video
sender is given no track, as a frozen camera or a stalled phone would), and the handler's call
view and the sessions list must say "picture frozen", then "flowing" when frames come back;
the same for sound, for a caller whose socket is away, and for one who left.
"""

from __future__ import annotations

from typing import Any

from playwright.async_api import Page

from tests.support.browser import (
    PAUSE_SENDING,
    RESUME_SENDING,
    caller_media,
    frames_rising,
    start_call,
)
from tests.support.live import LiveServer
from tests.support.socket_routes import routed_call


async def listed_as(page: Page, state: str, timeout: float = 30_000) -> None:
    """The sessions list (refreshed every 10 s) shows the caller in `state`."""
    await page.wait_for_selector(f"[data-testid=caller-state][data-state={state}]",
                                 timeout=timeout)


async def test_a_frozen_picture_is_called_frozen_in_the_call_view_and_the_list(
    fast_live: LiveServer, browser: Any,
) -> None:
    handler, caller = await start_call(fast_live, browser)
    await caller_media(handler, "flowing")
    sessions = await handler.context.new_page()
    await sessions.goto("/console")
    await listed_as(sessions, "flowing")

    await caller.evaluate(PAUSE_SENDING, "video")
    await caller_media(handler, "frozen", timeout=15_000)
    badge = handler.get_by_test_id("caller-media")
    first = int(await badge.get_attribute("data-seconds") or 0)
    await handler.wait_for_timeout(2500)
    later = int(await badge.get_attribute("data-seconds") or 0)
    assert later > first >= 3, (first, later)
    assert f"Picture frozen for {later} s" in await badge.inner_text()
    await listed_as(sessions, "frozen")
    assert "Picture frozen" in await sessions.get_by_test_id("caller-state").inner_text()

    await caller.evaluate(RESUME_SENDING, "video")
    await caller_media(handler, "flowing", timeout=15_000)
    await frames_rising(handler)
    await listed_as(sessions, "flowing")


async def test_sound_that_stops_arriving_is_no_sound(fast_live: LiveServer, browser: Any) -> None:
    """With sound on the page (not the phone line), audio packets that stop are "no sound";
    on the phone line no sound is expected, so none is missed."""
    handler, caller = await start_call(fast_live, browser, phone_line=False)
    await caller_media(handler, "flowing")
    await caller.evaluate(PAUSE_SENDING, "audio")
    await caller_media(handler, "no_sound", timeout=15_000)
    assert "no sound" in await handler.get_by_test_id("caller-media").inner_text()
    await caller.evaluate(RESUME_SENDING, "audio")
    await caller_media(handler, "flowing", timeout=15_000)


async def test_a_caller_whose_socket_is_away_is_reconnecting(fast_live: LiveServer,
                                                            browser: Any) -> None:
    handler, _, routes = await routed_call(fast_live, browser)
    await caller_media(handler, "flowing")
    sessions = await handler.context.new_page()
    await sessions.goto("/console")
    # The caller's socket drops and cannot get back for now: their connection is
    # reconnecting (whatever the media path still does), in the call view and the list.
    routes.refuse = True
    await routes.cut()
    await caller_media(handler, "reconnecting", timeout=20_000)
    assert "reconnecting" in await handler.get_by_test_id("caller-media").inner_text()
    await listed_as(sessions, "reconnecting")
    routes.refuse = False
    await caller_media(handler, "flowing", timeout=30_000)
    await listed_as(sessions, "flowing")


async def test_a_caller_who_left_is_left(fast_live: LiveServer, browser: Any) -> None:
    """Quick exit: the caller is gone, and the handler is not told the video flows."""
    handler, caller = await start_call(fast_live, browser)
    await caller_media(handler, "flowing")
    sessions = await handler.context.new_page()
    await sessions.goto("/console")
    await caller.get_by_test_id("quick-exit").click()
    await caller_media(handler, "left", timeout=15_000)
    assert "left" in await handler.get_by_test_id("caller-media").inner_text()
    await listed_as(sessions, "left")


async def test_a_quick_exit_while_reconnecting_still_leaves_at_once(
    fast_live: LiveServer, browser: Any,
) -> None:
    """The caller's socket is down when they press Exit: the page gives up its place over
    HTTP as it goes, so the handler reads "left" now, not "reconnecting" for a minute."""
    handler, caller, routes = await routed_call(fast_live, browser)
    await caller_media(handler, "flowing")
    routes.refuse = True
    await routes.cut()
    await caller.wait_for_selector("[data-testid=connection-state][data-state=reconnecting]")
    await caller.get_by_test_id("quick-exit").click()
    await caller_media(handler, "left", timeout=10_000)
