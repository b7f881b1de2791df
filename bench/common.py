"""Small helpers shared by the benchmarks: ports, processes, /proc readings, percentiles."""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
VENV_BIN = Path(sys.executable).parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; NaN for no samples."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (all the server's processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return total / CLOCK_TICKS


def rss_bytes(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
        except OSError:
            continue
    return total


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
                             capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
                               capture_output=True, text=True, check=True, cwd=ROOT).stdout
        return f"{out}{' (with uncommitted changes)' if dirty.strip() else ''}"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.machine()}, {os.cpu_count()} cores ({model or 'unknown CPU'}), "
            f"Python {platform.python_version()}")


@dataclass
class ServerProcess:
    """A server the bench started: its process, address and output log."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    log_mark: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return descendants(self.proc.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pids())

    def rss(self) -> int:
        return rss_bytes(self.pids())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def mark(self) -> None:
        """From here on, `problems` reads only what the server logs after this point."""
        try:
            self.log_mark = self.log.stat().st_size
        except OSError:
            self.log_mark = 0

    def problems(self, n: int = 3) -> list[str]:
        """The commonest WARNING/ERROR lines of its log since `mark` (timestamps cut)."""
        counts: dict[str, int] = {}
        try:
            with self.log.open("rb") as handle:
                handle.seek(self.log_mark)
                text = handle.read().decode(errors="replace")
        except OSError:
            return []
        for line in text.splitlines():
            for level in (" WARNING ", " ERROR ", " CRITICAL "):
                if level in line:
                    key = level.strip() + " " + line.split(level, 1)[1].strip()
                    counts[key] = counts.get(key, 0) + 1
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
        return [f"{count}x {line[:200]}" for line, count in ranked]

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def start_process(name: str, args: Sequence[str], port: int, log: Path,
                  env: Mapping[str, str] | None = None, cwd: Path = ROOT) -> ServerProcess:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603
            list(args), stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
            env={**os.environ, **(env or {})},
        )
    return ServerProcess(name, proc, port, log)


async def wait_http(server: ServerProcess, path: str = "/", within: float = 30.0) -> None:
    """Until the server answers any HTTP status on `path`; raises if it exits first."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while True:
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n"
                                   f"{server.tail()}")
            try:
                async with http.get(f"{server.url}{path}") as response:
                    await response.read()
                    return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name} did not answer within {within}s:\n"
                                   f"{server.tail()}")
            await asyncio.sleep(0.05)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)
