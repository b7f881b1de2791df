"""The demo outbox shows each member of staff only what they may act on (issue 11, finding 5).

A handler sees the texts of their own sessions, with the link (the demo stand-in for the
caller's phone) and the number masked; a colleague's texts are not there at all, so their
caller's link cannot be redeemed from it. A supervisor oversees every session: they see every
text's masked number and time, never a link. Admins run accounts, not calls: no outbox.
A service whose public address is not loopback refuses to start with the console gateway
unless told that is meant, and says so in a WARNING line that holds no secret.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from server.accounts import StaffRole
from server.phone import masked
from tests.support.live import LINK, LiveServer, free_port
from tests.support.served import wait_until_answering

E164_A, PHONE_A = "+447911123456", "07911 123456"
E164_B, PHONE_B = "+447912654321", "07912 654321"
ROOT = Path(__file__).resolve().parents[2]


def whole_numbers(e164: str) -> list[str]:
    national = "0" + e164[3:]
    return [e164, e164[1:], national, e164[3:], national[:5] + " " + national[5:]]


async def text_of(client: Any, path: str) -> tuple[int, str]:
    async with client.http.get(f"{client.server.url}{path}") as response:
        return response.status, await response.text()


async def test_staff_see_only_the_texts_of_sessions_they_may_act_on(live: LiveServer) -> None:
    hannah = await live.staff_client("hannah", StaffRole.HANDLER)
    harry = await live.staff_client("harry", StaffRole.HANDLER)
    one = await hannah.create_session(phone=PHONE_A, ref="CAD-1")
    two = await harry.create_session(phone=PHONE_B, ref="CAD-2")
    newest, oldest = (LINK.search(e.body) for e in live.outbox())  # newest first
    assert newest and oldest
    token_of = {two: newest.group(1), one: oldest.group(1)}

    # A handler: their own texts, link included, number masked; none of a colleague's.
    _, body = await harry.api("GET", "/api/outbox", expect=200)
    assert token_of[one] not in str(body), "a colleague's caller's link"
    assert E164_B not in str(body), "the whole number"
    assert [m["session"] for m in body["messages"]] == [two]
    [mine] = body["messages"]
    assert mine["to"] == masked(E164_B)
    assert token_of[two] in mine["body"]
    status, page = await text_of(harry, "/outbox")
    assert status == 200 and token_of[two] in page and masked(E164_B) in page
    for answer in (str(body), page):
        assert token_of[one] not in answer, "a colleague's caller's link"
        assert masked(E164_A) not in answer
        for whole in whole_numbers(E164_A) + whole_numbers(E164_B):
            assert whole not in answer, whole

    # The colleague's caller's link cannot be found, so it cannot be redeemed as the victim.
    _, body = await hannah.api("GET", "/api/outbox", expect=200)
    assert [m["session"] for m in body["messages"]] == [one]

    # A supervisor: every text, masked, and no link.
    supervisor = await live.staff_client("sue", StaffRole.SUPERVISOR)
    _, body = await supervisor.api("GET", "/api/outbox", expect=200)
    assert {m["session"] for m in body["messages"]} == {one, two}
    assert {m["to"] for m in body["messages"]} == {masked(E164_A), masked(E164_B)}
    status, page = await text_of(supervisor, "/outbox")
    assert status == 200
    for answer in (str(body), page):
        for token in token_of.values():
            assert token not in answer
        assert "/j/" not in answer
        for whole in whole_numbers(E164_A) + whole_numbers(E164_B):
            assert whole not in answer, whole

    # Admins and auditors: not theirs.
    admin = await live.staff_client("ada", StaffRole.ADMIN)
    auditor = await live.staff_client("alex", StaffRole.AUDITOR)
    for outsider in (admin, auditor):
        _, body = await outsider.api("GET", "/api/outbox", expect=403)
        assert body["error"] == "forbidden"
        status, page = await text_of(outsider, "/outbox")
        assert status == 403
        for token in token_of.values():
            assert token not in page


async def start_erv(tmp_path: Path, **env: str) -> tuple[int | None, str]:
    """`erv run` with the console gateway; (exit code or None if it served, its output)."""
    port = free_port()
    settings = {**os.environ, "ERV_PORT": str(port), "ERV_TLS": "false",
                "ERV_DATA_DIR": str(tmp_path / "data"), "ERV_SMS_GATEWAY": "console", **env}
    settings.pop("ERV_REDIS_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "run", env=settings, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    lines: list[str] = []
    served = False
    try:
        async with asyncio.timeout(30):
            while line := (await proc.stdout.readline()).decode():
                lines.append(line)
                if line.startswith("serving "):
                    break
        served = proc.returncode is None and bool(lines) and lines[-1].startswith("serving ")
        if served:
            await wait_until_answering(f"http://127.0.0.1:{port}")
    finally:
        if proc.returncode is None:
            proc.terminate()
        rest, _ = await proc.communicate()
        lines.append(rest.decode())
    return (None if served else proc.returncode), "".join(lines)


async def test_console_gateway_on_a_public_address_refuses_to_start(tmp_path: Path) -> None:
    code, output = await start_erv(tmp_path, ERV_PUBLIC_URL="https://erv.example.org")
    assert code not in (None, 0), output
    assert "ERV_SMS_GATEWAY" in output and "console" in output, output
    assert "ERV_SMS_CONSOLE_PUBLIC" in output, output


async def test_console_gateway_on_a_public_address_when_meant_warns(tmp_path: Path) -> None:
    code, output = await start_erv(tmp_path, ERV_PUBLIC_URL="https://erv.example.org",
                                   ERV_SMS_CONSOLE_PUBLIC="true",
                                   ERV_DEMO_PASSWORD="not for the log")
    assert code is None, output
    warnings = [line for line in output.splitlines()
                if "WARNING" in line and "ERV_SMS_GATEWAY is console" in line]
    assert warnings, output
    assert all("not for the log" not in line for line in warnings)


async def test_console_gateway_on_loopback_starts_quietly(tmp_path: Path) -> None:
    code, output = await start_erv(tmp_path, ERV_PUBLIC_URL="http://127.0.0.1:9")
    assert code is None, output
    assert not [line for line in output.splitlines()
                if "WARNING" in line and "ERV_SMS_GATEWAY is console" in line], output
