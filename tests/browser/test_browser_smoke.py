"""Chromium starts, reaches the live server, and has a fake camera."""

from __future__ import annotations

from playwright.async_api import Browser

from tests.support.browser import new_context
from tests.support.live import LiveServer


async def test_chromium_reaches_the_server_with_fake_media(live: LiveServer,
                                                           browser: Browser) -> None:
    context = await new_context(browser, live.url)
    page = await context.new_page()
    response = await page.goto("/login")
    assert response is not None and response.status == 200
    tracks = await page.evaluate(
        "navigator.mediaDevices.getUserMedia({video: true, audio: true})"
        ".then(s => s.getTracks().map(t => t.kind + ':' + t.readyState))"
    )
    assert sorted(tracks) == ["audio:live", "video:live"]
    await context.close()
