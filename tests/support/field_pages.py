"""Other browsers in the field lab: Firefox ESR and WebKitGTK inside a lab namespace, next to
the Chromium of tests/support/field_call.py, and the few page steps (sign in, create a session,
join, chat) written for the harnesses' tabs (tests/support/browser_page.py).

- `firefox_in(lab, role)`: Firefox started through `ip netns exec`, its BiDi port (on the
  namespace's own 127.0.0.1) reached through a PortBridge. Fake camera and microphone, a
  fixed geolocation, host addresses not hidden behind mDNS names (Chromium in another
  namespace could not resolve them).
- `webkit_in(lab, role)`: Xvfb, WebKitWebDriver and MiniBrowser all in the namespace, the
  driver reached through a PortBridge.
- `chromium_in(playwright, lab, role)`: one Chromium in a namespace, for tests that need only
  one of field_browsers' two.

Every one of them is killed on the way out (the harnesses kill their whole process tree by
tag), whatever happened inside.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from playwright.async_api import Browser, BrowserContext, Page, Playwright

from tests.support.browser import CHROMIUM_ARGS, DESKTOP, INSTRUMENT, PHONE
from tests.support.browser_page import BrowserPage
from tests.support.field_call import LAB_CERTIFICATES, PUBLIC_URL
from tests.support.firefox import Firefox, FirefoxTab, Geolocation
from tests.support.live import PASSWORD
from tests.support.netlab import NetLab, PortBridge
from tests.support.webkit import WebKit

# Firefox in the lab: host candidates as addresses (the default hides them behind mDNS names
# unless the page holds a camera or microphone, and no other namespace resolves those), no
# loopback candidates (nothing else is on the namespace's loopback).
LAB_FIREFOX_PREFS: dict[str, Any] = {
    "media.peerconnection.ice.obfuscate_host_addresses": False,
}


@asynccontextmanager
async def _bridges(ns_name: str) -> AsyncIterator[Callable[[int], Awaitable[tuple[str, int]]]]:
    """A connect_via for the harnesses: each port asked for is forwarded from here into
    ns_name's loopback; every forwarder is stopped on the way out."""
    made: list[PortBridge] = []

    async def via(port: int) -> tuple[str, int]:
        bridge = await PortBridge(ns_name, "127.0.0.1", port).start()
        made.append(bridge)
        return "127.0.0.1", bridge.port

    try:
        yield via
    finally:
        for bridge in made:
            await bridge.stop()


@asynccontextmanager
async def firefox_in(lab: NetLab, role: str, *, geolocation: Geolocation | None = None,
                     init_scripts: tuple[str, ...] = (INSTRUMENT,)) -> AsyncIterator[Firefox]:
    """Firefox ESR in a lab namespace, with `init_scripts` in every page (INSTRUMENT, so the
    test reaches the page's peer connections as window.__pcs)."""
    ns_name = lab.ns(role)
    async with _bridges(ns_name) as via, Firefox.launch(
        LAB_FIREFOX_PREFS, wrapper=["ip", "netns", "exec", ns_name], connect_via=via,
        geolocation=geolocation or Geolocation(), loopback_ice=False,
    ) as firefox:
        for source in init_scripts:
            await firefox.add_init_script(source)
        yield firefox


@asynccontextmanager
async def webkit_in(lab: NetLab, role: str) -> AsyncIterator[WebKit]:
    """WebKitGTK's MiniBrowser (with Xvfb and WebKitWebDriver) in a lab namespace."""
    ns_name = lab.ns(role)
    async with _bridges(ns_name) as via, WebKit.launch(
        wrapper=["ip", "netns", "exec", ns_name], connect_via=via,
    ) as webkit:
        yield webkit


@asynccontextmanager
async def chromium_in(playwright: Playwright, lab: NetLab, role: str) -> AsyncIterator[Browser]:
    """Debian's Chromium in a lab namespace (as field_browsers starts each of its two)."""
    browser = await playwright.chromium.launch(
        executable_path=lab.chromium(role), headless=True,
        args=[*CHROMIUM_ARGS, LAB_CERTIFICATES])
    try:
        yield browser
    finally:
        await browser.close()


async def chromium_context(browser: Browser, *, phone: bool,
                           extra: str | None = None) -> BrowserContext:
    """A context on the lab's public address, INSTRUMENT (and `extra`) in every page."""
    settings = PHONE if phone else DESKTOP
    context = await browser.new_context(  # type: ignore[arg-type]
        base_url=PUBLIC_URL, ignore_https_errors=True, **settings)
    await context.add_init_script(INSTRUMENT)
    if extra:
        await context.add_init_script(extra)
    return context


# -- the same steps on a harness tab (Firefox or WebKit) --------------------------------------


def selector(testid: str, extra: str = "") -> str:
    """The CSS selector of a test id (and `extra`, e.g. an attribute condition)."""
    return f"[data-testid={json.dumps(testid)}]{extra}"


def js_selector(testid: str, extra: str = "") -> str:
    """`document.querySelector(...)` for a test id, as a JS expression."""
    return f"document.querySelector({json.dumps(selector(testid, extra))})"


async def tab_sign_in(tab: BrowserPage, username: str) -> None:
    """The staff sign-in form, typed and submitted as a person would."""
    await tab.goto(f"{PUBLIC_URL}/login")
    await tab.fill("input[name=username]", username)
    await tab.fill("input[name=password]", PASSWORD)
    await tab.click("button[type=submit]")
    await tab.wait_for("location.pathname !== '/login' && document.readyState === 'complete'",
                       timeout=30)


async def tab_create_session(tab: BrowserPage, ref: str, phone: str, *,
                             phone_line: bool = False) -> str:
    """The handler's form on /console; returns the session page's address."""
    await tab.goto(f"{PUBLIC_URL}/console")
    await tab.fill(selector("incident-ref"), ref)
    await tab.fill(selector("phone"), phone)
    if await tab.evaluate(f"{js_selector('phone-line')}.checked") != phone_line:
        await tab.click(selector("phone-line"))
    await tab.click(selector("create-session"))
    address = await tab.wait_for(
        "location.pathname.startsWith('/console/sessions/') && document.readyState === 'complete'"
        " && location.href", timeout=30)
    await wait_state(tab, "connection-state", "connected")
    return str(address)


async def wait_state(tab: BrowserPage, testid: str, state: str, timeout: float = 30) -> None:
    """Until the element with this test id has data-state=state."""
    await tab.wait_for(f"{js_selector(testid, f'[data-state={json.dumps(state)}]')} !== null",
                       timeout=timeout)


async def wait_text(tab: BrowserPage, testid: str, text: str, timeout: float = 30) -> str:
    """Until the element's text contains `text`; gives the whole text."""
    found = await tab.wait_for(
        f"(() => {{ const n = {js_selector(testid)};"
        f" return n && n.textContent.includes({json.dumps(text)}) && n.textContent; }})()",
        timeout=timeout)
    return str(found)


async def tab_chat_text(tab: BrowserPage, text: str) -> None:
    """Type a chat line and send it (caller's page or a staff call view)."""
    await tab.fill(selector("chat-input"), text)
    await tab.click(selector("chat-send"))


async def tab_rising(tab: FirefoxTab, script: str, what: str, timeout: float = 45) -> None:
    """Until `script` (an async function giving a count: frames decoded, packets received)
    gives more than it first did: real arrival, not a stats entry that merely exists."""
    start = int(await tab.call(script))
    deadline = time.monotonic() + timeout
    now = start
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        now = int(await tab.call(script))
        if now > start:
            return
    raise AssertionError(f"{what}: not rising within {timeout:g} s ({start} -> {now})")


async def page_rising(page: Page, script: str, what: str, timeout: float = 45) -> None:
    """tab_rising for a Playwright page."""
    start = int(await page.evaluate(script))
    deadline = time.monotonic() + timeout
    now = start
    while time.monotonic() < deadline:
        await page.wait_for_timeout(250)
        now = int(await page.evaluate(script))
        if now > start:
            return
    raise AssertionError(f"{what}: not rising within {timeout:g} s ({start} -> {now})")


# In a page: inbound audio packets received from everyone (to hear the other side).
AUDIO_PACKETS = """async () => {
  let packets = 0;
  for (const pc of window.__pcs) {
    if (pc.connectionState === "closed") continue;
    (await pc.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "audio") packets += r.packetsReceived || 0;
    });
  }
  return packets;
}"""

# In a page: inbound video frames decoded (Firefox and Chromium name them alike).
VIDEO_FRAMES = """async () => {
  let frames = 0;
  for (const pc of window.__pcs) {
    if (pc.connectionState === "closed") continue;
    (await pc.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") frames += r.framesDecoded || 0;
    });
  }
  return frames;
}"""

# In a page: each inbound video stream's codec (codecId -> the codec report's mimeType) and
# frames decoded.
VIDEO_CODECS = """async () => {
  const out = [];
  for (const pc of window.__pcs) {
    if (pc.connectionState === "closed") continue;
    const stats = await pc.getStats();
    stats.forEach((r) => {
      if (r.type !== "inbound-rtp" || r.kind !== "video") return;
      const codec = r.codecId ? stats.get(r.codecId) : null;
      out.push({mimeType: codec ? codec.mimeType : null, frames: r.framesDecoded || 0});
    });
  }
  return out;
}"""


def fake_geolocation(latitude: float, longitude: float, accuracy: float = 20.0) -> str:
    """A navigator.geolocation that answers like a phone's (asynchronously, and again every
    2 s while watched), for WebKitGTK, whose own never answers without GeoClue. Installed
    with evaluate() after navigation, before the caller taps Join."""
    fix = json.dumps({"latitude": latitude, "longitude": longitude, "accuracy": accuracy})
    return f"""void (() => {{
  const coords = {fix};
  const answer = (ok) => ok({{coords, timestamp: Date.now()}});
  const watches = new Map();
  let next = 1;
  Object.defineProperty(navigator, "geolocation", {{
    configurable: true,
    value: {{
      getCurrentPosition(ok) {{ setTimeout(() => answer(ok), 50); }},
      watchPosition(ok) {{
        const id = next++;
        setTimeout(() => answer(ok), 50);
        watches.set(id, setInterval(() => answer(ok), 2000));
        return id;
      }},
      clearWatch(id) {{ clearInterval(watches.get(id)); watches.delete(id); }},
    }},
  }});
}})()"""
