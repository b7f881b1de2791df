"""`erv run` as a real process: no core dumps, and its data folder and database private.

The process holds the case record's master keys, so a core file or another process of the
same user reading its memory would leak them. Checked from outside, as the kernel sees the
process: /proc/<pid>/limits for RLIMIT_CORE, and whether another process of the same user and
no more privilege may read /proc/<pid>/environ, which the kernel refuses only when the process
is not dumpable. Run as root, both processes drop every capability first (setpriv), so root's
CAP_SYS_PTRACE does not hide the difference.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.support.live import free_port

ROOT = Path(__file__).resolve().parents[2]
# As root: the same user, with no capabilities (a dumpable process is then readable).
NO_CAPS = ["setpriv", "--inh-caps=-all", "--bounding-set=-all"] if os.geteuid() == 0 else []


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    data_dir: Path


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    base = Path(tempfile.mkdtemp(prefix="erv-hardening-"))
    data_dir = base / "var"
    port = free_port()
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("ERV_")
    } | {
        "ERV_PORT": str(port),
        "ERV_TLS": "false",
        "ERV_DATA_DIR": str(data_dir),
        "ERV_SCRYPT_N": os.environ.get("ERV_SCRYPT_N", "1024"),
        "HOME": str(base),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        *NO_CAPS, sys.executable, "-m", "server.cli", "run", env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        # A permissive umask: the server must make its files private by itself.
        umask=0o022,
    )
    assert proc.stdout is not None
    output = []
    async with asyncio.timeout(30):
        while True:
            line = (await proc.stdout.readline()).decode()
            output.append(line)
            assert line, "the server exited before serving:\n" + "".join(output)
            if line.startswith("serving "):
                break
        # Stores open once the loop runs, a moment after the line is printed.
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
    try:
        yield Served(proc, data_dir)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.communicate(), timeout=10)
        subprocess.run(["rm", "-rf", str(base)], check=False)


def readable_by_its_user(pid: int) -> bool:
    """Whether a process of the same user and no more privilege may read its environment."""
    peek = subprocess.run([*NO_CAPS, "head", "-c", "1", f"/proc/{pid}/environ"],
                          capture_output=True, check=False)
    return peek.returncode == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_a_started_server_cannot_dump_core_or_be_read_by_its_user(served: Served) -> None:
    pid = served.proc.pid
    limits = Path(f"/proc/{pid}/limits").read_text()
    [core] = [line for line in limits.splitlines() if line.startswith("Max core file size")]
    assert core.split()[4:6] == ["0", "0"], core
    # Not dumpable (PR_SET_DUMPABLE 0): its memory and environment are closed to its own user.
    assert not readable_by_its_user(pid)
    # (The check itself can tell: an ordinary process started the same way is readable.)
    control = subprocess.Popen([*NO_CAPS, "sleep", "30"])
    try:
        await asyncio.sleep(0.2)
        assert readable_by_its_user(control.pid)
    finally:
        control.kill()
        control.wait()


async def test_the_data_folder_and_database_are_private(served: Served) -> None:
    assert stat.S_IMODE(served.data_dir.stat().st_mode) == 0o700
    database = served.data_dir / "erv.sqlite3"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    for path in served.data_dir.iterdir():
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, (path.name, oct(mode))
