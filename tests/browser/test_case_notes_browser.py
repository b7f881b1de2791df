"""Risk and referrals in real Chromium: the handler fills DASH and a referral during a live
call, and an auditor then reads both on the session's record page."""

from __future__ import annotations

import re

from playwright.async_api import Browser

from server.accounts import StaffRole
from server.referrals import ReferralKind
from tests.support.browser import (
    collect_errors,
    create_session,
    expect_state,
    join_as_caller,
    link_from_outbox,
    new_context,
    sign_in,
)
from tests.support.live import PASSWORD, LiveServer

DASH_QUESTIONS = 24
YES_ANSWERS = 14  # the DASH threshold for high risk


async def test_handler_records_risk_and_referral_auditor_reads_them(
    live: LiveServer, browser: Browser
) -> None:
    await live.add_staff("hannah", StaffRole.HANDLER)
    await live.add_staff("audrey", StaffRole.AUDITOR)

    handler_ctx = await new_context(browser, live.url)
    handler = await sign_in(handler_ctx, "hannah", PASSWORD)
    problems: list[str] = []
    collect_errors(handler, problems)
    url = await create_session(handler, "CAD-5120", "07911 123456")
    session_id = url.rstrip("/").rsplit("/", 1)[-1]
    await expect_state(handler, "connected")

    caller_ctx = await new_context(browser, live.url, phone=True)
    caller = await caller_ctx.new_page()
    await join_as_caller(caller, await link_from_outbox(handler))
    await handler.wait_for_selector("[data-testid=caller-presence][data-state=present]")

    # The panel is collapsed until the handler opens it; opening it loads DASH from /api/forms.
    panel = handler.get_by_test_id("case-panel")
    assert await panel.evaluate("d => d.open") is False
    await panel.locator("summary").click()
    first_yes = handler.get_by_test_id("risk-q-q1-yes")
    await first_yes.wait_for(state="visible")
    assert await handler.locator("[data-testid^=risk-q-][data-testid$=-unknown]").count() \
        == DASH_QUESTIONS
    # Each radio has an accessible name (its label), so a screen reader can answer the form.
    questions = handler.get_by_test_id("risk-questions")
    assert await questions.get_by_role("radio", name="Not known").count() == DASH_QUESTIONS

    for n in range(1, DASH_QUESTIONS + 1):
        answer = "yes" if n <= YES_ANSWERS else "no"
        await handler.get_by_test_id(f"risk-q-q{n}-{answer}").check()

    # A downgrade without a written reason is refused, and the server's message is shown.
    await handler.get_by_test_id("risk-final-band").select_option("standard")
    await handler.get_by_test_id("risk-submit").click()
    error = handler.get_by_test_id("risk-error")
    await error.wait_for(state="visible")
    assert "reason" in (await error.inner_text()).lower()
    assert await handler.get_by_test_id("risk-result").get_attribute("data-band") == "none"

    # Keeping the computed band: 14 yes answers are high risk.
    await handler.get_by_test_id("risk-final-band").select_option("")
    await handler.get_by_test_id("risk-submit").click()
    await handler.wait_for_selector("[data-testid=risk-result][data-band=high]")
    result = await handler.get_by_test_id("risk-result").inner_text()
    assert str(YES_ANSWERS) in result and "high" in result.lower(), result
    assert not await error.is_visible()

    # The referral form offers exactly the server's ten kinds.
    kinds = await handler.get_by_test_id("referral-kind").locator("option").evaluate_all(
        "options => options.map(o => o.value)"
    )
    assert sorted(kinds) == sorted(k.value for k in ReferralKind)
    await handler.get_by_test_id("referral-kind").select_option("marac")
    await handler.get_by_test_id("referral-status").select_option("made")
    await handler.get_by_test_id("referral-safe-no").check()
    await handler.get_by_test_id("referral-notes").fill("Referred to MARAC after DASH")
    await handler.get_by_test_id("referral-submit").click()
    saved = handler.get_by_test_id("referral-list").locator("li[data-kind=marac]")
    await saved.wait_for()
    assert await saved.get_attribute("data-status") == "made"
    assert "MARAC" in await saved.inner_text()

    # The auditor reads the record: the assessment (band high) and the MARAC referral.
    auditor_ctx = await new_context(browser, live.url)
    auditor = await sign_in(auditor_ctx, "audrey", PASSWORD)
    await auditor.goto(f"/records/{session_id}")
    risk = auditor.locator("[data-testid=record-event][data-kind=risk_assessment]")
    assert await risk.count() == 1  # the refused downgrade left nothing on the record
    risk_text = await risk.inner_text()
    assert re.search(r"Band\s+high", risk_text), risk_text
    assert re.search(r"Score\s+14", risk_text), risk_text
    referral = auditor.locator("[data-testid=record-event][data-kind=referral]")
    assert await referral.count() == 1
    referral_text = await referral.inner_text()
    assert "MARAC" in referral_text and re.search(r"made", referral_text), referral_text

    # The refused downgrade is a 409 (downgrade_needs_reason) the browser logs as a failed
    # fetch; nothing else went wrong.
    assert [p for p in problems if "409" not in p] == [], problems

    for ctx in (caller_ctx, handler_ctx, auditor_ctx):
        await ctx.close()
