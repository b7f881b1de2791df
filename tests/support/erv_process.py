"""`erv run` as a real process for tests: HTTPS with its own dev certificate, its own data
folder, a chosen file-descriptor limit, and everything it printed and logged kept."""

from __future__ import annotations

import asyncio
import os
import resource
import ssl
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.support.live import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Process:
    proc: asyncio.subprocess.Process
    url: str
    port: int
    ssl: ssl.SSLContext
    stdout: list[str]
    cert: Path

    async def output(self) -> str:
        """Everything the process printed and logged, after it stopped."""
        if self.proc.returncode is None:
            self.proc.terminate()
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout=10)
        return "\n".join(self.stdout) + out.decode(errors="replace") + err.decode(
            errors="replace")

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def start_erv(tmp_path: Path, env: Mapping[str, str], *, demo: bool = True,
                    nofile: int | None = None) -> Process:
    """Start `erv run` with `env` on top of this process's environment; wait until it
    answers /healthz. `nofile` sets its RLIMIT_NOFILE, as a systemd unit's LimitNOFILE."""
    port = free_port()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    full = {
        **os.environ,
        "ERV_PORT": str(port),
        "ERV_DATA_DIR": str(tmp_path / "data"),
        "ERV_TLS_CERT": str(cert),
        "ERV_TLS_KEY": str(key),
        "ERV_LOG_LEVEL": "DEBUG",
    }
    full.pop("ERV_REDIS_URL", None)
    full.update(env)

    def limit() -> None:  # in the child, before exec
        assert nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "run", *(["--demo"] if demo else []),
        env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        preexec_fn=limit if nofile is not None else None,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(30):
        while True:
            line = (await proc.stdout.readline()).decode()
            assert line, "the server exited before serving"
            lines.append(line)
            if line.startswith("serving "):
                break
    context = ssl.create_default_context(cafile=str(cert))
    process = Process(proc, f"https://localhost:{port}", port, context, lines, cert)
    # The port may take a moment to open after the line is printed.
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            try:
                async with http.get(f"{process.url}/healthz", ssl=context) as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
    return process
