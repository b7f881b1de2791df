"""Evidence in real Chromium: during a live call the handler takes a snapshot of the caller's
video and the caller sends a photo; both are stored and noted on the session's case record."""

from __future__ import annotations

import hashlib

from playwright.async_api import Browser

from server import keys
from server.accounts import StaffRole
from tests.support.browser import (
    collect_errors,
    create_session,
    expect_state,
    join_as_caller,
    link_from_outbox,
    new_context,
    sign_in,
    wait_video,
)
from tests.support.live import PASSWORD, LiveServer


async def test_handler_snapshot_and_caller_upload_reach_the_record(
    live: LiveServer, browser: Browser
) -> None:
    await live.add_staff("hannah", StaffRole.HANDLER)

    handler_ctx = await new_context(browser, live.url)
    handler = await sign_in(handler_ctx, "hannah", PASSWORD)
    problems: list[str] = []
    collect_errors(handler, problems)
    url = await create_session(handler, "CAD-7310", "07911 123456")
    session_id = url.rstrip("/").rsplit("/", 1)[-1]
    await expect_state(handler, "connected")

    caller_ctx = await new_context(browser, live.url, phone=True)
    caller = await caller_ctx.new_page()
    collect_errors(caller, problems)
    await join_as_caller(caller, await link_from_outbox(handler))
    await wait_video(handler)

    # The handler's snapshot: the list gets one item carrying the stored file's SHA-256.
    await handler.get_by_test_id("snapshot").click()
    item = handler.get_by_test_id("snapshot-list").locator("li[data-sha256]")
    await item.wait_for()
    snapshot_sha = await item.get_attribute("data-sha256")
    assert snapshot_sha and len(snapshot_sha) == 64
    status = handler.get_by_test_id("snapshot-status")
    assert await status.get_attribute("data-state") == "saved"

    # The caller's photo: real PNG bytes from a screenshot, chosen with the visible label.
    png = await caller.screenshot()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    picker = caller.get_by_test_id("upload-photo")
    assert await picker.get_attribute("accept") == "image/*,video/*"
    assert await caller.get_by_label("Send a photo").count() == 1
    await picker.set_input_files({"name": "photo.png", "mimeType": "image/png", "buffer": png})
    await caller.wait_for_selector("[data-testid=upload-status][data-state=sent]")
    assert (await caller.get_by_test_id("upload-status").inner_text()).strip() == "Sent"

    # The record has both, each with who added it and the hash of exactly what was sent.
    events = await live.app[keys.RECORD].read(session_id)
    added = [e.body for e in events if e.header.kind == "evidence_added"]
    assert len(added) == 2, added
    by_kind = {body["kind"]: body for body in added}
    assert by_kind["snapshot"]["role"] == "handler"
    assert by_kind["snapshot"]["content_type"] == "image/jpeg"
    assert by_kind["snapshot"]["sha256"] == snapshot_sha
    assert by_kind["upload"]["role"] == "victim"
    assert by_kind["upload"]["content_type"] == "image/png"
    assert by_kind["upload"]["sha256"] == hashlib.sha256(png).hexdigest()

    assert problems == [], problems
    for ctx in (caller_ctx, handler_ctx):
        await ctx.close()
