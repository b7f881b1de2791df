"""Debian's Firefox ESR driven over WebDriver BiDi, with nothing but aiohttp.

Firefox speaks BiDi itself (no geckodriver, which Debian does not package): started with
`--remote-debugging-port 0` it prints the WebSocket it listens on, and the harness talks to
it directly. A fresh profile per launch carries the prefs that make a call work unattended
(fake camera and microphone granted, ICE on loopback, autoplay, a fixed geolocation) and stop
Firefox from phoning home. The first launch in a test process also saves a warmed copy of
its profile (start-up cache, add-on database; no site data), and later launches start from a
copy of that: about half the start-up time.

    async with Firefox.launch() as ff:
        await ff.add_init_script("window.__early = true;")
        tab = ff.tab
        await tab.goto(url)
        await tab.click("#join")
        await tab.wait_for("window.connected === true")
        assert not ff.errors
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import itertools
import json
import math
import os
import re
import shutil
import tempfile
import traceback
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from tests.support.browser_page import (
    JavaScriptError,
    kill_tree,
    poll,
    reap,
    tagged_env,
    tagged_pids,
)

FIREFOX = os.environ.get("ERV_FIREFOX", "firefox-esr")
LISTENING = re.compile(r"WebDriver BiDi listening on ws://([^\s:/]+):(\d+)")

ConnectVia = Callable[[int], Awaitable[tuple[str, int]]]
Event = dict[str, Any]


@dataclass(frozen=True)
class Geolocation:
    """Where Firefox's network geolocation provider says the machine is (no network used)."""

    latitude: float = 51.4816
    longitude: float = -3.1791
    accuracy: float = 15.0

    def provider_url(self) -> str:
        body = json.dumps({"location": {"lat": self.latitude, "lng": self.longitude},
                           "accuracy": self.accuracy})
        return "data:application/json," + quote(body)


# No background connections and no first-run UI: a test run must not reach the internet,
# and must not race a welcome page or an update prompt.
QUIET_PREFS: dict[str, Any] = {
    "app.update.auto": False,
    "app.update.checkInstallTime": False,
    "app.update.disabledForTesting": True,
    "app.update.staging.enabled": False,
    "app.normandy.enabled": False,
    "app.normandy.api_url": "",
    "app.shield.optoutstudies.enabled": False,
    "messaging-system.rsexperimentloader.enabled": False,
    "services.settings.server": "data:,#remote-settings-dummy/v1",
    "security.remote_settings.crlite_filters.enabled": False,
    "security.remote_settings.intermediates.enabled": False,
    "security.OCSP.enabled": 0,
    "extensions.update.enabled": False,
    "extensions.update.autoUpdateDefault": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.blocklist.enabled": False,
    "extensions.systemAddon.update.enabled": False,
    "extensions.systemAddon.update.url": "",
    "extensions.pocket.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.policy.dataSubmissionPolicyBypassNotification": True,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.archive.enabled": False,
    "toolkit.telemetry.server": "",
    "toolkit.telemetry.shutdownPingSender.enabled": False,
    "toolkit.telemetry.firstShutdownPing.enabled": False,
    "toolkit.telemetry.newProfilePing.enabled": False,
    "toolkit.crashreporter.enabled": False,
    "browser.crashReports.unsubmittedCheck.autoSubmit2": False,
    "browser.ping-centre.telemetry": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.downloads.remote.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.provider.google4.updateURL": "",
    "browser.safebrowsing.provider.google.updateURL": "",
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    "network.captive-portal-service.enabled": False,
    "captivedetect.canonicalURL": "",
    "network.connectivity-service.enabled": False,
    "network.trr.mode": 5,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "network.predictor.enabled": False,
    "network.http.speculative-parallel-limit": 0,
    "browser.urlbar.speculativeConnect.enabled": False,
    "browser.places.speculativeConnect.enabled": False,
    "browser.urlbar.suggest.searches": False,
    "browser.search.update": False,
    "browser.search.suggest.enabled": False,
    "browser.region.update.enabled": False,
    "browser.region.network.url": "",
    "dom.push.connection.enabled": False,
    "dom.push.serverURL": "",
    "identity.fxaccounts.enabled": False,
    "media.gmp-manager.url": "",
    "media.gmp-manager.updateEnabled": False,
    "media.gmp-gmpopenh264.autoupdate": False,
    "media.gmp-widevinecdm.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.shell.skipDefaultBrowserCheckOnFirstRun": True,
    "browser.startup.page": 0,
    "browser.startup.homepage": "about:blank",
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.startup.firstrunSkipsHomepage": True,
    "startup.homepage_welcome_url": "about:blank",
    "startup.homepage_welcome_url.additional": "",
    "startup.homepage_override_url": "",
    "browser.aboutwelcome.enabled": False,
    "trailhead.firstrun.didSeeAboutWelcome": True,
    "browser.newtabpage.enabled": False,
    "browser.newtabpage.activity-stream.feeds.system.topstories": False,
    "browser.newtabpage.activity-stream.feeds.section.topstories": False,
    "browser.newtabpage.activity-stream.feeds.topsites": False,
    "browser.newtabpage.activity-stream.feeds.telemetry": False,
    "browser.newtabpage.activity-stream.telemetry": False,
    "browser.newtabpage.activity-stream.showSponsored": False,
    "browser.newtabpage.activity-stream.showSponsoredTopSites": False,
    "browser.topsites.contile.enabled": False,
    "browser.discovery.enabled": False,
    "browser.uitour.enabled": False,
    "browser.translations.enable": False,
    "browser.translations.automaticallyPopup": False,
    "browser.ml.enable": False,
    "browser.backup.scheduled.enabled": False,
    "browser.contentanalysis.enabled": False,
    "browser.sessionstore.resume_from_crash": False,
    "browser.tabs.warnOnClose": False,
    "browser.warnOnQuit": False,
    "toolkit.startup.max_resumed_crashes": -1,
    "dom.disable_open_during_load": False,
}

# Calls with the fake camera and microphone, granted without a prompt. Without the two
# permissions.default prefs Firefox gathers no ICE candidates (it exposes host candidates
# only once media is granted).
MEDIA_PREFS: dict[str, Any] = {
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "permissions.default.camera": 1,
    "permissions.default.microphone": 1,
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
}


def geolocation_prefs(where: Geolocation) -> dict[str, Any]:
    """Mozilla's own tests' trick: the network provider fetches a data: URL."""
    return {
        "geo.enabled": True,
        "geo.provider.network.url": where.provider_url(),
        "geo.provider.testing": True,
        "geo.provider.use_geoclue": False,
        "geo.provider.use_corelocation": False,
        "geo.provider.use_gpsd": False,
        "geo.provider.use_mls": False,
        "geo.prompt.testing": True,
        "geo.prompt.testing.allow": True,
        "permissions.default.geo": 1,
    }


def user_js(prefs: dict[str, Any]) -> str:
    return "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items())


class BiDiError(RuntimeError):
    """The browser answered a command with an error."""

    def __init__(self, method: str, error: str, message: str) -> None:
        super().__init__(f"{method}: {error}: {message}")
        self.error = error


class BiDiConnection:
    """One BiDi WebSocket: numbered commands matched to their answers; events to listeners."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._http = http
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: dict[str, list[Callable[[Event], None]]] = defaultdict(list)
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, host_header: str, timeout: float) -> BiDiConnection:
        """Firefox refuses a Host header naming another port, so name its own (a port
        forwarder in between changes the port the client dials, not what Firefox checks)."""
        http = aiohttp.ClientSession()
        try:
            ws = await asyncio.wait_for(http.ws_connect(
                url, headers={"Host": host_header}, max_msg_size=0,
                timeout=aiohttp.ClientWSTimeout(ws_close=5)), timeout)
        except BaseException:
            await http.close()
            raise
        return cls(http, ws)

    def on(self, event: str, listener: Callable[[Event], None]) -> None:
        self._listeners[event].append(listener)

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   timeout: float = 60.0) -> dict[str, Any]:
        command_id = next(self._ids)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = answer
        try:
            await self._ws.send_str(json.dumps(
                {"id": command_id, "method": method, "params": params or {}}))
            reply = await asyncio.wait_for(answer, timeout)
        finally:
            self._pending.pop(command_id, None)
        if reply.get("type") == "error":
            raise BiDiError(method, reply.get("error", "?"), reply.get("message", ""))
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(message.data)
                answer = self._pending.get(data.get("id", -1))
                if answer is not None and not answer.done():
                    answer.set_result(data)
                elif data.get("type") == "event":
                    for listener in self._listeners.get(data["method"], []):
                        try:
                            listener(data.get("params", {}))
                        except Exception:  # one bad listener must not end the session
                            traceback.print_exc()
        finally:
            for answer in self._pending.values():
                if not answer.done():
                    answer.set_exception(ConnectionError("BiDi connection closed"))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._ws.close(), 5)
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
        await self._http.close()


@dataclass(frozen=True)
class RemoteReference:
    """A value BiDi does not copy (a node, a function, a window...): its handles only."""

    type: str
    shared_id: str | None = None
    handle: str | None = None


SPECIAL_NUMBERS = {"NaN": math.nan, "-0": -0.0, "Infinity": math.inf, "-Infinity": -math.inf}


def deserialize(value: dict[str, Any]) -> Any:
    """A BiDi RemoteValue as plain Python: primitives, lists, dicts; anything else a
    RemoteReference."""
    kind = value["type"]
    if kind in ("undefined", "null"):
        return None
    if kind in ("string", "boolean"):
        return value["value"]
    if kind == "number":
        number = value["value"]
        return SPECIAL_NUMBERS[number] if isinstance(number, str) else number
    if kind == "bigint":
        return int(value["value"])
    if kind in ("array", "set"):
        return [deserialize(item) for item in value.get("value", [])]
    if kind in ("object", "map"):
        return {_key(key): deserialize(item) for key, item in value.get("value", [])}
    if kind == "date":
        return value["value"]
    if kind == "regexp":
        return f"/{value['value']['pattern']}/{value['value'].get('flags', '')}"
    return RemoteReference(kind, value.get("sharedId"), value.get("handle"))


def _key(key: str | dict[str, Any]) -> Any:
    if isinstance(key, str):
        return key
    plain = deserialize(key)
    return plain if isinstance(plain, str | int | float | bool | None) else json.dumps(plain)


def serialize(value: Any) -> dict[str, Any]:
    """A Python value as a BiDi LocalValue, for function arguments."""
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool):
        return {"type": "boolean", "value": value}
    if isinstance(value, int):
        if abs(value) > 2**53:
            return {"type": "bigint", "value": str(value)}
        return {"type": "number", "value": value}
    if isinstance(value, float):
        if math.isnan(value):
            return {"type": "number", "value": "NaN"}
        if math.isinf(value):
            return {"type": "number", "value": "Infinity" if value > 0 else "-Infinity"}
        if value == 0 and math.copysign(1, value) < 0:
            return {"type": "number", "value": "-0"}
        return {"type": "number", "value": value}
    if isinstance(value, str):
        return {"type": "string", "value": value}
    if isinstance(value, list | tuple):
        return {"type": "array", "value": [serialize(item) for item in value]}
    if isinstance(value, dict):
        return {"type": "object",
                "value": [[str(key), serialize(item)] for key, item in value.items()]}
    if isinstance(value, RemoteReference):
        return {"sharedId": value.shared_id} if value.shared_id else {"handle": value.handle}
    raise TypeError(f"cannot pass {type(value).__name__} to the page")


# Finds the element, scrolls it to the middle of the viewport and gives the point a real
# pointer should press: its centre, provided nothing else covers it there.
ELEMENT_CENTRE = """(selector) => {
  const el = document.querySelector(selector);
  if (!el) return "no element matches";
  el.scrollIntoView({block: "center", inline: "center", behavior: "instant"});
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) return "element has no size (hidden?)";
  const x = r.left + r.width / 2, y = r.top + r.height / 2;
  const top = document.elementFromPoint(x, y);
  if (top !== el && !el.contains(top)) return "element is covered by " + (top && top.tagName);
  return [Math.round(x), Math.round(y)];
}"""

FOCUS_AND_SELECT = """(selector) => {
  const el = document.querySelector(selector);
  if (!el) return false;
  el.focus();
  if (typeof el.select === "function") el.select();
  else document.getSelection().selectAllChildren(el);
  return el.value !== undefined ? el.value.length > 0 : el.textContent.length > 0;
}"""

BACKSPACE = "\ue003"


@dataclass(frozen=True)
class LogEntry:
    """A console message or an uncaught exception ('javascript') from any page."""

    level: str
    text: str
    kind: str
    context: str = ""


class FirefoxTab:
    """One top-level browsing context."""

    def __init__(self, bidi: BiDiConnection, context: str) -> None:
        self.bidi = bidi
        self.context = context

    async def goto(self, url: str, wait: str = "complete", timeout: float = 60.0) -> None:
        await self.bidi.send("browsingContext.navigate",
                             {"context": self.context, "url": url, "wait": wait}, timeout)

    async def evaluate(self, expression: str, user_activation: bool = False) -> Any:
        """The expression's value (a promise awaited), as plain Python."""
        params: dict[str, Any] = {"expression": expression, "awaitPromise": True,
                                  "target": {"context": self.context}}
        if user_activation:
            params["userActivation"] = True
        return self._result(await self.bidi.send("script.evaluate", params))

    async def call(self, function_declaration: str, *args: Any) -> Any:
        """Call a JS function (arrow or `function`) with Python values as arguments."""
        return self._result(await self.bidi.send("script.callFunction", {
            "functionDeclaration": function_declaration,
            "arguments": [serialize(arg) for arg in args],
            "awaitPromise": True,
            "target": {"context": self.context},
        }))

    @staticmethod
    def _result(reply: dict[str, Any]) -> Any:
        if reply.get("type") == "exception":
            details = reply.get("exceptionDetails", {})
            raise JavaScriptError(details.get("text") or json.dumps(details)[:500])
        return deserialize(reply["result"])

    async def click(self, selector: str, timeout: float = 15.0) -> None:
        """A real mouse click at the element's centre (trusted events, user activation)."""
        async def centre() -> list[int]:
            found = await self.call(ELEMENT_CENTRE, selector)
            if isinstance(found, str):
                raise LookupError(f"{selector}: {found}")
            return [int(found[0]), int(found[1])]

        x, y = await poll(centre, timeout, 0.1, f"clickable {selector}")
        await self._actions([{
            "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
            "actions": [
                {"type": "pointerMove", "x": x, "y": y, "origin": "viewport"},
                {"type": "pointerDown", "button": 0},
                {"type": "pointerUp", "button": 0},
            ],
        }])

    async def fill(self, selector: str, text: str, timeout: float = 15.0) -> None:
        """Replace a field's text by typing it (real key events, as a person would)."""
        await self.click(selector, timeout)
        had_text = await self.call(FOCUS_AND_SELECT, selector)
        keys = [*text] if text else ([BACKSPACE] if had_text else [])
        if keys:
            await self._actions([{
                "type": "key", "id": "keyboard",
                "actions": [a for key in keys for a in (
                    {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key})],
            }])

    async def _actions(self, actions: list[dict[str, Any]]) -> None:
        await self.bidi.send("input.performActions", {"context": self.context,
                                                      "actions": actions})

    async def wait_for(self, predicate: str, timeout: float = 15.0,
                       interval: float = 0.1) -> Any:
        """Poll a JS expression until it is truthy; gives its value."""
        return await poll(lambda: self.evaluate(predicate), timeout, interval, predicate)

    async def screenshot(self, path: str | Path) -> Path:
        reply = await self.bidi.send("browsingContext.captureScreenshot",
                                     {"context": self.context})
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(reply["data"]))
        return target

    async def set_viewport(self, width: int, height: int, device_pixel_ratio: float = 1) -> None:
        await self.bidi.send("browsingContext.setViewport", {
            "context": self.context, "viewport": {"width": width, "height": height},
            "devicePixelRatio": device_pixel_ratio})

    async def close(self) -> None:
        await self.bidi.send("browsingContext.close", {"context": self.context})


# What a profile keeps from its first run that makes the next start quicker (start-up
# cache, add-on database, created databases); never site data, caches or the prefs.
NOT_TEMPLATED = shutil.ignore_patterns(
    "lock", ".parentlock", "prefs.js", "user.js", "WebDriverBiDiServer.json", "cache2",
    "storage", "sessionstore*", "sessionCheckpoints.json", "crashes", "minidumps",
    "datareporting", "safebrowsing", "thumbnails", "*.sqlite-wal", "*.sqlite-shm")


class _Template:
    """One warmed profile per test process, built by the first launch, removed at exit."""

    path: Path | None = None
    failed = False


async def _warm_template(timeout: float) -> Path | None:
    if _Template.path is not None or _Template.failed:
        return _Template.path
    _Template.failed = True  # a second caller meanwhile, or a failure: cold profiles
    firefox = await Firefox.start(warm=False, timeout=timeout)
    try:
        # Shut down cleanly so Firefox writes its start-up cache out.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(firefox._session().send("browser.close"), 15)
        await asyncio.wait_for(firefox.process.wait(), 30)
        place = Path(tempfile.mkdtemp(prefix="erv-firefox-template-"))
        atexit.register(shutil.rmtree, place, True)
        shutil.copytree(firefox.profile, place / "profile", symlinks=True,
                        ignore=NOT_TEMPLATED)
        _Template.path, _Template.failed = place / "profile", False
    except (OSError, TimeoutError):
        pass
    finally:
        await firefox.close()
    return _Template.path


@dataclass
class Firefox:
    """A running Firefox ESR with one BiDi session. `log` gathers every console message and
    uncaught exception from all its pages; `errors` is the error-level part of it."""

    process: asyncio.subprocess.Process
    profile: Path
    tag: str
    output: deque[str] = field(default_factory=lambda: deque(maxlen=300))
    log: list[LogEntry] = field(default_factory=list)
    bidi: BiDiConnection | None = None
    _tab: FirefoxTab | None = None
    _drain: asyncio.Task[None] | None = None
    _closed: bool = False

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, prefs: dict[str, Any] | None = None, *,
                     wrapper: Sequence[str] | None = None, env: dict[str, str] | None = None,
                     connect_via: ConnectVia | None = None,
                     geolocation: Geolocation = Geolocation(),
                     loopback_ice: bool = True, warm: bool = True, timeout: float = 90.0,
                     ) -> AsyncIterator[Firefox]:
        """Start Firefox (in `wrapper`, e.g. ["ip", "netns", "exec", ns], if given); closed
        and its profile deleted on the way out, whatever happened inside.

        connect_via(port) gives the (host, port) to dial for Firefox's BiDi port, for when
        Firefox's 127.0.0.1 is not ours (a network namespace behind a port forwarder).
        warm: start from a copy of a profile Firefox has already initialised once in this
        test process (half the start-up time); False for a profile Firefox has never seen."""
        firefox = await cls.start(prefs, wrapper=wrapper, env=env, connect_via=connect_via,
                                  geolocation=geolocation, loopback_ice=loopback_ice,
                                  warm=warm, timeout=timeout)
        try:
            yield firefox
        finally:
            await firefox.close()

    @classmethod
    async def start(cls, prefs: dict[str, Any] | None = None, *,
                    wrapper: Sequence[str] | None = None, env: dict[str, str] | None = None,
                    connect_via: ConnectVia | None = None,
                    geolocation: Geolocation = Geolocation(),
                    loopback_ice: bool = True, warm: bool = True,
                    timeout: float = 90.0) -> Firefox:
        """As launch, for a caller that closes it itself (always call close())."""
        template = await _warm_template(timeout) if warm else None
        profile = Path(tempfile.mkdtemp(prefix="erv-firefox-"))
        if template is not None:
            shutil.copytree(template, profile, symlinks=True, dirs_exist_ok=True)
        all_prefs = {**QUIET_PREFS, **MEDIA_PREFS, **geolocation_prefs(geolocation),
                     "media.peerconnection.ice.loopback": loopback_ice, **(prefs or {})}
        (profile / "user.js").write_text(user_js(all_prefs))
        full_env, tag = tagged_env({"MOZ_CRASHREPORTER_DISABLE": "1",
                                    "MOZ_CRASHREPORTER": "0", **(env or {})})
        try:
            process = await asyncio.create_subprocess_exec(
                *(wrapper or []), FIREFOX, "--headless", "--no-remote",
                "--remote-debugging-port", "0", "--profile", str(profile), "about:blank",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=full_env, start_new_session=True)
        except BaseException:
            shutil.rmtree(profile, ignore_errors=True)
            raise
        firefox = cls(process, profile, tag)
        try:
            await asyncio.wait_for(firefox._connect(connect_via), timeout)
        except BaseException as exc:
            await firefox.close()
            if isinstance(exc, Exception):
                tail = "\n".join(firefox.output)
                raise RuntimeError(f"Firefox did not start: {exc!r}\n{tail}") from exc
            raise
        return firefox

    async def _connect(self, connect_via: ConnectVia | None) -> None:
        host, port = await self._listening()
        self._drain = asyncio.create_task(self._keep_draining())
        dial_host, dial_port = await connect_via(port) if connect_via else (host, port)
        self.bidi = await BiDiConnection.open(f"ws://{dial_host}:{dial_port}/session",
                                              f"{host}:{port}", timeout=30)
        await self.bidi.send("session.new", {"capabilities": {"alwaysMatch": {
            "acceptInsecureCerts": True, "unhandledPromptBehavior": {"default": "accept"}}}})
        self.bidi.on("log.entryAdded", self._logged)
        await self.bidi.send("session.subscribe", {"events": ["log.entryAdded"]})
        tree = await self.bidi.send("browsingContext.getTree", {"maxDepth": 0})
        self._tab = FirefoxTab(self.bidi, tree["contexts"][0]["context"])

    async def _listening(self) -> tuple[str, int]:
        """Read Firefox's output until it says where BiDi listens (must keep reading after:
        a full pipe would block Firefox)."""
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            text = line.decode(errors="replace").rstrip()
            self.output.append(text)
            if match := LISTENING.search(text):
                return match.group(1), int(match.group(2))
        raise RuntimeError(f"Firefox exited ({await self.process.wait()}) before BiDi listened")

    async def _keep_draining(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.output.append(line.decode(errors="replace").rstrip())

    def _logged(self, params: Event) -> None:
        self.log.append(LogEntry(level=params.get("level", ""), text=params.get("text", ""),
                                 kind=params.get("type", ""),
                                 context=params.get("source", {}).get("context", "")))

    @property
    def errors(self) -> list[str]:
        """Texts of console.error calls and uncaught exceptions, in order."""
        return [entry.text for entry in self.log if entry.level == "error"]

    @property
    def tab(self) -> FirefoxTab:
        """The tab Firefox opened with."""
        if self._tab is None:
            raise RuntimeError("Firefox is not connected")
        return self._tab

    def _session(self) -> BiDiConnection:
        if self.bidi is None:
            raise RuntimeError("Firefox is not connected")
        return self.bidi

    async def new_tab(self) -> FirefoxTab:
        reply = await self._session().send("browsingContext.create", {"type": "tab"})
        return FirefoxTab(self._session(), reply["context"])

    async def add_init_script(self, source: str) -> str:
        """Run `source` (statements) in every new document before the page's own scripts;
        returns the id remove_init_script takes."""
        reply = await self._session().send("script.addPreloadScript",
                                           {"functionDeclaration": f"() => {{\n{source}\n}}"})
        return str(reply["script"])

    async def remove_init_script(self, script_id: str) -> None:
        await self._session().send("script.removePreloadScript", {"script": script_id})

    def pids(self) -> set[int]:
        """Every live process of this Firefox (the main one, content processes, helpers)."""
        return tagged_pids(self.tag)

    async def close(self) -> None:
        """Kill Firefox and all its processes and delete the profile. Safe to call twice,
        and after a failed start."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.bidi is not None:
                await self.bidi.close()
        finally:
            try:
                await kill_tree(self.tag, [self.process])
            finally:
                await reap(self.process)
                if self._drain is not None:
                    self._drain.cancel()
                    with contextlib.suppress(BaseException):
                        await self._drain
                shutil.rmtree(self.profile, ignore_errors=True)
