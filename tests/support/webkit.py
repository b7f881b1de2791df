"""WebKitGTK's MiniBrowser driven through WebKitWebDriver (classic W3C WebDriver over HTTP),
in an Xvfb of its own: Safari's engine, as close as Debian gets to an iPhone.

This WebKitGTK has getUserMedia (with mock capture devices) but no RTCPeerConnection, so it
stands in for a browser that must fall back to sending stills over HTTPS.

Classic WebDriver has no init scripts and no console log: whatever a test needs in the page
(shims such as a fake navigator.geolocation, the error trap) it installs with evaluate()
after each navigation, so the page's own scripts have already run by then.

    async with WebKit.launch() as wk:
        await wk.goto(url)
        await wk.install_error_trap()
        await wk.click("#join")
        await wk.wait_for("document.querySelector('video').videoWidth > 0")
        assert await wk.errors() == []
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import glob
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.browser_page import (
    JavaScriptError,
    kill_tree,
    poll,
    reap,
    tagged_env,
    tagged_pids,
)

MINIBROWSER = os.environ.get("ERV_MINIBROWSER") or next(
    iter(sorted(glob.glob("/usr/lib/*/webkit2gtk-4.*/MiniBrowser"), reverse=True)),
    "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser")
WEBDRIVER = os.environ.get("ERV_WEBKITWEBDRIVER", "WebKitWebDriver")
# Names as `MiniBrowser --help-all` lists them (WebKitSettings properties take =true).
MINIBROWSER_ARGS = [
    "--automation",
    "--enable-media-stream=true",
    "--enable-mock-capture-devices=true",
    "--autoplay-policy=allow",
    "--media-playback-requires-user-gesture=false",
]
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
# Given WebKitWebDriver's port (on its own 127.0.0.1), the (host, port) to dial for it: for a
# driver whose loopback is not ours (a network namespace, reached through a port forwarder).
ConnectVia = Callable[[int], Awaitable[tuple[str, int]]]
SCREEN = "1280x1024x24"

# Console errors, uncaught exceptions and unhandled rejections, kept in the page for errors().
ERROR_TRAP = """(() => {
  if (window.__harnessErrors) return;
  const errors = window.__harnessErrors = [];
  const original = console.error;
  console.error = function (...args) {
    errors.push(args.map(String).join(" "));
    return original.apply(this, args);
  };
  addEventListener("error", (e) => errors.push(String(e.message || e.error)));
  addEventListener("unhandledrejection", (e) => errors.push("unhandled: " + String(e.reason)));
})()"""


class WebDriverError(RuntimeError):
    """WebKitWebDriver answered with a W3C error."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(f"{error}: {message}")
        self.error = error


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_line(fd: int) -> bytes:
    """Up to the newline: Xvfb writes the number and the newline separately, and dies if
    the pipe is closed in between."""
    data = b""
    while not data.endswith(b"\n") and (chunk := os.read(fd, 32)):
        data += chunk
    return data


async def start_xvfb(env: dict[str, str], log: Path, timeout: float,
                     wrapper: Sequence[str] = ()) -> tuple[asyncio.subprocess.Process, int]:
    """Xvfb on a free display. With -displayfd Xvfb itself takes the first display whose lock
    file and socket are free (atomically, so parallel runs cannot collide) and writes its
    number only once it accepts connections: no guessing, no polling."""
    read_end, write_end = os.pipe()
    try:
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *wrapper, "Xvfb", "-displayfd", str(write_end), "-screen", "0", SCREEN,
                "-nolisten", "tcp", "-noreset", pass_fds=(write_end,),
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                start_new_session=True)
        os.close(write_end)
        write_end = -1
        reading = asyncio.get_running_loop().run_in_executor(None, _read_line, read_end)
        try:
            number = await asyncio.wait_for(asyncio.shield(reading), timeout)
        except BaseException:
            await reap(process)  # its end of the pipe closes, so the read returns
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(reading, 5)
            raise
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    if not number.strip():
        await reap(process)
        raise RuntimeError(f"Xvfb gave no display: {log.read_text(errors='replace')}")
    return process, int(number)


@dataclass
class WebKit:
    """A MiniBrowser window under its own Xvfb, driven through one WebDriver session."""

    tag: str
    workdir: Path
    http: aiohttp.ClientSession = field(default_factory=aiohttp.ClientSession)
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    base: str = ""
    display: int = -1
    wrapper: list[str] = field(default_factory=list)
    connect_via: ConnectVia | None = None
    _closed: bool = False

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, *, binary: str = MINIBROWSER, args: Sequence[str] = MINIBROWSER_ARGS,
                     env: dict[str, str] | None = None, wrapper: Sequence[str] | None = None,
                     connect_via: ConnectVia | None = None,
                     timeout: float = 90.0) -> AsyncIterator[WebKit]:
        """Xvfb, WebKitWebDriver and MiniBrowser; all killed and the temp dir removed on the
        way out, whatever happened inside.

        wrapper: a command prefix Xvfb and WebKitWebDriver are started with (MiniBrowser is
        the driver's child), e.g. ["ip", "netns", "exec", ns] to run them all in a namespace;
        connect_via(port) then gives the (host, port) to dial for the driver (as Firefox's)."""
        webkit = await cls.start(binary=binary, args=args, env=env, wrapper=wrapper,
                                 connect_via=connect_via, timeout=timeout)
        try:
            yield webkit
        finally:
            await webkit.close()

    @classmethod
    async def start(cls, *, binary: str = MINIBROWSER, args: Sequence[str] = MINIBROWSER_ARGS,
                    env: dict[str, str] | None = None, wrapper: Sequence[str] | None = None,
                    connect_via: ConnectVia | None = None, timeout: float = 90.0) -> WebKit:
        """As launch, for a caller that closes it itself (always call close())."""
        workdir = Path(tempfile.mkdtemp(prefix="erv-webkit-"))
        dirs = {name: workdir / name for name in ("runtime", "cache", "data", "config")}
        for path in dirs.values():
            path.mkdir(mode=0o700)
        base_env, tag = tagged_env({
            # Its own XDG dirs: nothing written to the real home, all removed at close.
            "XDG_RUNTIME_DIR": str(dirs["runtime"]), "XDG_CACHE_HOME": str(dirs["cache"]),
            "XDG_DATA_HOME": str(dirs["data"]), "XDG_CONFIG_HOME": str(dirs["config"]),
            "GDK_BACKEND": "x11", "NO_AT_BRIDGE": "1", "GTK_A11Y": "none",
            "LIBGL_ALWAYS_SOFTWARE": "1", "WEBKIT_DISABLE_DMABUF_RENDERER": "1",
            **(env or {}),
        })
        base_env.pop("WAYLAND_DISPLAY", None)
        webkit = cls(tag, workdir, wrapper=list(wrapper or []), connect_via=connect_via)
        try:
            await asyncio.wait_for(webkit._start(base_env, binary, list(args), timeout),
                                   timeout)
        except BaseException as exc:
            logs = webkit._logs()
            await webkit.close()
            if isinstance(exc, Exception):
                raise RuntimeError(f"WebKit did not start: {exc!r}\n{logs}") from exc
            raise
        return webkit

    async def _start(self, env: dict[str, str], binary: str, args: list[str],
                     timeout: float) -> None:
        xvfb, self.display = await start_xvfb(env, self.workdir / "xvfb.log", timeout,
                                              self.wrapper)
        self.processes.append(xvfb)
        env = {**env, "DISPLAY": f":{self.display}"}
        root = await self._start_driver(env, timeout)
        reply = await self._request("POST", f"{root}/session", {"capabilities": {
            "alwaysMatch": {
                "browserName": "MiniBrowser",
                "acceptInsecureCerts": True,
                "webkitgtk:browserOptions": {"binary": binary, "args": args},
            }}})
        self.base = f"{root}/session/{reply['sessionId']}"

    async def _start_driver(self, env: dict[str, str], timeout: float) -> str:
        """WebKitWebDriver on a free port (another process may take the port between our
        check and its bind: then it exits at once, and another port is tried)."""
        for attempt in range(3):
            port = free_port()
            with (self.workdir / "webdriver.log").open("ab") as out:
                # "local" is IPv4 and IPv6 loopback; a lab namespace has no ::1, so name one.
                host = "127.0.0.1" if self.wrapper else "local"
                driver = await asyncio.create_subprocess_exec(
                    *self.wrapper, WEBDRIVER, f"--port={port}", f"--host={host}",
                    stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                    start_new_session=True)
            self.processes.append(driver)
            dial_host, dial = (await self.connect_via(port) if self.connect_via
                               else ("127.0.0.1", port))
            root = f"http://{dial_host}:{dial}"
            try:
                await poll(functools.partial(self._driver_ready, driver, root), timeout, 0.1,
                           "WebKitWebDriver /status ready")
            except ChildProcessError:
                if attempt == 2:
                    raise
                continue
            return root
        raise AssertionError("unreachable")

    async def _driver_ready(self, driver: asyncio.subprocess.Process, root: str) -> bool:
        if driver.returncode is not None:  # no use waiting out the timeout
            raise ChildProcessError(f"WebKitWebDriver exited ({driver.returncode})")
        try:
            async with self.http.get(f"{root}/status",
                                     timeout=aiohttp.ClientTimeout(total=5)) as reply:
                return bool((await reply.json())["value"]["ready"])
        except (aiohttp.ClientError, TimeoutError):
            return False

    def _logs(self) -> str:
        return "\n".join(
            f"{log.name}: {log.read_text(errors='replace')[-3000:]}"
            for log in sorted(self.workdir.glob("*.log")))

    async def _request(self, method: str, url: str, body: Any = None,
                       timeout: float = 60.0) -> Any:
        async with self.http.request(method, url, json=body,
                                     timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            data = await response.json(content_type=None)
        value = data.get("value") if isinstance(data, dict) else None
        if response.status >= 400 or (isinstance(value, dict) and "error" in value):
            error = value if isinstance(value, dict) else {}
            if error.get("error") == "javascript error":
                raise JavaScriptError(error.get("message", ""))
            raise WebDriverError(error.get("error", str(response.status)),
                                 error.get("message", ""))
        return value

    async def command(self, method: str, path: str, body: Any = None,
                      timeout: float = 60.0) -> Any:
        """Any W3C WebDriver command of this session, e.g. ("GET", "/title")."""
        if not self.base:
            raise RuntimeError("WebKit is not connected")
        if body is None and method == "POST":
            body = {}
        return await self._request(method, self.base + path, body, timeout)

    async def goto(self, url: str) -> None:
        await self.command("POST", "/url", {"url": url})

    async def execute(self, body: str, *args: Any) -> Any:
        """Run a function body (`return ...`); a returned promise is awaited."""
        return await self.command("POST", "/execute/sync", {"script": body, "args": list(args)})

    async def execute_async(self, body: str, *args: Any) -> Any:
        """Run a function body that reports by calling its last argument, the callback."""
        return await self.command("POST", "/execute/async",
                                  {"script": body, "args": list(args)})

    async def evaluate(self, expression: str) -> Any:
        """The value of a JS expression (a promise awaited), like FirefoxTab.evaluate."""
        return await self.execute(f"return ({expression}\n);")

    async def evaluate_async(self, expression: str) -> Any:
        """evaluate() through execute/async, for a WebDriver whose execute/sync does not
        await promises (this WebKitGTK's does)."""
        outcome = await self.execute_async(
            "const done = arguments[arguments.length - 1];"
            f"Promise.resolve().then(() => ({expression}\n))"
            ".then((value) => done({value}), (e) => done({error: String(e)}));")
        if "error" in outcome:
            raise JavaScriptError(outcome["error"])
        return outcome.get("value")

    @property
    def tab(self) -> WebKit:
        """The one window is the page (so `browser.tab` works for either harness)."""
        return self

    async def call(self, function_declaration: str, *args: Any) -> Any:
        return await self.execute(
            f"return ({function_declaration}\n).apply(null, arguments);", *args)

    async def _find_now(self, selector: str) -> str:
        try:
            element = await self.command(
                "POST", "/element", {"using": "css selector", "value": selector})
        except WebDriverError as exc:
            raise LookupError(f"{selector}: {exc}") from exc
        return str(element[ELEMENT])

    async def find(self, selector: str, timeout: float = 15.0) -> str:
        """The WebDriver id of the first element matching a CSS selector, waiting for it."""
        return await poll(lambda: self._find_now(selector), timeout, 0.1, f"element {selector}")

    async def click(self, selector: str, timeout: float = 15.0) -> None:
        """WebDriver's element click: scrolled into view, real mouse events from the UI
        process (trusted, with user activation); retried while covered or not yet there."""
        async def clicked() -> bool:
            element = await self._find_now(selector)
            await self.command("POST", f"/element/{element}/click")
            return True

        await poll(clicked, timeout, 0.1, f"click {selector}")

    async def fill(self, selector: str, text: str, timeout: float = 15.0) -> None:
        """Clear the field, then type `text` into it as key events."""
        element = await self.find(selector, timeout)
        await self.command("POST", f"/element/{element}/clear")
        if text:
            await self.command("POST", f"/element/{element}/value", {"text": text})

    async def wait_for(self, predicate: str, timeout: float = 15.0,
                       interval: float = 0.1) -> Any:
        """Poll a JS expression until it is truthy; gives its value."""
        return await poll(lambda: self.evaluate(predicate), timeout, interval, predicate)

    async def screenshot(self, path: str | Path) -> Path:
        data = await self.command("GET", "/screenshot")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(data))
        return target

    async def set_window_size(self, width: int, height: int) -> None:
        await self.command("POST", "/window/rect", {"width": width, "height": height})

    async def install_error_trap(self) -> None:
        """Start recording console.error and uncaught errors in the current page (call after
        each navigation; errors before it are not seen)."""
        await self.evaluate(ERROR_TRAP)

    async def errors(self) -> list[str]:
        found = await self.evaluate("window.__harnessErrors || []")
        return [str(item) for item in found]

    def pids(self) -> set[int]:
        """Every live process: Xvfb, WebKitWebDriver, MiniBrowser and WebKit's helpers."""
        return tagged_pids(self.tag)

    async def close(self) -> None:
        """End the session, kill every process, remove the temp dir. Safe to call twice,
        and after a failed start."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.base:
                with contextlib.suppress(Exception):
                    await self._request("DELETE", self.base, timeout=5)
        finally:
            try:
                await self._stop_xvfb()
                await kill_tree(self.tag, self.processes)
            finally:
                for process in self.processes:
                    await reap(process)
                await self.http.close()
                shutil.rmtree(self.workdir, ignore_errors=True)

    async def _stop_xvfb(self) -> None:
        """SIGTERM first: a killed Xvfb leaves its lock file and socket in /tmp behind."""
        if not self.processes:
            return
        xvfb = self.processes[0]
        if xvfb.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                xvfb.terminate()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(xvfb.wait(), 5)
        lock = Path(f"/tmp/.X{self.display}-lock")
        with contextlib.suppress(OSError, ValueError):
            if int(lock.read_text().strip()) == xvfb.pid:
                lock.unlink()
                Path(f"/tmp/.X11-unix/X{self.display}").unlink(missing_ok=True)
