"""Static files: gzip when asked, exact bytes either way, never outside web/static."""

from __future__ import annotations

import gzip

import aiohttp

from server.app import WEB_DIR
from tests.support.live import LiveServer


async def test_scripts_are_gzipped_when_the_browser_accepts_it(live: LiveServer) -> None:
    source = (WEB_DIR / "static/js/signal.js").read_bytes()
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        async with http.get(f"{live.url}/static/js/signal.js",
                            headers={"Accept-Encoding": "gzip"}) as r:
            assert r.status == 200
            assert r.headers["Content-Encoding"] == "gzip"
            assert r.headers["Content-Type"].startswith("text/javascript")
            assert r.headers["Cache-Control"] == "no-store"
            packed = await r.read()
        assert gzip.decompress(packed) == source and len(packed) < len(source) / 2
        async with http.get(f"{live.url}/static/js/signal.js",
                            headers={"Accept-Encoding": "identity"}) as r:
            assert "Content-Encoding" not in r.headers
            assert await r.read() == source


async def test_nothing_outside_the_static_folder_is_served(live: LiveServer) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/static/../server/config.py", "/static/%2e%2e/server/config.py",
                     "/static/js/../../templates/base.html", "/static/js/nope.js",
                     "/static/js/"):
            async with http.get(f"{live.url}{path}") as r:
                assert r.status == 404, path
                assert "Config" not in await r.text()

