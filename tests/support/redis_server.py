"""A real redis-server for tests, on a free port, with its own directory.

Tests start their own server (never the machine's 6379) so they can stop, kill and restart it.
Persistence is on as a deployment must have it: AOF with fsync on every write.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process; `stop`/`kill` and `start` again keep the same port and data."""

    def __init__(self, directory: Path, *, appendonly: bool = True) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        args = [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.directory), "--save", "", "--daemonize", "no",
            "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
            "--protected-mode", "no", "--loglevel", "warning",
            "--logfile", str(self.directory / "redis.log"),
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server exited at start:\n{log[-2000:]}")
            if self.ping():
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer in time")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *parts: str) -> bytes:
        """Send one command (RESP) and return the raw reply; for tests that need no client."""
        payload = f"*{len(parts)}\r\n".encode()
        for part in parts:
            data = part.encode()
            payload += b"$%d\r\n%s\r\n" % (len(data), data)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(payload)
            return sock.recv(65536)

    def flush(self) -> None:
        reply = self.command("FLUSHALL", "SYNC")
        assert reply.startswith(b"+OK"), reply

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): Redis writes what it has and exits."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signum)
            self.process.wait(timeout=10)
        self.process = None

    def aof_bytes(self) -> bytes:
        """Everything Redis has persisted (its append-only files), for plaintext checks."""
        return b"".join(p.read_bytes() for p in sorted(self.directory.rglob("*.aof*"))
                        if p.is_file())
