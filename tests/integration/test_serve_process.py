"""`erv run --demo` as a real process: HTTPS with the generated dev certificate, demo accounts,
and logs that never hold a phone number, a token, a link or chat text."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.erv_process import Process, start_erv
from tests.support.record import backend_env

DEMO_PASSWORD = "demo password for tests"


@pytest.fixture
async def served(backend: dict[str, Any], tmp_path: Path) -> AsyncIterator[Process]:
    process = await start_erv(tmp_path, {"ERV_DEMO_PASSWORD": DEMO_PASSWORD,
                                         **backend_env(backend)})
    try:
        yield process
    finally:
        await process.stop()


async def test_serves_https_with_dev_certificate_and_demo_accounts(served: Process) -> None:
    printed = "".join(served.stdout)
    for role in ("handler", "specialist", "supervisor", "auditor"):
        assert re.search(rf"demo account\s+{role}\s+password: {DEMO_PASSWORD}", printed)
    assert served.cert.exists() and (served.cert.parent / "key.pem").stat().st_mode & 0o077 == 0

    jar = aiohttp.CookieJar()
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        # The certificate verifies for localhost and for 127.0.0.1.
        ip_url = served.url.replace("localhost", "127.0.0.1")
        async with http.get(f"{ip_url}/healthz", ssl=served.ssl) as response:
            assert response.status == 200
            assert response.headers["Strict-Transport-Security"].startswith("max-age=")

        async with http.post(f"{served.url}/login", ssl=served.ssl,
                             data={"username": "handler", "password": DEMO_PASSWORD},
                             headers={"Accept": "application/json"}) as response:
            assert response.status == 200
            csrf = (await response.json())["csrf_token"]
            cookie = response.headers["Set-Cookie"]
            assert cookie.startswith("__Host-erv=")
            for flag in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
                assert flag in cookie
        headers = {"X-CSRF-Token": csrf}
        async with http.post(f"{served.url}/api/sessions", ssl=served.ssl, headers=headers,
                             json={"incident_ref": "CAD-77", "phone": "07555 987654"}) as r:
            assert r.status == 201, await r.text()
            session_id = (await r.json())["session"]["id"]
        async with http.get(f"{served.url}/api/outbox", ssl=served.ssl) as r:
            body = (await r.json())["messages"][0]["body"]
        token = body.split("/j/")[1].split()[0]

        # The caller opens the link, redeems it, joins and chats; the handler chats back.
        async with aiohttp.ClientSession() as phone:
            async with phone.get(f"{served.url}/j/{token}", ssl=served.ssl) as r:
                assert r.status == 200 and "Set-Cookie" not in r.headers
            async with phone.post(f"{served.url}/j/{token}", ssl=served.ssl,
                                  headers={"Accept": "application/json"}) as r:
                credential = (await r.json())["credential"]
            staff_ws = await http.ws_connect(f"{served.url}/ws", ssl=served.ssl)
            await staff_ws.send_str(json.dumps({"type": "hello", "v": 1, "session": session_id}))
            assert json.loads((await staff_ws.receive()).data)["type"] == "welcome"
            caller_ws = await phone.ws_connect(f"{served.url}/ws", ssl=served.ssl)
            await caller_ws.send_str(json.dumps({"type": "hello", "v": 1,
                                                 "credential": credential}))
            assert json.loads((await caller_ws.receive()).data)["type"] == "welcome"
            await caller_ws.send_str(json.dumps({"type": "chat", "text": "he has a knife"}))
            await caller_ws.send_str(json.dumps({"type": "location", "lat": 51.501364,
                                                 "lon": -0.14189, "accuracy": 12, "ts": 1}))
            await staff_ws.send_str(json.dumps({"type": "advice", "text": "stalking pattern"}))
            seen = []
            async with asyncio.timeout(5):
                while "location" not in seen or "advice" not in seen:
                    seen.append(json.loads((await staff_ws.receive()).data)["type"])
            await caller_ws.close()
            await staff_ws.close()

    logs = await served.output()
    assert "GET /j/{token}" in logs  # the access log names the route...
    for secret in (token, credential, csrf, "7555", "987654", "he has a knife",
                   "stalking pattern", "51.501", "-0.141"):
        assert secret not in logs, f"{secret!r} leaked into the logs"  # ...never the values
