from __future__ import annotations
from pathlib import Path
from typing import Any
import axe_playwright_python
from playwright.async_api import Browser, Page
from server.accounts import StaffRole
from tests.support.browser import DESKTOP, INSTRUMENT, create_session, join_as_caller, link_from_outbox, new_context, sign_in, wait_video
from tests.support.live import PASSWORD, LiveServer

AXE = Path(axe_playwright_python.__file__).with_name("axe.min.js")

async def axe(page: Page) -> list[Any]:
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:4], "help": v["help"]} for v in result["violations"]]

async def ctx(browser: Browser, url: str):
    c = await browser.new_context(base_url=url, bypass_csp=True, **DESKTOP)
    await c.add_init_script(INSTRUMENT)
    return c

def watch(page: Page, who: str, errors: list[str]) -> None:
    page.on("console", lambda m: errors.append(f"{who} {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(f"{who} pageerror: {e}"))

async def test_axe(live: LiveServer, browser: Browser) -> None:
    await live.add_staff("hannah", StaffRole.HANDLER)
    await live.add_staff("sam", StaffRole.SPECIALIST)
    await live.add_staff("sue", StaffRole.SUPERVISOR)
    errors: list[str] = []
    found = {}
    login = await (await ctx(browser, live.url)).new_page()
    await login.goto("/login")
    found["login"] = await axe(login)
    s = await sign_in(await ctx(browser, live.url), "sam", PASSWORD)
    watch(s, "S", errors)
    await s.goto("/specialist")
    await s.get_by_test_id("availability-toggle").click()
    await s.wait_for_selector("[data-testid=lobby-state][data-state=connected]")
    found["desk"] = await axe(s)
    h = await sign_in(await ctx(browser, live.url), "hannah", PASSWORD)
    watch(h, "H", errors)
    await h.goto("/console")
    found["console"] = await axe(h)
    await create_session(h, "CAD-1", "07911 123456")
    await h.wait_for_selector("[data-testid=connection-state][data-state=connected]")
    found["call-empty"] = await axe(h)
    caller_ctx = await new_context(browser, live.url, phone=True)
    c = await caller_ctx.new_page()
    await join_as_caller(c, await link_from_outbox(h))
    await wait_video(h)
    await c.get_by_test_id("canned-cant_talk").click()
    await h.wait_for_selector("[data-testid=chat-message]")
    await h.get_by_test_id("advice-input").fill("advice one")
    await h.get_by_test_id("advice-send").click()
    await h.wait_for_selector("[data-testid=advice-message]")
    await h.wait_for_selector("[data-testid=location-lat]:not(:empty)")
    await h.wait_for_timeout(2500)
    found["call-live"] = await axe(h)
    print("QUALITY", [await h.get_by_test_id(x).inner_text() for x in ("quality-rtt", "quality-loss", "quality-bitrate", "quality-resolution", "location-lat", "location-lon", "location-accuracy", "location-age", "link-state", "sms-status", "caller-presence", "mic-state")])
    print("MAP", await h.get_by_test_id("map-link").get_attribute("href"))
    await h.get_by_test_id("invite-specialist").click()
    await s.get_by_test_id("invitation-alert").wait_for(state="visible")
    await s.wait_for_timeout(1200)
    print("WAITING", await s.get_by_test_id("invitation-waiting").inner_text(), await s.get_by_test_id("invitation-alert").get_attribute("data-tone"))
    print("SPEC STATE", await h.get_by_test_id("specialist-state").inner_text())
    found["desk-ringing"] = await axe(s)
    await s.get_by_test_id("accept-invitation").click()
    await wait_video(s)
    await s.wait_for_timeout(1500)
    found["desk-call"] = await axe(s)
    await h.screenshot(path="/tmp/dbg/handler.png", full_page=True)
    await s.screenshot(path="/tmp/dbg/specialist.png", full_page=True)
    sup = await sign_in(await ctx(browser, live.url), "sue", PASSWORD)
    watch(sup, "O", errors)
    await sup.goto("/supervisor")
    found["supervisor"] = await axe(sup)
    await sup.locator("[data-testid=session-row] a").first.click()
    await wait_video(sup)
    found["observer"] = await axe(sup)
    await sup.screenshot(path="/tmp/dbg/observer.png", full_page=True)
    await h.get_by_test_id("end-session").click()
    await h.screenshot(path="/tmp/dbg/handler-arm.png")
    await h.get_by_test_id("end-session-confirm").click()
    await h.get_by_test_id("session-ended").wait_for(state="visible")
    await s.get_by_test_id("session-ended").wait_for(state="visible")
    await sup.get_by_test_id("session-ended").wait_for(state="visible")
    found["ended"] = await axe(h)
    await h.screenshot(path="/tmp/dbg/handler-ended.png", full_page=True)
    for k, v in found.items():
        print(k, v)
    print("\n".join(errors))
    assert all(not v for v in found.values())
