"""Sampling the server with py-spy under load, and reading its collapsed stacks."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.common import VENV_BIN

_LINE = re.compile(r":\d+\)$")
# Stacks of a thread waiting for work, or of the event loop waiting in epoll: not CPU time.
_IDLE = ("_queue_SimpleQueue_get_impl", "epoll_wait (", "epoll_pwait (", "select (selectors.py)")
# Project frames that only hold the socket's handler (every frame of a socket is under them).
_WRAPPERS = ("main (server/cli.py)", "run (server/cli.py)", "error_middleware (",
             "staff_session_middleware (", "websocket (server/app.py)",
             "SignalingEndpoint.handle (")


def py_spy() -> str | None:
    found = VENV_BIN / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


def start(pid: int, seconds: float, out: Path, native: bool = True) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` for `seconds`, collapsed stacks into `out`."""
    exe = py_spy()
    if exe is None:
        raise FileNotFoundError("py-spy is not installed (pip install '.[bench]')")
    args = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
            "--rate", "100", "--format", "raw", "--output", str(out)]
    if native:
        args.append("--native")
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # noqa: S603


def _frame(raw: str) -> str:
    return _LINE.sub(")", raw.strip())


@dataclass
class Hotspot:
    frame: str
    share: float  # of all samples

    def as_dict(self) -> dict[str, object]:
        return {"frame": self.frame, "share": self.share}


def read(path: Path) -> tuple[int, list[Hotspot], list[Hotspot]]:
    """Busy samples, the top frames by own time (leaf), and the project's own functions
    (server/, signaling/) by total time (anywhere on the stack); shares of busy samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        if any(idle in frame for frame in frames for idle in _IDLE):
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            if ("(server/" in frame or "(signaling/" in frame) and not any(
                    w in frame for w in _WRAPPERS):
                total[frame] += count
    if samples == 0:
        return 0, [], []

    def top(counter: Counter[str], n: int) -> list[Hotspot]:
        return [Hotspot(f, c / samples) for f, c in counter.most_common(n)]

    return samples, top(own, 15), top(total, 12)


# Where a busy sample's leaf frame is, by kind of work (first match wins).
CATEGORIES = (
    ("getpid system call (asyncio.get_running_loop / current_task on Python 3.11)",
     ("getpid (",)),
    ("socket read/write system calls", ("send (libc", "recv (libc", "read (libc",
                                        "write (libc", "writev (libc", "sock_send",
                                        "sock_recv", "sock_call")),
    ("JSON parse and encode", ("_json.c", "(json/", "orjson", "decoder.py", "encoder.py")),
    ("garbage collector", ("gc_collect", "gc_", "collect (gcmodule")),
    ("aiohttp WebSocket framing and reading", ("(aiohttp/", "_websocket", "reader_c",
                                               "mask")),
    ("event loop, tasks and queues (asyncio, uvloop)", (
        "(asyncio/", "_asynciomodule.c", "selector_events", "selectors.py", "(loop.c",
        "uv_", "uv__", "epoll", "(handles/", "(transports/")),
    ("memory allocation (malloc, free)", ("malloc (", "realloc (", "free (", "brk (",
                                          "_PyObject_Malloc", "pymalloc")),
    ("project code (signaling/, server/)", ("(signaling/", "(server/")),
)


def categories(path: Path) -> list[tuple[str, float]]:
    """Busy samples by kind of work at the leaf; shares of all busy samples."""
    counts: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";")]
        if any(idle in frame for frame in frames for idle in _IDLE):
            continue
        count = int(count_text)
        samples += count
        leaf = frames[-1]
        # A C helper with no symbol is charged to the nearest named frame, unless its library
        # says what it is (orjson ships without symbols).
        if leaf.startswith("0x") and "orjson" not in leaf:
            for frame in reversed(frames):
                if not frame.startswith("0x"):
                    leaf = frame
                    break
        for name, needles in CATEGORIES:
            if any(n in leaf for n in needles):
                counts[name] += count
                break
        else:
            counts["other (interpreter, libc, ...)"] += count
    if samples == 0:
        return []
    return [(name, c / samples) for name, c in counts.most_common()]


def summary(path: Path) -> dict[str, object] | None:
    """What RESULTS.md shows of one profile; None if py-spy wrote nothing."""
    if not path.exists():
        return None
    samples, own, total = read(path)
    return {"samples": samples, "categories": categories(path),
            "getpid_callers": callers(path, "getpid ("),
            "own": [h.as_dict() for h in own], "project": [h.as_dict() for h in total],
            "raw": str(path)}


def callers(path: Path, leaf_needle: str, n: int = 3) -> list[tuple[str, float]]:
    """Which Python frames lead to a hot C leaf (say getpid): the two nearest Python frames,
    as shares of that leaf's samples."""
    counts: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        if leaf_needle not in frames[-1]:
            continue
        python = [_frame(f) for f in frames if ".py:" in f]
        counts[" <- ".join(reversed(python[-2:]))] += int(count_text)
    total = sum(counts.values())
    return [(chain, c / total) for chain, c in counts.most_common(n)] if total else []
