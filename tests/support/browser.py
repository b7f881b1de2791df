"""Chromium settings and helpers for the browser tests (fixtures: tests/browser/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

from playwright.async_api import Browser, BrowserContext

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


async def new_context(browser: Browser, base_url: str, phone: bool = False) -> BrowserContext:
    settings = PHONE if phone else DESKTOP
    context = await browser.new_context(base_url=base_url, **settings)  # type: ignore[arg-type]
    return context


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
