"""Chromium settings and helpers for the browser tests (fixtures: tests/browser/conftest.py)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from playwright.async_api import Browser, BrowserContext, Page

from tests.support.live import PASSWORD, LiveServer

CHROMIUM = os.environ.get("ERV_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
    "user_agent": (
        "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/156.0 Mobile Safari/537.36"
    ),
    "permissions": ["camera", "microphone", "geolocation"],
    "geolocation": {"latitude": 51.4816, "longitude": -3.1791, "accuracy": 15},
}
DESKTOP = {
    "viewport": {"width": 1440, "height": 900},
    "permissions": ["camera", "microphone"],
}


async def new_context(browser: Browser, base_url: str, phone: bool = False,
                      bypass_csp: bool = False) -> BrowserContext:
    """bypass_csp only for injecting test tools (axe); the app's own pages never need it."""
    settings = PHONE if phone else DESKTOP
    context = await browser.new_context(  # type: ignore[arg-type]
        base_url=base_url, bypass_csp=bypass_csp, **settings
    )
    await context.add_init_script(INSTRUMENT)
    return context


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


# Recorded in every page before its own scripts run: the test reaches peer connections and
# media tracks the way DevTools would, without the app exposing anything.
INSTRUMENT = """
(() => {
  window.__pcs = [];
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = function (...args) {
    const pc = new Native(...args);
    window.__pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
  const stop = MediaStreamTrack.prototype.stop;
  MediaStreamTrack.prototype.stop = function () {
    if (window.__trackStopped) window.__trackStopped(this.kind);
    return stop.call(this);
  };
})();
"""

FRAMES_DECODED = """
async () => {
  let frames = 0;
  for (const pc of window.__pcs) {
    if (pc.connectionState === "closed") continue;
    const stats = await pc.getStats();
    stats.forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") frames += r.framesDecoded || 0;
    });
  }
  return frames;
}
"""


async def sign_in(context: BrowserContext, username: str, password: str) -> Page:
    page = await context.new_page()
    await page.goto("/login")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_load_state()
    return page


async def create_session(page: Page, ref: str, phone: str, language: str = "en",
                         phone_line: bool = False) -> str:
    """Fill the handler's form; returns the session page's URL. `phone_line` is the form's
    own default (the caller stays on the 999 call: video and location only); these tests
    mostly want the whole call, sound too, so they untick it unless asked."""
    await page.goto("/console")
    await page.get_by_test_id("incident-ref").fill(ref)
    await page.get_by_test_id("phone").fill(phone)
    await page.get_by_test_id("language").select_option(language)
    await page.get_by_test_id("phone-line").set_checked(phone_line)
    await page.get_by_test_id("create-session").click()
    await page.wait_for_url("**/console/sessions/*")
    return page.url


async def link_from_outbox(page: Page) -> str:
    """The newest link the console gateway 'sent', read off the outbox page like a person."""
    outbox = await page.context.new_page()
    await outbox.goto("/outbox")
    text = await outbox.locator(".outbox li").first.inner_text()
    await outbox.close()
    match = re.search(r"https?://\S+/j/[A-Za-z0-9_\-]+", text)
    assert match, text
    return match.group(0)


async def join_as_caller(page: Page, link: str, language: str = "en",
                         camera: bool = True, microphone: bool = True,
                         location: bool = True) -> None:
    await page.goto(link)
    await page.get_by_test_id(f"lang-{language}").click()
    for kind, wanted in (("camera", camera), ("microphone", microphone), ("location", location)):
        box = page.get_by_test_id(f"consent-{kind}")
        if not await box.is_visible():
            continue  # the microphone on the phone line: not asked for
        if await box.is_checked() != wanted:
            await box.click()
    await page.get_by_test_id("join").click()
    await expect_state(page, "connected")


async def expect_state(page: Page, state: str, timeout: float = 15_000) -> None:
    await page.wait_for_selector(
        f"[data-testid=connection-state][data-state={state}]", timeout=timeout
    )


async def frames_rising(page: Page, timeout: float = 20.0) -> tuple[int, int]:
    """Two getStats() reads a second apart with more frames decoded in the second."""
    deadline = time.monotonic() + timeout
    while True:
        first = int(await page.evaluate(FRAMES_DECODED))
        await page.wait_for_timeout(1000)
        second = int(await page.evaluate(FRAMES_DECODED))
        if first > 0 and second > first:
            return first, second
        assert time.monotonic() < deadline, f"frames decoded not rising: {first} -> {second}"


async def video_width(page: Page) -> int:
    return int(await page.get_by_test_id("remote-video").evaluate("v => v.videoWidth"))


async def wait_video(page: Page, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while (width := await video_width(page)) == 0:
        assert time.monotonic() < deadline, "remote video never played"
        await page.wait_for_timeout(200)
    return width


def collect_errors(page: Page, problems: list[str]) -> None:
    """Gather the page's uncaught errors and console errors into `problems`."""
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)


async def start_call(live: LiveServer, browser: Browser, *, phone_line: bool = False,
                     caller_script: str | None = None, join: bool = True,
                     **consent: bool) -> tuple[Page, Page]:
    """A handler's call view and a caller's phone page, joined (unless `join` is False) and
    connected. `caller_script` runs in the caller's page before its own scripts (to make
    getUserMedia fail, say)."""
    await live.add_staff("hannah", "handler")
    handler = await sign_in(await new_context(browser, live.url), "hannah", PASSWORD)
    await create_session(handler, "CAD-77", "07911 123456", phone_line=phone_line)
    caller_context = await new_context(browser, live.url, phone=True)
    if caller_script:
        await caller_context.add_init_script(caller_script)
    caller = await caller_context.new_page()
    link = await link_from_outbox(handler)
    if join:
        await join_as_caller(caller, link, **consent)
    else:
        await caller.goto(link)
    return handler, caller


async def caller_media(page: Page, state: str, timeout: float = 30_000) -> None:
    """Wait until the call view says this about what arrives from the caller."""
    await page.wait_for_selector(f"[data-testid=caller-media][data-state={state}]",
                                 timeout=timeout)


# Run in the caller's page: stop sending one kind (the phone's camera freezing, the sound
# going), and start again; the test reaches the peer connections through INSTRUMENT.
PAUSE_SENDING = """
async (kind) => {
  window.__paused = window.__paused || {};
  for (const pc of window.__pcs) {
    for (const sender of pc.getSenders()) {
      if (sender.track && sender.track.kind === kind) {
        window.__paused[kind] = sender.track;
        await sender.replaceTrack(null);
      }
    }
  }
}
"""
RESUME_SENDING = """
async (kind) => {
  for (const pc of window.__pcs) {
    for (const sender of pc.getSenders()) {
      const mine = pc.getTransceivers().some((t) => t.sender === sender
                                                    && t.receiver.track.kind === kind);
      if (!sender.track && window.__paused && window.__paused[kind] && mine) {
        await sender.replaceTrack(window.__paused[kind]);
      }
    }
  }
}
"""
