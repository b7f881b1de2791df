"""A real call through the network lab: the service, the handler's and the caller's browsers,
each where it would be in the field.

- The service runs in this test process, as in every live test, and listens twice: on
  127.0.0.1 for the test itself, and on https://198.18.0.1:443 inside the lab's `ctl`
  namespace (a socket made there, see netlab.listening_socket) for the browsers. Its links,
  Origin check and secure cookies use that public address.
- The staff's Chromium runs in `ctl` (the control room's network, next to coturn); the caller's
  Chromium runs in `caller`, behind the link emulator and the NAT/firewall, so every packet of
  the caller's page, signalling and media alike, crosses them.
- TURN, when a scenario has it, is the lab's coturn with the service's own ERV_TURN_SECRET.

Nothing here changes the service: it is configured the way an operator would configure it.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, Playwright

from server.accounts import StaffRole
from tests.support.browser import CHROMIUM_ARGS, DESKTOP, INSTRUMENT, PHONE
from tests.support.live import PASSWORD, LiveServer, start_server
from tests.support.netlab import SERVICE_IP, NetLab, make_test_certificate

PUBLIC_URL = f"https://{SERVICE_IP}"

# In the caller's page: the selected ICE pair of its (first live) peer connection, as the
# caller's own browser sees it, and what it sends.
SELECTED_PAIR = """
async () => {
  for (const pc of window.__pcs) {
    if (pc.connectionState === "closed") continue;
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((r) => {
      const id = r.type === "transport" && r.selectedCandidatePairId;
      if (id) pair = stats.get(id);
    });
    if (!pair || pair.state !== "succeeded") continue;
    const local = stats.get(pair.localCandidateId), remote = stats.get(pair.remoteCandidateId);
    return {local: local.candidateType, remote: remote.candidateType, protocol: local.protocol,
            relayProtocol: local.relayProtocol || null, address: local.address || null};
  }
  return null;
}
"""

# In a watching page: what arrives from the caller over the last `ms` milliseconds.
RECEIVED = """
async (ms) => {
  const sample = async () => {
    const out = {frames: 0, audioPackets: 0, concealed: 0, samples: 0, width: 0, height: 0,
                 at: performance.now()};
    for (const pc of window.__pcs) {
      if (pc.connectionState === "closed") continue;
      (await pc.getStats()).forEach((r) => {
        if (r.type !== "inbound-rtp") return;
        if (r.kind === "video") {
          out.frames += r.framesDecoded || 0;
          out.width = Math.max(out.width, r.frameWidth || 0);
          out.height = Math.max(out.height, r.frameHeight || 0);
        } else {
          out.audioPackets += r.packetsReceived || 0;
          out.concealed += r.concealedSamples || 0;
          out.samples += r.totalSamplesReceived || 0;
        }
      });
    }
    return out;
  };
  const a = await sample();
  await new Promise((resolve) => setTimeout(resolve, ms));
  const b = await sample();
  const seconds = (b.at - a.at) / 1000;
  const samples = b.samples - a.samples;
  return {fps: (b.frames - a.frames) / seconds,
          audio_pps: (b.audioPackets - a.audioPackets) / seconds,
          concealment: samples > 0 ? (b.concealed - a.concealed) / samples : null,
          width: b.width, height: b.height, frames: b.frames};
}
"""

FRAMES = "async () => (await (" + RECEIVED + ")(0)).frames"


@dataclass
class FieldService:
    """The service, reachable from the lab at PUBLIC_URL and from the test at `live.url`."""

    live: LiveServer
    certificate: Path
    site: web.SockSite


@asynccontextmanager
async def field_service(lab: NetLab, tmp_path: Path, *, turn_urls: Sequence[str] = (),
                        turn_secret: str = "", stun_urls: Sequence[str] = (),
                        **settings: Any) -> AsyncIterator[FieldService]:
    """The service as an operator would run it for this network: TLS on 443 at the public
    address, with the given STUN/TURN servers."""
    certificate, key = make_test_certificate(tmp_path, SERVICE_IP, "erv.test")
    live = await start_server(
        tmp_path, public_url=PUBLIC_URL, secure_cookies=True, turn_urls=tuple(turn_urls),
        turn_secret=turn_secret, stun_urls=tuple(stun_urls), **settings,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    site = web.SockSite(live.runner, lab.listen("ctl", SERVICE_IP, 443), ssl_context=context)
    await site.start()
    try:
        yield FieldService(live, certificate, site)
    finally:
        await live.stop()


@dataclass
class FieldBrowsers:
    """One Chromium in the control room's network, one in the caller's."""

    staff: Browser
    caller: Browser
    contexts: list[BrowserContext] = field(default_factory=list)

    async def context(self, *, phone: bool, extra: str | None = None) -> BrowserContext:
        browser = self.caller if phone else self.staff
        settings = PHONE if phone else DESKTOP
        context = await browser.new_context(  # type: ignore[arg-type]
            base_url=PUBLIC_URL, ignore_https_errors=True, **settings)
        await context.add_init_script(INSTRUMENT)
        if extra:
            await context.add_init_script(extra)
        self.contexts.append(context)
        return context

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()
        await self.staff.close()
        await self.caller.close()


# The lab's certificates (the service's, coturn's) are self-signed. Pages are opened with
# ignore_https_errors; TURN over TLS is checked by Chromium's network stack, which only this
# flag relaxes. A deployment uses a real certificate for coturn (docs/operations.md).
LAB_CERTIFICATES = "--ignore-certificate-errors"


@asynccontextmanager
async def field_browsers(playwright: Playwright, lab: NetLab,
                         args: Sequence[str] = ()) -> AsyncIterator[FieldBrowsers]:
    launch = {"headless": True, "args": [*CHROMIUM_ARGS, LAB_CERTIFICATES, *args]}
    staff = await playwright.chromium.launch(executable_path=lab.chromium("ctl"), **launch)
    caller = await playwright.chromium.launch(executable_path=lab.chromium("caller"), **launch)
    browsers = FieldBrowsers(staff, caller)
    try:
        yield browsers
    finally:
        await browsers.close()


@dataclass
class FieldCall:
    """A handler's call view and a caller's phone page in one session."""

    service: FieldService
    handler: Page
    caller: Page
    session_url: str
    joined_at: float = 0.0  # monotonic time of the caller's tap on Join

    async def join(self, *, microphone: bool = True) -> None:
        """The caller taps Join (consent as given); the time of the tap is kept."""
        box = self.caller.get_by_test_id("consent-microphone")
        if await box.is_visible() and await box.is_checked() != microphone:
            await box.click()
        self.joined_at = time.monotonic()
        await self.caller.get_by_test_id("join").click()

    async def first_frame(self, timeout: float = 60.0) -> float:
        """Seconds from the caller's tap on Join to the handler's first decoded frame."""
        deadline = self.joined_at + timeout
        while time.monotonic() < deadline:
            if int(await self.handler.evaluate(FRAMES)) > 0:
                return time.monotonic() - self.joined_at
            await self.handler.wait_for_timeout(50)
        raise AssertionError(f"no frame reached the handler within {timeout:.0f} s")

    async def pair(self) -> dict[str, Any] | None:
        """The caller's selected ICE pair (its own view)."""
        result: dict[str, Any] | None = await self.caller.evaluate(SELECTED_PAIR)
        return result

    async def received(self, page: Page | None = None, seconds: float = 4.0) -> dict[str, Any]:
        """What `page` (the handler's by default) receives from the caller per second."""
        result: dict[str, Any] = await (page or self.handler).evaluate(RECEIVED, seconds * 1000)
        return result

    async def frames_rising(self, page: Page | None = None, timeout: float = 30.0) -> bool:
        """Whether decoded frames rise within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        page = page or self.handler
        start = int(await page.evaluate(FRAMES))
        while time.monotonic() < deadline:
            await page.wait_for_timeout(250)
            if int(await page.evaluate(FRAMES)) > start:
                return True
        return False


async def open_field_call(service: FieldService, browsers: FieldBrowsers, *,
                          phone_line: bool = False, caller_script: str | None = None,
                          staff_script: str | None = None) -> FieldCall:
    """Sign the handler in (in the control room), text the link, open it on the phone."""
    live = service.live
    await live.add_staff("hannah", StaffRole.HANDLER)
    handler = await (await browsers.context(phone=False, extra=staff_script)).new_page()
    await handler.goto("/login")
    await handler.fill("input[name=username]", "hannah")
    await handler.fill("input[name=password]", PASSWORD)
    await handler.click("button[type=submit]")
    await handler.wait_for_url("**/console")
    await handler.get_by_test_id("incident-ref").fill("CAD-FIELD")
    await handler.get_by_test_id("phone").fill("07911 123456")
    await handler.get_by_test_id("phone-line").set_checked(phone_line)
    await handler.get_by_test_id("create-session").click()
    await handler.wait_for_url("**/console/sessions/*")
    link = f"{PUBLIC_URL}/j/{live.latest_token()}"
    caller = await (await browsers.context(phone=True, extra=caller_script)).new_page()
    await caller.goto(link)
    return FieldCall(service, handler, caller, handler.url)
