"""What the Firefox (BiDi) and WebKit (classic WebDriver) harnesses share.

`BrowserPage` is the common shape of a tab, so a test can be written once and run in either
browser. The process helpers exist because a browser is a tree of processes (content, GPU,
network, crash helper...) and a test must leave none behind, even when it fails: every
process the harness starts gets a tag in its environment, which every descendant inherits
(even one that double-forks or leaves the process group), so the tag finds them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar

TAG_VARIABLE = "ERV_BROWSER_HARNESS"

T = TypeVar("T")


class JavaScriptError(RuntimeError):
    """A script the test ran in the page threw (or its promise rejected)."""


class BrowserPage(Protocol):
    """One tab of either harness. Expressions are JS expressions (not statement lists); a
    promise they give is awaited."""

    async def goto(self, url: str) -> None: ...

    async def evaluate(self, expression: str) -> Any: ...

    async def click(self, selector: str, timeout: float = ...) -> None: ...

    async def fill(self, selector: str, text: str, timeout: float = ...) -> None: ...

    async def wait_for(self, predicate: str, timeout: float = ...,
                       interval: float = ...) -> Any: ...

    async def screenshot(self, path: str | Path) -> Path: ...


async def poll(check: Callable[[], Awaitable[T]], timeout: float, interval: float,
               what: str) -> T:
    """Call `check` until it gives something truthy. Errors while polling (a page that is
    navigating, an element not there yet) only count as 'not yet'; the last is reported."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = await check()
        except (JavaScriptError, LookupError, RuntimeError) as exc:
            value, last = None, exc
        else:
            last = value
            if value:
                return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not true within {timeout:g} s (last: {last!r})")
        await asyncio.sleep(interval)


def tagged_env(env: dict[str, str] | None = None) -> tuple[dict[str, str], str]:
    """os.environ plus `env`, with a fresh tag that marks the processes it is given to."""
    tag = uuid.uuid4().hex
    merged = {**os.environ, **(env or {}), TAG_VARIABLE: tag}
    return merged, tag


def _proc_pids() -> Iterable[int]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def tagged_pids(tag: str) -> set[int]:
    """Live processes whose environment carries `tag` (started by the harness, or by one
    of those)."""
    marker = f"{TAG_VARIABLE}={tag}".encode()
    found = set()
    for pid in _proc_pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0") and alive(pid):
            found.add(pid)
    return found


def _signal(pid: int, sig: signal.Signals, group: bool = False) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        (os.killpg if group else os.kill)(pid, sig)


async def kill_tree(tag: str, leaders: Iterable[asyncio.subprocess.Process] = (),
                    timeout: float = 15.0) -> None:
    """SIGKILL the leaders' process groups and every tagged process; wait until all are gone.

    Each group is signalled once, while its leader is not yet reaped (so its pid cannot have
    been reused); the tag then finds whatever is left, however it got away."""
    seen = tagged_pids(tag)  # before any dies: one on its way out has no environment left
    for leader in leaders:
        if leader.returncode is None:
            _signal(leader.pid, signal.SIGKILL, group=True)
    deadline = time.monotonic() + timeout
    # Wait for every process once seen tagged, not only for the tag to vanish.
    while left := (tagged := tagged_pids(tag)) | {pid for pid in seen if alive(pid)}:
        seen |= tagged
        for pid in tagged:
            _signal(pid, signal.SIGKILL)
        if time.monotonic() >= deadline:
            raise RuntimeError(f"browser processes survived SIGKILL: {sorted(left)}")
        await asyncio.sleep(0.05)


async def reap(process: asyncio.subprocess.Process | None, timeout: float = 10.0) -> None:
    """Collect a killed child's exit status so it does not linger as a zombie."""
    if process is not None and process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(process.wait(), timeout)
