"""Issue 11, finding 1, in Chromium: the handler's console asks before a different device
joins as the caller (Admit / Refuse), a reload of the caller's own page needs no asking, and
"keep the caller who is in the call" decides whether a new or revoked link cuts the caller off.
"""

from __future__ import annotations

import json
from typing import Any

from playwright.async_api import Page

from tests.support.browser import expect_state, start_call
from tests.support.live import LiveServer, SignalClient


async def held_credential(page: Page) -> str:
    saved = await page.evaluate("() => sessionStorage.getItem('erv.caller')")
    assert saved, "the caller's page holds no credential"
    return str(json.loads(saved)["credential"])


async def knock(live: LiveServer, credential: str) -> SignalClient:
    """A second device (a script here) saying hello as the caller: it is told to wait."""
    device = await SignalClient.connect(live, live.new_http())
    await device.send({"type": "hello", "v": 1, "credential": credential})
    waiting = await device.next()
    assert waiting["type"] == "waiting", waiting
    return device


async def test_the_handler_refuses_then_admits_a_second_device(live: LiveServer,
                                                               browser: Any) -> None:
    handler, caller = await start_call(live, browser)
    credential = await held_credential(caller)
    prompts = handler.get_by_test_id("device-prompts")
    assert await prompts.is_hidden()

    first = await knock(live, credential)
    await prompts.wait_for(state="visible")
    title = await handler.locator("#device-title").inner_text()
    assert title == "A different device is trying to join as the caller"
    await handler.get_by_test_id("device-refuse").click()
    await prompts.wait_for(state="hidden")
    assert await first.expect_closed() == (1000, "refused")
    await expect_state(caller, "connected")  # the caller in the call never noticed

    # Refused, that device's credential is the caller's own here (a copied one): the page
    # in the call goes on by resuming with its own secret. A second knock with a fresh
    # credential is admitted and replaces the page.
    await handler.get_by_test_id("keep-caller").check()
    await handler.get_by_test_id("resend-link").click()
    await handler.wait_for_timeout(1500)  # one press, one text (staff-actions.js pause)
    redeemed = await live.redeem(live.latest_token())
    second = await knock(live, str(redeemed["credential"]))
    await prompts.wait_for(state="visible")
    await handler.get_by_test_id("device-admit").click()
    welcome = await second.expect("welcome")
    assert welcome["role"] == "victim"
    await caller.get_by_test_id("ended").wait_for(state="visible")
    await prompts.wait_for(state="hidden")


async def test_a_reload_of_the_callers_page_is_not_a_different_device(
    live: LiveServer, browser: Any,
) -> None:
    handler, caller = await start_call(live, browser)
    await caller.reload()
    await expect_state(caller, "connected")
    await handler.wait_for_timeout(1000)
    assert await handler.get_by_test_id("device-prompts").is_hidden()


async def test_an_unticked_revoke_cuts_the_caller_off_and_a_ticked_one_does_not(
    live: LiveServer, browser: Any,
) -> None:
    handler, caller = await start_call(live, browser)
    keep = handler.get_by_test_id("keep-caller")
    await keep.check()
    await handler.get_by_test_id("resend-link").click()
    await handler.wait_for_timeout(1500)
    await expect_state(caller, "connected")
    await keep.uncheck()
    await handler.get_by_test_id("resend-link").click()
    await caller.get_by_test_id("ended").wait_for(state="visible")
    await expect_state(caller, "ended")
