"""Waiting for an `erv run` subprocess to answer."""

from __future__ import annotations

import asyncio

import aiohttp


async def wait_until_answering(url: str) -> None:
    """Until `url`/healthz answers at all (start-up, and its log lines, are then done)."""
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            try:
                async with http.get(f"{url}/healthz"):
                    return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
