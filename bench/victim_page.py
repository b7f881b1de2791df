"""Part 5: the caller's page on a weak mobile link, in Chromium.

The link is opened (GET /j/<token>, which never redeems) in a fresh phone-sized context with
the cache off and the network throttled through the DevTools protocol
(Network.emulateNetworkConditions: 400 kbit/s down and up, 400 ms added to every request). We
count the bytes on the wire for every request until the network is idle, and note when the
consent screen (the camera/microphone/location choices and Join) is first laid out, from the
page's own clock (navigation start = 0).
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

from bench.common import env_int, log
from bench.erv_setup import Control
from bench.servers import start_erv

DOWN_KBIT = 400
UP_KBIT = 400
LATENCY_MS = 400

# Runs before the page's own scripts: the first animation frame in which the consent choices
# have a layout box (rendering waits for the stylesheet, so this is when they can be seen).
WATCH = """
(() => {
  const look = () => {
    const box = document.querySelector('[data-testid=consent-camera]');
    const join = document.querySelector('[data-testid=join]');
    if (box && join && box.getBoundingClientRect().height > 0
        && join.getBoundingClientRect().height > 0) {
      window.__consentShown = performance.now();
      return;
    }
    requestAnimationFrame(look);
  };
  requestAnimationFrame(look);
})();
"""


async def _one(browser: Any, link: str) -> dict[str, float]:
    from tests.support.browser import PHONE

    context = await browser.new_context(**PHONE)
    try:
        await context.add_init_script(WATCH)
        page = await context.new_page()
        cdp = await context.new_cdp_session(page)
        await cdp.send("Network.enable")
        await cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
        await cdp.send("Network.emulateNetworkConditions", {
            "offline": False, "latency": LATENCY_MS,
            "downloadThroughput": DOWN_KBIT * 1000 / 8, "uploadThroughput": UP_KBIT * 1000 / 8,
        })
        wire: dict[str, float] = {}
        cdp.on("Network.loadingFinished",
               lambda e: wire.__setitem__(e["requestId"], float(e["encodedDataLength"])))
        await page.goto(link, wait_until="commit")
        await page.wait_for_function("() => window.__consentShown !== undefined",
                                     timeout=60_000, polling=50)
        await page.wait_for_load_state("networkidle", timeout=60_000)
        timings = await page.evaluate("""() => {
          const nav = performance.getEntriesByType('navigation')[0];
          const fcp = performance.getEntriesByName('first-contentful-paint')[0];
          return {consent: window.__consentShown, fcp: fcp ? fcp.startTime : -1,
                  dcl: nav.domContentLoadedEventEnd, load: nav.loadEventEnd};
        }""")
        return {
            "consent_ms": float(timings["consent"]), "fcp_ms": float(timings["fcp"]),
            "dom_content_loaded_ms": float(timings["dcl"]), "load_ms": float(timings["load"]),
            "bytes": sum(wire.values()), "requests": float(len(wire)),
        }
    finally:
        await context.close()


def _exists(path: str) -> bool:
    return Path(path).exists()


async def victim_page(tmp: Path, logs: Path) -> dict[str, Any]:
    chromium = os.environ.get("ERV_CHROMIUM", "/usr/bin/chromium")
    if not _exists(chromium):
        return {"skipped": f"Chromium not found at {chromium} (make system-deps)"}
    try:
        from playwright.async_api import async_playwright

        from tests.support.browser import CHROMIUM_ARGS
    except ImportError as exc:
        return {"skipped": f"Playwright is not installed ({exc})"}
    runs = env_int("ERV_BENCH_PAGE_RUNS", 3)
    log(f"victim page: {runs} cold loads at {DOWN_KBIT} kbit/s, {LATENCY_MS} ms")
    server = await start_erv("erv-page", tmp / "page", logs)
    control = await Control(server.url).open()
    try:
        _, invite = await control.handler.create_session()
        link = f"{server.url}/j/{await control.handler.token_for(invite)}"
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium, headless=True,
                                                       args=CHROMIUM_ARGS)
            try:
                samples = [await _one(browser, link) for _ in range(runs)]
            finally:
                await browser.close()
    finally:
        await control.close()
        server.stop()
    summary: dict[str, Any] = {
        "runs": runs, "down_kbit_s": DOWN_KBIT, "up_kbit_s": UP_KBIT, "latency_ms": LATENCY_MS,
    }
    for name in samples[0]:
        summary[name] = statistics.median(s[name] for s in samples)
    log(f"  victim page: consent screen at {summary['consent_ms']:.0f} ms, "
        f"{summary['bytes'] / 1024:.1f} KiB in {summary['requests']:.0f} requests")
    return summary
