"""Whatever arrives on the wire, no log line holds a token, a phone number or a raw control
byte: malformed request lines, bad methods, control bytes and over-long lines each get a
plain 400, the access log does not crash on them, and the node goes on serving."""

from __future__ import annotations

import asyncio
import re
import secrets
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.erv_process import Process, start_erv

TOKEN = secrets.token_urlsafe(24)
PHONE = "07911 123456"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Process]:
    process = await start_erv(tmp_path, {}, demo=False)
    try:
        yield process
    finally:
        await process.stop()


async def raw_exchange(served: Process, request: bytes) -> bytes:
    """Send `request` as it is over TLS; the whole answer, up to the server's close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port, ssl=served.ssl,
                                                   server_hostname="localhost")
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read(65536)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


BAD_REQUESTS = {
    "bad version": f"GET /j/{TOKEN} HTTP/1.x\r\nHost: localhost\r\n\r\n".encode(),
    "no version": f"GET /j/{TOKEN}\r\n\r\n".encode(),
    "bad method": f"GE(T /j/{TOKEN} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode(),
    "control byte in method": f"G\x01T /j/{TOKEN} HTTP/1.1\r\n\r\n".encode(),
    "NUL in path": f"GET /j/{TOKEN}\x00x HTTP/1.1\r\nHost: localhost\r\n\r\n".encode(),
    "escape codes in path": f"GET /j/{TOKEN}\x1b[2J HTTP/1.1\r\n\r\n".encode(),
    "newline forging a log line": f"GET /j/{TOKEN}\rERROR forged HTTP/1.1\r\n\r\n".encode(),
    "phone in a bad line": f"GET /j/{PHONE} HTTP/1.x\r\n\r\n".encode(),
    "phone in a bad header": f"GET /j/{TOKEN} HTTP/1.1\r\nX-Phone {PHONE}\r\n\r\n".encode(),
    "token in a bad header": f"GET / HTTP/1.1\r\nCookie\x01: {TOKEN}\r\n\r\n".encode(),
    "over-long line": f"GET /j/{TOKEN}?{'a' * 9000} HTTP/1.1\r\n\r\n".encode(),
    "over-long header": f"GET /j/{TOKEN} HTTP/1.1\r\nX-A: {TOKEN}{'b' * 9000}\r\n\r\n".encode(),
    "binary garbage": b"\x16\x03\x01\x02\x00" + TOKEN.encode() + b"\r\n\r\n",
}


async def test_malformed_requests_get_a_400_and_leave_nothing_in_the_log(
        served: Process) -> None:
    answers = {name: await raw_exchange(served, request)
               for name, request in BAD_REQUESTS.items()}
    # A good request with the token in its path is logged by route pattern as ever.
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{served.url}/j/{TOKEN}", ssl=served.ssl) as response:
            assert response.status in {200, 404, 410}
        async with http.get(f"{served.url}/healthz", ssl=served.ssl) as response:
            assert response.status == 200  # still serving
    for name, answer in answers.items():
        # (HTTP/0.9 for the line with no version: aiohttp answers in the request's version)
        assert re.match(rb"HTTP/[01]\.[019] 400 ", answer), (name, answer[:200])
        assert b"Server: erv\r\n" in answer and b'"error": "bad_request"' in answer, name
        assert TOKEN.encode() not in answer, name
    logs = await served.output()
    assert "Traceback" not in logs and "AssertionError" not in logs, logs[-3000:]
    for secret in (TOKEN, PHONE, PHONE.replace(" ", ""), "7911", "123456", "\x1b", "\x00",
                   "\x01", "\rERROR forged"):
        assert secret not in logs, f"{secret!r} leaked into the logs:\n{logs[-3000:]}"
    for line in logs.splitlines():
        assert "forged" not in line or "ERROR forged" not in line.split(" ", 3)[-1][:12]
