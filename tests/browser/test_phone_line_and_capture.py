"""The caller still on the 999 call, and a phone that refuses, holds or takes back the camera
or microphone: the page carries on with what it has and the handler is told what is missing.

Each failure is made the way a phone makes it, by getUserMedia itself: an init script in the
caller's page wraps it to reject with the DOMException a phone gives (NotReadableError when the
phone call holds the microphone, NotAllowedError when permission is refused,
OverconstrainedError when the camera cannot do the asked size), and records what was asked.
"""

from __future__ import annotations

import json
from typing import Any

from playwright.async_api import Page

from tests.support.browser import caller_media, frames_rising, start_call
from tests.support.live import LiveServer

# getUserMedia as a phone would answer it: FAIL maps "audio" / "video" (or "video-exact", a
# video request with constraints) to the DOMException name to reject with.
GUM = """
(() => {
  const FAIL = %s;
  const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  window.__asked = [];
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    window.__asked.push(JSON.stringify(constraints));
    const fancy = constraints.video && constraints.video !== true;
    for (const [kind, name] of Object.entries(FAIL)) {
      const wanted = kind === "video-exact" ? fancy : Boolean(constraints[kind]);
      if (wanted) throw new DOMException("refused by the test phone", name);
    }
    return real(constraints);
  };
})();
"""


def phone(**fail: str) -> str:
    return GUM % json.dumps({k.replace("_", "-"): v for k, v in fail.items()})


async def asked(caller: Page) -> list[dict[str, Any]]:
    return [json.loads(c) for c in await caller.evaluate("() => window.__asked")]


async def capture_shown(handler: Page, kind: str, state: str, timeout: float = 20_000) -> str:
    """The handler's "Caller's phone" list shows `kind` in `state`; returns its words."""
    item = handler.locator(f"[data-testid=caller-capture] li[data-kind={kind}][data-state={state}]")
    await item.wait_for(timeout=timeout)
    return await item.inner_text()


async def test_on_the_phone_line_the_page_sends_video_and_no_sound(
    fast_live: LiveServer, browser: Any,
) -> None:
    handler, caller = await start_call(fast_live, browser, phone_line=True,
                                       caller_script=phone())
    assert all(not c.get("audio") for c in await asked(caller))  # never asked for the mic
    await caller_media(handler, "flowing")
    assert "phone line" in await capture_shown(handler, "microphone", "not_asked")
    assert await handler.get_by_test_id("call-mode").get_attribute("data-state") == "phone_line"
    # No control-room sound on the phone: no sound button, every remote audio muted.
    assert not await caller.get_by_test_id("sound-toggle").is_visible()
    assert not await caller.get_by_test_id("mic-off").is_visible()
    audios = caller.get_by_test_id("remote-audio")
    await audios.first.wait_for(state="attached")
    assert all(await audios.evaluate_all("els => els.map(a => a.muted)"))

    # The handler asks for sound on the page: the caller is asked, and chooses.
    await handler.get_by_test_id("call-mode-toggle").click()
    prompt = caller.get_by_test_id("talk-prompt")
    await prompt.wait_for(state="visible")
    assert not any(c.get("audio") for c in await asked(caller))  # nothing until the tap
    await caller.get_by_test_id("talk-on-page").click()
    await prompt.wait_for(state="hidden")
    assert any(c.get("audio") for c in await asked(caller))
    assert "working" in await capture_shown(handler, "microphone", "ok")
    assert await audios.evaluate_all("els => els.map(a => a.muted)") == [False]
    assert await caller.get_by_test_id("sound-toggle").is_visible()
    await caller_media(handler, "flowing")  # sound now expected, and arriving

    # Back to the phone line: the page lets go of the microphone.
    await handler.get_by_test_id("call-mode-toggle").click()
    await capture_shown(handler, "microphone", "not_asked")
    assert await caller.evaluate(
        "() => window.__pcs.flatMap(pc => pc.getSenders()).every(s => !s.track"
        " || s.track.kind !== 'audio' || s.track.readyState === 'ended')")
    assert all(await audios.evaluate_all("els => els.map(a => a.muted)"))


async def test_a_microphone_held_by_the_phone_call_leaves_the_video(
    fast_live: LiveServer, browser: Any,
) -> None:
    """NotReadableError for the microphone (the cellular call has it): video still flows."""
    handler, _ = await start_call(fast_live, browser,
                                  caller_script=phone(audio="NotReadableError"))
    await frames_rising(handler)
    assert "in use by another app" in await capture_shown(handler, "microphone", "busy")
    await capture_shown(handler, "camera", "ok")
    await handler.wait_for_selector("[data-testid=caller-rung][data-state=full]")
    await caller_media(handler, "flowing")  # no sound expected from a busy microphone


async def test_a_refused_camera_is_chat_and_location_and_says_so(
    fast_live: LiveServer, browser: Any,
) -> None:
    handler, caller = await start_call(fast_live, browser,
                                       caller_script=phone(video="NotAllowedError"))
    assert "not allowed" in await capture_shown(handler, "camera", "denied")
    await handler.wait_for_selector("[data-testid=caller-rung][data-state=chat]")
    assert await handler.get_by_test_id("caller-rung-reason").get_attribute(
        "data-reason") == "camera_unavailable"
    await caller_media(handler, "chat_only")
    await caller.get_by_test_id("canned-cant_talk").click()
    await handler.locator("[data-testid=chat-message][data-canned=cant_talk]").wait_for()
    await handler.wait_for_selector("[data-testid=location-lat]:not(:empty)")


async def test_a_camera_that_cannot_do_the_size_is_asked_again_for_any_size(
    fast_live: LiveServer, browser: Any,
) -> None:
    handler, caller = await start_call(fast_live, browser,
                                       caller_script=phone(video_exact="OverconstrainedError"))
    await frames_rising(handler)
    await capture_shown(handler, "camera", "ok")
    videos = [c["video"] for c in await asked(caller) if c.get("video")]
    assert videos[-1] is True and any(v is not True for v in videos), videos


async def test_a_track_the_phone_mutes_or_ends_is_told_and_taken_back(
    fast_live: LiveServer, browser: Any,
) -> None:
    """iOS mutes the camera when the page goes to the background and ends tracks when a call
    comes in; here the track's own events say so, as the phone's would."""
    handler, caller = await start_call(fast_live, browser, caller_script=phone())
    await caller_media(handler, "flowing")
    track = "document.querySelector('[data-testid=local-video]').srcObject.getVideoTracks()[0]"
    await caller.evaluate(f"() => {track}.dispatchEvent(new Event('mute'))")
    assert "paused by the phone" in await capture_shown(handler, "camera", "muted")
    await caller.evaluate(f"() => {track}.dispatchEvent(new Event('unmute'))")
    await capture_shown(handler, "camera", "ok")
    before = len(await asked(caller))
    await caller.evaluate(f"() => {track}.dispatchEvent(new Event('ended'))")
    await capture_shown(handler, "camera", "ended", timeout=5_000)
    await capture_shown(handler, "camera", "ok")  # re-acquired a second later
    assert [c for c in (await asked(caller))[before:] if c.get("video")]
    await frames_rising(handler)
    await caller_media(handler, "flowing")
