"""Real calls through the network lab with browsers other than Chromium on one end or both:
Firefox ESR as the caller, Firefox ESR as the handler and the specialist, WebKitGTK (no WebRTC:
still pictures) as the caller, and Chromium forced to H.264 both ways.

Every browser runs where it would in the field: the caller's in the `caller` namespace
(behind the link emulator, the NAT and the firewall, here open), the staff's in `ctl` next to
the service and coturn (tests/support/field_call.py, tests/support/field_pages.py). TURN is
configured as an operator would. Each test asserts on what really arrives (frames decoded
rising, audio packets rising, still pictures counted, chat and locations shown on the other
side), never on an element merely existing. Assertions are loose: the machine is shared and
noisy.
"""

from __future__ import annotations

import time
from pathlib import Path

from playwright.async_api import Browser, Page, Playwright

from server.accounts import StaffRole
from tests.support.browser import caller_media, collect_errors, create_session
from tests.support.field_call import (
    FRAMES,
    PUBLIC_URL,
    RECEIVED,
    FieldService,
    field_service,
)
from tests.support.field_pages import (
    AUDIO_PACKETS,
    VIDEO_CODECS,
    VIDEO_FRAMES,
    chromium_context,
    chromium_in,
    fake_geolocation,
    firefox_in,
    js_selector,
    page_rising,
    selector,
    tab_chat_text,
    tab_create_session,
    tab_rising,
    tab_sign_in,
    wait_state,
    wait_text,
    webkit_in,
)
from tests.support.firefox import FirefoxTab, Geolocation
from tests.support.live import PASSWORD
from tests.support.netlab import NetLab, Turn

# Where each caller's browser says it is: distinct, so the handler's panel proves whose
# position arrived (Chromium's PHONE context says 51.4816, -3.1791).
FIREFOX_AT = Geolocation(latitude=52.2053, longitude=0.1218, accuracy=12.0)
WEBKIT_AT = (53.4808, -2.2426)
STAFF_CHAT = "Stay on the line, help is coming"
ADVICE = "Coercive control pattern; ask about the children"


def script_errors(errors: list[str]) -> list[str]:
    """The errors a broken script throws (an API this browser lacks, a field it names
    otherwise), among a page's console errors."""
    kinds = ("TypeError", "ReferenceError", "SyntaxError", "NotSupportedError")
    return [text for text in errors if any(kind in text for kind in kinds)]


async def chromium_page(browser: Browser, problems: list[str], *, phone: bool,
                        extra: str | None = None) -> Page:
    """A Chromium page on the lab's address whose script errors go to `problems`."""
    page = await (await chromium_context(browser, phone=phone, extra=extra)).new_page()
    collect_errors(page, problems)
    return page


async def handler_in_chromium(service: FieldService, page: Page, ref: str) -> str:
    """Hannah signs in and creates a session with sound on the page; gives the caller's link."""
    await service.live.add_staff("hannah", StaffRole.HANDLER)
    await page.goto("/login")
    await page.fill("input[name=username]", "hannah")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console")
    await create_session(page, ref, "07911 123456", phone_line=False)
    await page.wait_for_selector("[data-testid=connection-state][data-state=connected]",
                                 timeout=30_000)
    return f"{PUBLIC_URL}/j/{service.live.latest_token()}"


async def handler_sees_location(page: Page, latitude: float) -> None:
    """The handler's location panel shows the caller's latitude (to 4 places, as sent)."""
    await page.wait_for_selector("[data-testid=location-lat]:not(:empty)", timeout=30_000)
    shown = await page.get_by_test_id("location-lat").inner_text()
    assert shown.startswith(f"{latitude:.4f}"), shown


async def tab_sees_location(tab: FirefoxTab, latitude: float) -> None:
    """handler_sees_location for a staff page in Firefox."""
    shown = await tab.wait_for(
        f"(() => {{ const n = {js_selector('location-lat')}; return n && n.textContent; }})()",
        timeout=30)
    assert str(shown).startswith(f"{latitude:.4f}"), shown


async def handler_chat_roundtrip(handler: Page, canned_seen: str = "I can't talk") -> None:
    """The caller's canned reply (already sent) is shown to the handler in words."""
    canned = handler.locator("[data-testid=chat-message][data-canned=cant_talk]")
    await canned.wait_for(timeout=30_000)
    assert canned_seen in await canned.inner_text()


# -- 1. Firefox caller, Chromium handler ---------------------------------------------------------


async def test_firefox_caller_to_chromium_handler(
    playwright: Playwright, lab: NetLab, turn: Turn, tmp_path: Path,
) -> None:
    """A caller on Firefox ESR (VP8: it has no H.264) with sound on the page: the Chromium
    handler decodes the caller's video and receives the caller's audio, the caller's Firefox
    receives the handler's audio, chat goes both ways, the handler reads Firefox's own
    geolocation, and the handler's badges say the video is flowing on the full rung."""
    async with (
        field_service(lab, tmp_path, turn_urls=turn.urls(), turn_secret=turn.secret) as service,
        chromium_in(playwright, lab, "ctl") as staff,
        firefox_in(lab, "caller", geolocation=FIREFOX_AT) as firefox,
    ):
        problems: list[str] = []
        handler = await chromium_page(staff, problems, phone=False)
        link = await handler_in_chromium(service, handler, "CAD-FX1")

        caller = firefox.tab
        await caller.set_viewport(390, 844)
        await caller.goto(link)
        await caller.wait_for(f"{js_selector('join')} !== null")
        assert await caller.evaluate(f"{js_selector('consent-microphone')}.checked") is True
        await caller.click(selector("join"))
        await wait_state(caller, "connection-state", "connected", timeout=45)

        # Video and sound from the Firefox caller arrive at the Chromium handler.
        await page_rising(handler, FRAMES, "frames decoded at the handler", timeout=60)
        await page_rising(handler, AUDIO_PACKETS, "caller's audio at the handler")
        got = await handler.evaluate(RECEIVED, 4000)
        assert got["fps"] > 1 and got["audio_pps"] > 10, got
        # The two agreed on a codec Firefox has (it has no H.264 here).
        codecs = {str(s["mimeType"]).lower() for s in await handler.evaluate(VIDEO_CODECS)
                  if int(s["frames"] or 0) > 0}
        assert codecs and codecs <= {"video/vp8", "video/vp9", "video/av1"}, codecs
        await caller_media(handler, "flowing", timeout=45_000)
        await handler.wait_for_selector("[data-testid=caller-rung][data-state=full]",
                                        timeout=30_000)

        # The handler's voice arrives in Firefox (counted even while the page keeps it muted
        # until the caller turns the sound on).
        await tab_rising(caller, AUDIO_PACKETS, "handler's audio packets in Firefox")

        # Chat both ways: a quick reply from the phone, typed text from the console.
        await caller.click(selector("canned-cant_talk"))
        await handler_chat_roundtrip(handler)
        await handler.get_by_test_id("chat-input").fill(STAFF_CHAT)
        await handler.get_by_test_id("chat-send").click()
        await wait_text(caller, "chat-log", STAFF_CHAT)

        # Firefox's own geolocation (its network provider, fed a fixed answer) reaches the handler.
        await handler_sees_location(handler, FIREFOX_AT.latitude)

        assert not script_errors(firefox.errors), firefox.errors
        assert not script_errors(problems), problems


# -- 2. Chromium caller, Firefox handler and Firefox specialist ---------------------------------


async def test_chromium_caller_firefox_handler_and_specialist(
    playwright: Playwright, lab: NetLab, turn: Turn, tmp_path: Path,
) -> None:
    """The staff side in Firefox ESR: the specialist makes herself available on her desk, the
    handler invites her, she accepts and joins in the desk page. Both Firefox staff decode the
    Chromium caller's video, both get the caller's chat and location, and the handler's private
    advice reaches the specialist."""
    async with (
        field_service(lab, tmp_path, turn_urls=turn.urls(), turn_secret=turn.secret) as service,
        firefox_in(lab, "ctl") as handler_ff,
        firefox_in(lab, "ctl") as specialist_ff,
        chromium_in(playwright, lab, "caller") as phone,
    ):
        live = service.live
        await live.add_staff("hannah", StaffRole.HANDLER)
        await live.add_staff("sam", StaffRole.SPECIALIST)

        specialist = specialist_ff.tab
        await tab_sign_in(specialist, "sam")
        await specialist.goto(f"{PUBLIC_URL}/specialist")
        await wait_state(specialist, "lobby-state", "connected")
        await specialist.click(selector("availability-toggle"))
        await specialist.wait_for(
            f"{js_selector('availability-toggle')}.getAttribute('aria-pressed') === 'true'")

        handler = handler_ff.tab
        await tab_sign_in(handler, "hannah")
        await tab_create_session(handler, "CAD-FX2", "07911 123456", phone_line=False)
        link = f"{PUBLIC_URL}/j/{live.latest_token()}"

        problems: list[str] = []
        caller = await chromium_page(phone, problems, phone=True)
        await caller.goto(link)
        await caller.get_by_test_id("join").click()
        await caller.wait_for_selector("[data-testid=connection-state][data-state=connected]",
                                       timeout=45_000)
        await tab_rising(handler, VIDEO_FRAMES, "frames decoded in the Firefox handler", 60)

        # The invitation rings on the specialist's desk; she accepts and joins on the same page.
        await handler.click(selector("invite-specialist"))
        await specialist.wait_for(f"!{js_selector('invitation-alert')}.hidden", timeout=30)
        assert "CAD-FX2" in await specialist.evaluate(
            f"{js_selector('invitation-incident')}.textContent")
        await specialist.click(selector("accept-invitation"))
        await wait_state(handler, "specialist-state", "accepted")
        await tab_rising(specialist, VIDEO_FRAMES, "frames decoded in the Firefox specialist", 60)
        # ...and the handler's video did not stop when the third participant came in.
        await tab_rising(handler, VIDEO_FRAMES, "frames still decoded in the Firefox handler")

        # Chat from the caller reaches both; the handler's typed line reaches the caller.
        await caller.get_by_test_id("canned-cant_talk").click()
        for tab in (handler, specialist):
            await tab.wait_for(
                f"{js_selector('chat-message', '[data-canned=cant_talk]')} !== null", timeout=30)
            assert "I can't talk" in await tab.evaluate(
                f"{js_selector('chat-message', '[data-canned=cant_talk]')}.textContent")
        await tab_chat_text(handler, STAFF_CHAT)
        await caller.get_by_test_id("chat-log").get_by_text(STAFF_CHAT).wait_for(timeout=30_000)
        await wait_text(specialist, "chat-log", STAFF_CHAT)

        # The caller's location (Chromium's PHONE context) reaches both.
        for tab in (handler, specialist):
            await tab_sees_location(tab, 51.4816)

        # Advice stays among staff: from the handler to the specialist.
        await handler.fill(selector("advice-input"), ADVICE)
        await handler.click(selector("advice-send"))
        await wait_text(specialist, "advice-log", ADVICE)

        for ff in (handler_ff, specialist_ff):
            assert not script_errors(ff.errors), ff.errors
        assert not script_errors(problems), problems


# -- 3. WebKitGTK caller (no WebRTC), Chromium handler ------------------------------------------


async def test_webkit_caller_without_webrtc_sends_still_pictures(
    playwright: Playwright, lab: NetLab, turn: Turn, tmp_path: Path,
) -> None:
    """A browser with a camera but no RTCPeerConnection (WebKitGTK here; in-app browsers in the
    field): before Join the link's page says so and offers to copy the link; after Join still
    pictures reach the handler over HTTPS, one after another, the handler reads the rung and
    the reason in words, chat goes both ways and the location arrives."""
    async with (
        field_service(lab, tmp_path, turn_urls=turn.urls(), turn_secret=turn.secret,
                      still_every=2) as service,
        chromium_in(playwright, lab, "ctl") as staff,
        webkit_in(lab, "caller") as webkit,
    ):
        problems: list[str] = []
        handler = await chromium_page(staff, problems, phone=False)
        link = await handler_in_chromium(service, handler, "CAD-WK3")

        await webkit.goto(link)
        await webkit.wait_for(f"{js_selector('join')} !== null", timeout=30)
        await webkit.install_error_trap()
        assert await webkit.evaluate("typeof RTCPeerConnection") == "undefined"
        # Said before the link is used up, while it can still be opened in another browser.
        await webkit.wait_for(f"!{js_selector('no-webrtc')}.hidden", timeout=15)
        assert await webkit.evaluate(f"{js_selector('no-webrtc')}.offsetHeight > 0")
        assert await webkit.evaluate(f"{js_selector('copy-link')} !== null")
        await webkit.evaluate(fake_geolocation(*WEBKIT_AT))
        await webkit.click(selector("join"))
        await wait_state(webkit, "connection-state", "connected", timeout=45)

        # The handler is told which rung and why, in words.
        await handler.wait_for_selector("[data-testid=caller-rung][data-state=stills]",
                                        timeout=30_000)
        reason = handler.get_by_test_id("caller-rung-reason")
        assert await reason.get_attribute("data-reason") == "no_webrtc"
        assert "cannot make video calls" in await reason.inner_text()

        # Still pictures keep arriving: the image is shown and its count rises twice.
        picture = handler.get_by_test_id("still-picture")
        await picture.wait_for(state="visible", timeout=30_000)
        first = int(await picture.get_attribute("data-count") or 0)
        await handler.wait_for_function(
            "(n) => Number(document.querySelector('[data-testid=still-picture]')"
            ".dataset.count) >= n", arg=first + 2, timeout=30_000)
        assert await picture.evaluate("img => img.naturalWidth") > 0

        # Chat both ways.
        await webkit.click(selector("canned-cant_talk"))
        await handler_chat_roundtrip(handler)
        await handler.get_by_test_id("chat-input").fill(STAFF_CHAT)
        await handler.get_by_test_id("chat-send").click()
        await wait_text(webkit, "chat-log", STAFF_CHAT)

        # The position from the shim reaches the handler.
        await handler_sees_location(handler, WEBKIT_AT[0])

        errors = await webkit.errors()
        assert not script_errors(errors), errors
        assert not script_errors(problems), problems


# -- 4. H.264 forced between two Chromiums -------------------------------------------------------

# Before every setLocalDescription (offer or answer, each renegotiation and ICE restart), every
# video transceiver prefers H.264 only: the call can then use nothing else. What was found and
# any refusal are kept in window.__h264 for the test.
FORCE_H264 = """
(() => {
  const state = window.__h264 = {available: [], applied: 0, errors: []};
  const h264 = () => RTCRtpReceiver.getCapabilities("video").codecs
    .filter((c) => c.mimeType.toLowerCase() === "video/h264");
  state.available = h264().map((c) => c.sdpFmtpLine || "");
  const original = RTCPeerConnection.prototype.setLocalDescription;
  RTCPeerConnection.prototype.setLocalDescription = function (...args) {
    const codecs = h264();
    for (const transceiver of this.getTransceivers()) {
      if (transceiver.receiver.track.kind !== "video") continue;
      if (transceiver.currentDirection === "stopped") continue;
      if (!codecs.length) continue;
      try {
        transceiver.setCodecPreferences(codecs);
        state.applied += 1;
      } catch (err) {
        state.errors.push(String(err));
      }
    }
    return original.apply(this, args);
  };
})();
"""


async def test_h264_forced_between_chromium_caller_and_handler(
    playwright: Playwright, lab: NetLab, turn: Turn, tmp_path: Path,
) -> None:
    """What an iPhone's Safari may insist on: with both pages allowed only H.264 for video,
    the call still connects and the handler decodes H.264 frames from the caller."""
    async with (
        field_service(lab, tmp_path, turn_urls=turn.urls(), turn_secret=turn.secret) as service,
        chromium_in(playwright, lab, "ctl") as staff,
        chromium_in(playwright, lab, "caller") as phone,
    ):
        problems: list[str] = []
        handler = await chromium_page(staff, problems, phone=False, extra=FORCE_H264)
        link = await handler_in_chromium(service, handler, "CAD-H264")
        caller = await chromium_page(phone, problems, phone=True, extra=FORCE_H264)
        await caller.goto(link)
        for page, who in ((handler, "handler"), (caller, "caller")):
            found = await page.evaluate("window.__h264.available")
            assert found, (f"Chromium in the {who}'s page offers no H.264 for video "
                           "(RTCRtpReceiver.getCapabilities): cannot force it")
        await caller.get_by_test_id("join").click()
        await caller.wait_for_selector("[data-testid=connection-state][data-state=connected]",
                                       timeout=45_000)
        await page_rising(handler, FRAMES, "H.264 frames decoded at the handler", timeout=60)

        # Every inbound video stream that decodes frames does so with H.264.
        deadline = time.monotonic() + 30
        while True:
            streams = await handler.evaluate(VIDEO_CODECS)
            decoding = [s for s in streams if int(s["frames"] or 0) > 0]
            if decoding and all(str(s["mimeType"]).lower() == "video/h264" for s in decoding):
                break
            assert time.monotonic() < deadline, f"the handler does not decode H.264: {streams}"
            await handler.wait_for_timeout(500)
        for page, who in ((handler, "handler"), (caller, "caller")):
            state = await page.evaluate("window.__h264")
            assert state["applied"] > 0 and not state["errors"], (who, state)
        await caller_media(handler, "flowing", timeout=45_000)
        await page_rising(handler, FRAMES, "H.264 frames still decoded at the handler")
        assert not script_errors(problems), problems
