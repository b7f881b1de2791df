"""Starting the servers under test, each as its own process on a free loopback port."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from bench.common import BENCH, VENV_BIN, ServerProcess, free_port, start_process, wait_http

PEER_VERSION = "1.0.2"  # the npm package `peer` (PeerJS server); pinned in bench/peerjs
PEERJS_DIR = BENCH / "peerjs"
PASSWORD = "bench password, throwaway data dir"  # noqa: S105 - a temporary test database
HANDLER = "bench-handler"
SUPERVISOR = "bench-supervisor"


def erv_env(data_dir: Path, port: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {
        "ERV_TLS": "0",
        "ERV_DATA_DIR": str(data_dir),
        "ERV_PORT": str(port),
        "ERV_SECURE_COOKIES": "0",
        "ERV_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "ERV_LOG_LEVEL": os.environ.get("ERV_LOG_LEVEL", "INFO"),
        **(extra or {}),
    }


def add_accounts(env: Mapping[str, str]) -> None:
    """The bench's handler and supervisor, made with `erv add-user` as an operator would."""
    Path(env["ERV_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    for username, role in ((HANDLER, "handler"), (SUPERVISOR, "supervisor")):
        result = subprocess.run(  # noqa: S603
            [str(VENV_BIN / "erv"), "add-user", username, role],
            env={**os.environ, **env, "ERV_NEW_PASSWORD": PASSWORD},
            capture_output=True, text=True, check=False, cwd=BENCH.parent,
        )
        if result.returncode != 0 and "is taken" not in (result.stderr + result.stdout):
            raise RuntimeError(f"erv add-user {username}: {result.stderr or result.stdout}")


async def start_erv(name: str, data_dir: Path, logs: Path, *, unthrottled: bool = False,
                    extra_env: Mapping[str, str] | None = None,
                    port: int | None = None) -> ServerProcess:
    """`erv run` (or the same with the frame rate limit raised, see bench/erv_launch.py)."""
    port = port or free_port()
    env = erv_env(data_dir, port, extra_env)
    add_accounts(env)
    args = ([sys.executable, "-m", "bench.erv_launch"] if unthrottled
            else [str(VENV_BIN / "erv"), "run"])
    server = start_process(name, args, port, logs / f"{name}.log", env)
    await wait_http(server, "/healthz")
    return server


def peerjs_installed() -> bool:
    manifest = PEERJS_DIR / "node_modules" / "peer" / "package.json"
    try:
        return bool(json.loads(manifest.read_text())["version"] == PEER_VERSION)
    except (OSError, ValueError, KeyError):
        return False


def install_peerjs() -> str | None:
    """npm install the pinned PeerJS server into bench/peerjs; a reason if it cannot."""
    if peerjs_installed():
        return None
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return "Node.js and npm are not installed (apt-get install nodejs npm)"
    result = subprocess.run(  # noqa: S603
        [npm, "install", "--prefix", str(PEERJS_DIR), "--no-audit", "--no-fund", "--save-exact",
         f"peer@{PEER_VERSION}"],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0 or not peerjs_installed():
        return f"npm install peer@{PEER_VERSION} failed: {(result.stderr or result.stdout)[-500:]}"
    return None


def node_version() -> str:
    node = shutil.which("node")
    if node is None:
        return "none"
    return subprocess.run([node, "--version"], capture_output=True, text=True,  # noqa: S603
                          check=False).stdout.strip()


async def start_peerjs(logs: Path) -> ServerProcess:
    port = free_port()
    node = shutil.which("node") or "node"
    server = start_process("peerjs", [node, str(PEERJS_DIR / "server.mjs"), str(port)], port,
                           logs / "peerjs.log", cwd=PEERJS_DIR)
    await wait_http(server, "/")
    return server


async def start_floor(logs: Path, fast: bool) -> ServerProcess:
    port = free_port()
    name = "floor-fast" if fast else "floor"
    args = [sys.executable, "-m", "bench.floor_relay", str(port), *(["--fast"] if fast else [])]
    server = start_process(name, args, port, logs / f"{name}.log")
    await wait_http(server, "/")
    return server


def fast_libraries() -> bool:
    try:
        import orjson  # noqa: F401
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True
