"""Uploads have a quota, a concurrency cap and bounded memory (issue 11, finding 6).

The attack: one caller's credential sent 15 x 20 MiB in seven seconds, and twenty concurrent
20 MiB uploads took the server from 425 MiB to 1.36 GiB. Now a session holds at most
`evidence_session_bytes` (200 MiB) and `evidence_session_files` (30) snapshots and uploads,
refused beyond with 413 `quota_exceeded` and nothing lost of what was accepted; one sender has
at most `uploads_per_sender` (2) uploads arriving at once, more get 429 `busy`; and an upload
is sealed in 64 KiB chunks as it arrives, so twenty at once leave the server's peak memory
(VmHWM of the real process) within 150 MiB of where it was. Files written before chunking
(one AES-GCM blob) still open.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from server import keys
from server.accounts import StaffRole
from server.evidence import ADDED_KIND
from server.evidence_routes import UPLOAD_GATE
from server.invites import secret_digest
from server.private_files import write_private_atomic
from server.record.crypto import generate_key, seal
from tests.integration.test_evidence import JPEG, PNG, files, post_raw, setup
from tests.support.live import LINK, LiveServer, free_port, start_server
from tests.support.record import backend_env
from tests.support.served import wait_until_answering

MiB = 1024 * 1024
BIG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + os.urandom(20 * MiB - 11)  # 20 MiB exactly
ROOT = Path(__file__).resolve().parents[2]
DEMO_PASSWORD = "demo password for the upload tests"


async def upload(http: aiohttp.ClientSession, url: str, credential: str,
                 data: bytes | AsyncIterator[bytes]) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{url}/j/upload", data=data,
                         headers={"Authorization": f"Bearer {credential}"}) as response:
        return response.status, dict(await response.json())


async def added(live: LiveServer, session_id: str) -> list[dict[str, Any]]:
    return [e.body for e in await live.app[keys.RECORD].read(session_id)
            if e.header.kind == ADDED_KIND]


async def test_fifteen_20_mib_uploads_stop_at_the_quota_and_keep_what_was_accepted(
    backend: dict[str, Any], tmp_path: Path,
) -> None:
    live = await start_server(tmp_path, **backend)  # the default limits
    try:
        _, session_id, credential = await setup(live)
        http = live.new_http()
        results: list[tuple[int, dict[str, Any]]] = []
        for _ in range(0, 15, 2):  # two at a time, as many as one sender may
            pair = [upload(http, live.url, credential, BIG)
                    for _ in range(min(2, 15 - len(results)))]
            results += await asyncio.gather(*pair)
        statuses = [status for status, _ in results]
        assert statuses == [201] * 10 + [413] * 5, statuses
        for _, body in results[10:]:
            assert body["error"] == "quota_exceeded", body
            assert "limit" in body["message"] and "safe" in body["message"]
        accepted = [body for _, body in results[:10]]
        assert {b["sha256"] for b in accepted} == {hashlib.sha256(BIG).hexdigest()}
        # Nothing lost: ten files on the record and on disk, and no half-written ones.
        assert sorted(b["evidence"] for b in await added(live, session_id)) == sorted(
            b["id"] for b in accepted)
        assert sorted(p.name for p in files(live, session_id)) == sorted(
            f"{b['id']}.bin" for b in accepted)
        auditor = await live.staff_client("audrey", StaffRole.AUDITOR)
        for body in accepted[:2] + accepted[-1:]:
            digest = hashlib.sha256()
            async with auditor.http.get(
                    f"{live.url}/api/sessions/{session_id}/evidence/{body['id']}") as response:
                assert response.status == 200
                async for piece in response.content.iter_chunked(256 * 1024):
                    digest.update(piece)
            assert digest.hexdigest() == body["sha256"]
    finally:
        await live.stop()


async def test_the_file_count_quota_counts_uploads_and_snapshots_not_stills(
    backend: dict[str, Any], tmp_path: Path,
) -> None:
    live = await start_server(tmp_path, evidence_session_files=3, **backend)
    try:
        handler, session_id, credential = await setup(live)
        bearer = {"Authorization": f"Bearer {credential}"}
        assert (await post_raw(live, handler, f"/api/sessions/{session_id}/snapshots", PNG,
                               {}))[0] == 201
        for _ in range(2):
            assert (await post_raw(live, None, "/j/upload", JPEG, bearer))[0] == 201
        status, body = await post_raw(live, None, "/j/upload", JPEG, bearer)
        assert (status, body["error"]) == (413, "quota_exceeded"), body
        status, body = await post_raw(live, handler, f"/api/sessions/{session_id}/snapshots",
                                      PNG, {})
        assert (status, body["error"]) == (413, "quota_exceeded"), body
        status, body = await post_raw(live, None, "/j/still", JPEG, bearer)
        assert status == 201, body  # stills are paced, not counted
        assert len(await added(live, session_id)) == 4
        assert len(files(live, session_id)) == 4
    finally:
        await live.stop()


async def test_a_third_upload_at_once_from_one_credential_is_refused(
    backend: dict[str, Any], tmp_path: Path,
) -> None:
    live = await start_server(tmp_path, **backend)
    try:
        handler, session_id, credential = await setup(live)
        release = asyncio.Event()

        async def held_body() -> AsyncIterator[bytes]:
            yield JPEG
            await release.wait()
            yield os.urandom(1000)

        http = live.new_http()
        first = asyncio.create_task(upload(http, live.url, credential, held_body()))
        second = asyncio.create_task(upload(live.new_http(), live.url, credential,
                                            held_body()))
        gate = live.app[UPLOAD_GATE]
        sender = f"caller:{secret_digest(credential)}"
        while gate.open_for(sender) < 2:
            await asyncio.sleep(0.02)
        for path in ("/j/upload", "/j/still"):
            async with live.new_http().post(f"{live.url}{path}", data=JPEG, headers={
                    "Authorization": f"Bearer {credential}"}) as response:
                body = await response.json()
                assert response.status == 429, body
                assert body["error"] == "busy" and response.headers["Retry-After"] == "2"
        # The handler is another sender: not held up by the caller's uploads.
        assert (await post_raw(live, handler, f"/api/sessions/{session_id}/snapshots", PNG,
                               {}))[0] == 201
        release.set()
        assert [(await first)[0], (await second)[0]] == [201, 201]
        assert gate.open_for(sender) == 0
        assert (await upload(http, live.url, credential, JPEG))[0] == 201
        assert len(await added(live, session_id)) == 4
    finally:
        await live.stop()


async def test_a_file_sealed_before_chunking_still_opens(
    backend: dict[str, Any], tmp_path: Path,
) -> None:
    """Evidence written as one AES-GCM blob (no `sealed` on its record) is read as before."""
    from server.evidence import _aad

    live = await start_server(tmp_path, **backend)
    try:
        _, session_id, _ = await setup(live)
        evidence_id, key = "ab" * 16, generate_key()
        nonce, ciphertext = seal(key, JPEG, _aad(session_id, evidence_id))
        write_private_atomic(live.config.data_dir / "evidence" / session_id
                             / f"{evidence_id}.bin", nonce + ciphertext)
        await live.app[keys.RECORD].append(session_id, ADDED_KIND, {
            "evidence": evidence_id, "kind": "upload", "content_type": "image/jpeg",
            "size": len(JPEG), "sha256": hashlib.sha256(JPEG).hexdigest(),
            "key": base64.b64encode(key).decode(), "role": "victim"})
        auditor = await live.staff_client("audrey", StaffRole.AUDITOR)
        async with auditor.http.get(
                f"{live.url}/api/sessions/{session_id}/evidence/{evidence_id}") as response:
            assert response.status == 200
            assert await response.read() == JPEG
    finally:
        await live.stop()


# --- memory, on a real `erv run` process ---------------------------------------------------


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


async def test_twenty_concurrent_20_mib_uploads_keep_the_servers_memory_bounded(
    backend: dict[str, Any], tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ERV_PORT": str(port), "ERV_TLS": "false", "ERV_PUBLIC_URL": url,
           "ERV_SECURE_COOKIES": "false", "ERV_DATA_DIR": str(tmp_path / "data"),
           "ERV_DEMO_PASSWORD": DEMO_PASSWORD}
    env.pop("ERV_REDIS_URL", None)
    env.update(backend_env(backend))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "run", "--demo", env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(60):
            while not (line := (await proc.stdout.readline()).decode()).startswith("serving"):
                assert line, "the server exited before serving"
        await wait_until_answering(url)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as staff:
            async with staff.post(f"{url}/login", headers={"Accept": "application/json"},
                                  data={"username": "handler",
                                        "password": DEMO_PASSWORD}) as response:
                assert response.status == 200
                csrf = (await response.json())["csrf_token"]
            credentials = []
            async with aiohttp.ClientSession() as phone:
                for number in range(10):  # ten calls, each caller sending two at once
                    async with staff.post(f"{url}/api/sessions", headers={"X-CSRF-Token": csrf},
                                          json={"incident_ref": f"CAD-{number}",
                                                "phone": "07911 123456"}) as response:
                        assert response.status == 201, await response.text()
                    async with staff.get(f"{url}/api/outbox") as response:
                        newest = (await response.json())["messages"][0]["body"]
                    token = LINK.search(newest)
                    assert token
                    async with phone.post(f"{url}/j/{token.group(1)}",
                                          headers={"Accept": "application/json"}) as response:
                        credentials.append((await response.json())["credential"])
                # Warm up (the first upload imports and allocates what every later one
                # shares), then measure from there.
                assert (await upload(phone, url, credentials[0], JPEG))[0] == 201
                before = memory(proc.pid)["VmRSS"]
                results = await asyncio.gather(*(
                    upload(phone, url, credential, BIG)
                    for credential in credentials for _ in range(2)))
                peak = memory(proc.pid)["VmHWM"]
        assert [status for status, _ in results] == [201] * 20, results
        growth = peak - before
        print(f"peak memory growth under 20 concurrent 20 MiB uploads: {growth / MiB:.0f} MiB")
        assert growth < 150 * MiB, f"peak memory grew {growth / MiB:.0f} MiB under the load"
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
