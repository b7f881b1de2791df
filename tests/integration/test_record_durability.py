"""SIGKILL the server while it writes: every acknowledged write survives and the chain holds.

The server process is killed with requests still in flight. Each session whose creation was
answered 201 must, after the kill, have its record events on disk, and the chain must verify.
On Redis the Redis server is then SIGKILLed too and restarted from its append-only file.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.live import free_port
from tests.support.record import backend_env, run_erv, stopped_stores
from tests.support.redis_server import RedisServer

PASSWORD = "durability test password"


async def start(data_dir: Path, port: int,
                backend: dict[str, Any]) -> asyncio.subprocess.Process:
    env = {**os.environ, "ERV_PORT": str(port), "ERV_DATA_DIR": str(data_dir),
           "ERV_TLS": "false", "ERV_SECURE_COOKIES": "false", "ERV_DEMO_PASSWORD": PASSWORD}
    for name in ("ERV_RECORD_KEYS", "ERV_REDIS_URL"):
        env.pop(name, None)
    env.update(backend_env(backend))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "run", "--demo", env=env,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        while not (await proc.stdout.readline()).startswith(b"serving "):
            pass
    return proc


async def create_sessions(url: str, acknowledged: list[str], stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        for _ in range(100):
            try:
                async with http.post(f"{url}/login", data={"username": "handler",
                                                           "password": PASSWORD},
                                     headers={"Accept": "application/json"}) as r:
                    if r.status == 200:
                        csrf = (await r.json())["csrf_token"]
                        break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        while not stop.is_set():
            try:
                async with http.post(f"{url}/api/sessions", headers={"X-CSRF-Token": csrf},
                                     json={"incident_ref": "CAD-K", "phone": "07911 123456"}
                                     ) as r:
                    if r.status == 201:
                        acknowledged.append((await r.json())["session"]["id"])
            except (aiohttp.ClientError, ConnectionError):
                return  # the server is gone


async def test_acknowledged_writes_survive_sigkill(backend: dict[str, Any],
                                                   request: pytest.FixtureRequest,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    data_dir, port = tmp_path / "data", free_port()
    proc = await start(data_dir, port, backend)
    acknowledged: list[str] = []
    stop = asyncio.Event()
    writers = [asyncio.ensure_future(create_sessions(f"http://127.0.0.1:{port}", acknowledged,
                                                     stop)) for _ in range(3)]
    async with asyncio.timeout(60):
        while len(acknowledged) < 15:
            await asyncio.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # mid-write: three clients are still posting
    await proc.wait()
    stop.set()
    await asyncio.gather(*writers)
    assert proc.returncode == -signal.SIGKILL
    if backend:
        # Acknowledged means on Redis's disk (appendfsync always): kill Redis as well.
        redis: RedisServer = request.getfixturevalue("redis_server")
        redis.kill()
        redis.start()

    async with stopped_stores(data_dir, backend) as stores:
        for session_id in acknowledged:
            kinds = [event.header.kind for event in await stores.record.read(session_id)]
            assert kinds[:2] == ["session_created", "invite_sent"], (session_id, kinds)
            session = await stores.sessions.get(session_id)
            assert session is not None and session.state == "invited"

    code, out = await asyncio.to_thread(run_erv, data_dir, monkeypatch, capsys, "verify-record",
                                        env=backend_env(backend))
    assert code == 0 and "chain intact" in out

    # And the service starts again on the same files.
    proc = await start(data_dir, port, backend)
    proc.terminate()
    await proc.wait()
