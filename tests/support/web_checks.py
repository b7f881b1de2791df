"""Checks on raw HTTP responses shared by the staff and caller-link tests."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse, web

from server.app import create_app
from server.config import Config
from tests.support.live import TEST_SCRYPT_N, LiveServer, free_port

TRACEBACK_WORDS = ("Traceback", "Exception", "File \"", "Error:", "aiohttp", "sqlite", "server/")
LINE_NUMBER = re.compile(r"line \d+")


@dataclass(frozen=True)
class SetCookie:
    """One Set-Cookie header, split into its name, value and attributes (names lower-cased)."""

    name: str
    value: str
    attributes: dict[str, str]


def set_cookies(response: ClientResponse) -> list[SetCookie]:
    cookies = []
    for header in response.headers.getall("Set-Cookie", []):
        first, *rest = (part.strip() for part in header.split(";"))
        name, _, value = first.partition("=")
        attributes = {}
        for part in rest:
            key, _, attr_value = part.partition("=")
            attributes[key.strip().lower()] = attr_value.strip()
        cookies.append(SetCookie(name, value, attributes))
    return cookies


def assert_no_store_and_csp(response: ClientResponse) -> None:
    """Nothing cached anywhere, and a strict CSP that allows no inline script or style."""
    where = f"{response.method} {response.url.path} -> {response.status}"
    assert response.headers.get("Cache-Control") == "no-store", where
    csp = response.headers.get("Content-Security-Policy", "")
    assert "default-src 'self'" in csp, where
    assert "script-src 'self'" in csp, where
    assert "unsafe-inline" not in csp, where
    assert "unsafe-eval" not in csp, where


def assert_victim_page_headers(response: ClientResponse) -> None:
    """What every /j/ answer must carry: no cookie, no referrer, no cache, the CSP."""
    assert_no_store_and_csp(response)
    assert response.headers.get("Referrer-Policy") == "no-referrer"
    assert "Set-Cookie" not in response.headers, response.headers.getall("Set-Cookie")


def assert_calm(text: str) -> None:
    """A page a frightened caller may read: no stack trace or internals on it."""
    for word in TRACEBACK_WORDS:
        assert word not in text, (word, text)
    assert not LINE_NUMBER.search(text), text


async def start_server_with(tmp_path: Path, **overrides: Any) -> LiveServer:
    """Like live.start_server, but any setting may be overridden, secure_cookies included
    (start_server passes secure_cookies itself, so it cannot take it as an override)."""
    port = free_port()
    base = replace(
        Config(),
        host="127.0.0.1",
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        data_dir=tmp_path / "data",
        tls=False,
        secure_cookies=False,
        scrypt_n=TEST_SCRYPT_N,
    )
    config = replace(base, **overrides)
    app = create_app(config)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return LiveServer(config, app, runner, f"http://127.0.0.1:{port}")
