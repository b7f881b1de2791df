"""axe-core (bundled with axe-playwright-python) finds no serious or critical violations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import axe_playwright_python
from playwright.async_api import Browser, Page

from server.accounts import StaffRole
from tests.support.browser import create_session, link_from_outbox, new_context, sign_in
from tests.support.live import PASSWORD, LiveServer

AXE = Path(axe_playwright_python.__file__).with_name("axe.min.js")


async def page_in(browser: Browser, live: LiveServer, phone: bool = False) -> Page:
    context = await new_context(browser, live.url, phone=phone, bypass_csp=True)
    return await context.new_page()


async def serious_violations(page: Page) -> list[dict[str, Any]]:
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


async def test_pages_have_no_serious_accessibility_violations(live: LiveServer,
                                                              browser: Browser) -> None:
    await live.add_staff("hannah", StaffRole.HANDLER)
    await live.add_staff("sam", StaffRole.SPECIALIST)
    handler = await sign_in(await new_context(browser, live.url, bypass_csp=True), "hannah",
                            PASSWORD)
    found: dict[str, list[dict[str, Any]]] = {}
    await handler.goto("/console")
    found["handler console"] = await serious_violations(handler)
    await create_session(handler, "CAD-1", "07911 123456")
    found["call view"] = await serious_violations(handler)
    link = await link_from_outbox(handler)

    caller = await page_in(browser, live, phone=True)
    await caller.goto(link)
    found["caller page"] = await serious_violations(caller)

    specialist = await sign_in(await new_context(browser, live.url, bypass_csp=True), "sam",
                               PASSWORD)
    await specialist.goto("/specialist")
    found["specialist desk"] = await serious_violations(specialist)
    login = await page_in(browser, live)
    await login.goto("/login")
    found["sign-in"] = await serious_violations(login)

    assert all(not v for v in found.values()), found
