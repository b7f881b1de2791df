"""The Firefox (BiDi) and WebKit (WebDriver) harnesses work, on a tiny page served here.

http://127.0.0.1 is a secure context, so getUserMedia and geolocation work without TLS.
Each browser fixture checks on teardown that every process it started is gone (a zombie
awaiting its reaper counts as gone), whether the test passed or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser

from tests.support.browser_page import BrowserPage, alive, poll
from tests.support.firefox import FIREFOX, Firefox, Geolocation, deserialize, serialize
from tests.support.webkit import MINIBROWSER, WEBDRIVER, WebKit

PAGES = {
    "blank": "<!doctype html><meta charset=utf-8><title>blank</title><body></body>",
    # The first script runs before anything else of the page's: it sees the init script.
    "form": """<!doctype html><meta charset=utf-8><title>form</title>
<script>
  window.sawInit = window.__initRan === true;
  console.error("page console error");
  setTimeout(() => { throw new Error("page uncaught error"); }, 0);
</script>
<input id="name" value="old">
<button id="go" style="margin-top: 2500px">Go</button>
<script>
  document.getElementById("go").addEventListener("click", (event) => {
    window.clicked = {
      trusted: event.isTrusted,
      active: navigator.userActivation ? navigator.userActivation.isActive : null,
      name: document.getElementById("name").value,
    };
  });
</script>""",
}

PLAY_CAMERA = """async () => {
  const stream = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
  const video = document.createElement("video");
  Object.assign(video, {muted: true, playsInline: true, autoplay: true, srcObject: stream});
  document.body.append(video);
  await video.play();
  while (video.videoWidth === 0) await new Promise((r) => setTimeout(r, 50));
  return {tracks: stream.getTracks().map((t) => t.kind).sort(), width: video.videoWidth};
}"""

WHERE_AM_I = """new Promise((resolve) => navigator.geolocation.getCurrentPosition(
  (p) => resolve([p.coords.latitude, p.coords.longitude, p.coords.accuracy]),
  (e) => resolve({error: e.code, message: e.message}), {timeout: 10000}))"""

VIDEO_CODECS = """["RTCRtpSender", "RTCRtpReceiver"].map((side) =>
  window[side].getCapabilities("video").codecs.map((c) => c.mimeType.toLowerCase()))"""

# Two peer connections in one page, given only each other's trickled candidates (the SDP
# carries none), with `loopback` only those on 127.0.0.1, so ICE must succeed over loopback
# (Chromium never gathers loopback candidates); then video frames must be decoded.
LOOPBACK_CALL = """async ([codec, loopback]) => {
  const stream = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
  const a = new RTCPeerConnection(), b = new RTCPeerConnection();
  const relay = (to) => (e) => {
    const wanted = !loopback || (e.candidate && e.candidate.candidate.includes(" 127.0.0.1 "));
    if (e.candidate && wanted) to.addIceCandidate(e.candidate);
  };
  a.onicecandidate = relay(b);
  b.onicecandidate = relay(a);
  for (const track of stream.getTracks()) a.addTrack(track, stream);
  if (codec) {
    const wanted = RTCRtpSender.getCapabilities("video").codecs
      .filter((c) => c.mimeType.toLowerCase() === codec);
    a.getTransceivers().find((t) => t.sender.track.kind === "video").setCodecPreferences(wanted);
  }
  const bare = (d) => ({type: d.type, sdp: d.sdp.replace(/a=candidate:.*\\r\\n/g, "")});
  await a.setLocalDescription();
  await b.setRemoteDescription(bare(a.localDescription));
  await b.setLocalDescription();
  await a.setRemoteDescription(bare(b.localDescription));
  const started = Date.now();
  const result = {frames: 0, codec: "", address: "", state: ""};
  while (Date.now() - started < 20000 && result.frames < 5) {
    await new Promise((r) => setTimeout(r, 200));
    result.state = b.connectionState;
    const stats = await b.getStats();
    stats.forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") {
        result.frames = r.framesDecoded || 0;
        result.codec = stats.get(r.codecId) ? stats.get(r.codecId).mimeType : "";
      }
      if (r.type === "candidate-pair" && r.state === "succeeded" && r.nominated) {
        const local = stats.get(r.localCandidateId);
        result.address = local ? (local.address || local.ip) : "";
      }
    });
  }
  a.close();
  b.close();
  stream.getTracks().forEach((t) => t.stop());
  return result;
}"""

# What a browser without WebRTC will do: a still from the camera, as JPEG, over HTTP(S).
SEND_STILL = """async (url) => {
  const stream = await navigator.mediaDevices.getUserMedia({video: true});
  const track = stream.getVideoTracks()[0];
  const video = document.createElement("video");
  Object.assign(video, {muted: true, playsInline: true, srcObject: stream});
  document.body.append(video);
  await video.play();
  while (video.videoWidth === 0) await new Promise((r) => setTimeout(r, 50));
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const context = canvas.getContext("2d");
  context.drawImage(video, 0, 0);
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
  const shades = new Set();
  for (let i = 0; i < pixels.length; i += 4 * 97) shades.add(pixels[i]);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.8));
  const response = await fetch(url, {method: "POST", body: blob,
                                     headers: {"Content-Type": "image/jpeg"}});
  track.stop();
  return {kind: track.kind, label: track.label, width: canvas.width, shades: shades.size,
          type: blob.type, size: blob.size, status: response.status,
          received: (await response.json()).size};
}"""

FAKE_GEOLOCATION = """void Object.defineProperty(navigator, "geolocation", {
  configurable: true,
  value: {
    getCurrentPosition(ok) {
      ok({coords: {latitude: 53.4808, longitude: -2.2426, accuracy: 20}, timestamp: Date.now()});
    },
    watchPosition(ok) { this.getCurrentPosition(ok); return 1; },
    clearWatch() {},
  },
})"""


@dataclass
class Site:
    url: str
    uploads: list[tuple[str, bytes]] = field(default_factory=list)


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    """The test pages on 127.0.0.1, and an upload endpoint that keeps what it is sent."""
    uploads: list[tuple[str, bytes]] = []

    async def page(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in PAGES:
            raise web.HTTPNotFound()
        return web.Response(text=PAGES[name], content_type="text/html")

    async def upload(request: web.Request) -> web.Response:
        body = await request.read()
        uploads.append((request.content_type, body))
        return web.json_response({"size": len(body)})

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_get("/{name}", page)
    app.router.add_post("/upload", upload)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield Site(f"http://127.0.0.1:{runner.addresses[0][1]}", uploads)
    finally:
        await runner.cleanup()


def need(*programs: str) -> None:
    """Fail, as the Chromium fixture does, naming what CI must install."""
    missing = [p for p in programs if not (shutil.which(p) or Path(p).is_file())]
    if missing:
        pytest.fail(f"missing {missing}: `apt-get install firefox-esr webkit2gtk-driver xvfb`")


def assert_all_gone(pids: set[int]) -> None:
    assert pids, "the harness reported no processes at all"
    survivors = sorted(pid for pid in pids if alive(pid))
    assert not survivors, f"processes left behind: {survivors}"


@pytest.fixture
async def firefox() -> AsyncIterator[Firefox]:
    need(FIREFOX)
    async with Firefox.launch() as ff:
        yield ff
        started = ff.pids()
    assert_all_gone(started)
    assert not ff.profile.exists()


@pytest.fixture
async def webkit() -> AsyncIterator[WebKit]:
    need(WEBDRIVER, MINIBROWSER, "Xvfb")
    async with WebKit.launch() as wk:
        yield wk
        started = wk.pids()
    assert_all_gone(started)
    assert not wk.workdir.exists()


async def click_and_fill(page: BrowserPage, url: str) -> dict[str, object]:
    """Written once for either browser: a typed name, then a real click far below the fold."""
    await page.goto(url)
    await page.fill("#name", "Siân Jones")
    await page.click("#go")
    clicked = await page.wait_for("window.clicked", timeout=20)
    assert isinstance(clicked, dict)
    return clicked


async def eventually(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    async def now() -> bool:
        return check()

    await poll(now, timeout, 0.1, what)


def test_remote_values_round_trip_plain_python() -> None:
    value = {"a": [1, "two", None, True, 1.5], "b": {"c": -3}}
    assert deserialize(serialize(value)) == value


async def test_firefox_camera_microphone_and_location(firefox: Firefox, site: Site) -> None:
    tab = firefox.tab
    await tab.goto(f"{site.url}/blank")
    played = await tab.call(PLAY_CAMERA)
    assert played["tracks"] == ["audio", "video"]
    assert played["width"] > 0
    where = await tab.evaluate(WHERE_AM_I)
    default = Geolocation()
    assert where == [default.latitude, default.longitude, default.accuracy]


async def test_firefox_click_fill_init_script_and_console(firefox: Firefox, site: Site,
                                                          tmp_path: Path) -> None:
    await firefox.add_init_script("window.__initRan = true;")
    tab = await firefox.new_tab()
    clicked = await click_and_fill(tab, f"{site.url}/form")
    assert clicked == {"trusted": True, "active": True, "name": "Siân Jones"}
    assert await tab.evaluate("window.sawInit") is True
    await eventually(lambda: len(firefox.errors) >= 2, "both page errors logged")
    assert "page console error" in firefox.errors
    assert any("page uncaught error" in text for text in firefox.errors)
    assert await tab.call("(x) => x", {"n": [1, "b", None]}) == {"n": [1, "b", None]}
    shot = await tab.screenshot(tmp_path / "firefox.png")
    assert shot.read_bytes().startswith(b"\x89PNG")


async def test_firefox_peer_connections_connect_over_loopback_without_h264(
        firefox: Firefox, site: Site) -> None:
    """Finding: Firefox ESR sends and receives H264 in WebRTC only through Mozilla's
    downloaded OpenH264 plugin (which Debian does not package; system libavcodec does not
    help WebRTC). So a Firefox caller and the console must agree on VP8 (or VP9/AV1)."""
    tab = firefox.tab
    await tab.goto(f"{site.url}/blank")
    call = await tab.call(LOOPBACK_CALL, [None, True])
    assert call["state"] == "connected", call
    assert call["frames"] > 0, call
    assert call["address"] == "127.0.0.1", call
    send, receive = await tab.evaluate(VIDEO_CODECS)
    print("Firefox ESR video codecs: send", send, "receive", receive)
    assert "video/vp8" in send and "video/vp8" in receive
    assert "video/h264" not in send and "video/h264" not in receive


async def test_debian_chromium_sends_and_receives_h264(browser: Browser, site: Site) -> None:
    """Finding: Debian's Chromium encodes H264 (system OpenH264) and decodes it (its
    ffmpeg): an H264-only call between two of its peer connections decodes frames."""
    context = await browser.new_context(permissions=["camera", "microphone"])
    try:
        page = await context.new_page()
        await page.goto(f"{site.url}/blank")
        send, receive = await page.evaluate(VIDEO_CODECS)
        print("Chromium video codecs: send", send, "receive", receive)
        assert "video/h264" in send and "video/h264" in receive
        call = await page.evaluate(LOOPBACK_CALL, ["video/h264", False])
        assert call["codec"].lower() == "video/h264" and call["frames"] > 0, call
    finally:
        await context.close()


class Forwarder:
    """A TCP forwarder on another port, standing in for PortBridge into a namespace."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def to(self, port: int) -> tuple[str, int]:
        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            far_reader, far_writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.gather(pump(reader, far_writer), pump(far_reader, writer))

        def track(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.create_task(handle(reader, writer))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

        self.server = await asyncio.start_server(track, "127.0.0.1", 0)
        return "127.0.0.1", int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_firefox_reached_through_a_forwarder(site: Site) -> None:
    need(FIREFOX)
    forwarder = Forwarder()
    dialled: list[int] = []

    async def via(port: int) -> tuple[str, int]:
        address = await forwarder.to(port)
        dialled.append(address[1])
        return address

    try:
        async with Firefox.launch(connect_via=via) as ff:
            await ff.tab.goto(f"{site.url}/blank")
            assert await ff.tab.evaluate("document.title") == "blank"
            started = ff.pids()
    finally:
        await forwarder.stop()
    assert dialled
    assert_all_gone(started)


@pytest.mark.parametrize("browser_name", ["firefox", "webkit"])
async def test_processes_killed_when_the_test_body_fails(browser_name: str) -> None:
    started: set[int] = set()
    place = Path("/nonexistent")
    with pytest.raises(ZeroDivisionError):
        if browser_name == "firefox":
            need(FIREFOX)
            async with Firefox.launch() as ff:
                started, place = ff.pids(), ff.profile
                _ = 1 / 0
        else:
            need(WEBDRIVER, MINIBROWSER, "Xvfb")
            async with WebKit.launch() as wk:
                started, place = wk.pids(), wk.workdir
                _ = 1 / 0
    assert_all_gone(started)
    assert not place.exists()


async def test_webkit_has_capture_but_no_peer_connection(webkit: WebKit, site: Site) -> None:
    await webkit.goto(f"{site.url}/blank")
    assert await webkit.evaluate("typeof RTCPeerConnection") == "undefined"
    still = await webkit.call(SEND_STILL, f"{site.url}/upload")
    assert still["kind"] == "video" and "Mock" in still["label"], still
    assert still["width"] > 0 and still["shades"] > 1, still
    assert still["type"] == "image/jpeg" and still["size"] > 1000, still
    assert still["status"] == 200 and still["received"] == still["size"], still
    [(content_type, body)] = site.uploads
    assert content_type == "image/jpeg" and body.startswith(b"\xff\xd8")


async def test_webkit_click_fill_and_error_trap(webkit: WebKit, site: Site,
                                                tmp_path: Path) -> None:
    clicked = await click_and_fill(webkit, f"{site.url}/form")
    assert clicked == {"trusted": True, "active": True, "name": "Siân Jones"}
    assert await webkit.evaluate("window.sawInit") is False  # no init scripts in WebDriver
    assert await webkit.evaluate_async("new Promise((r) => setTimeout(() => r(7), 10))") == 7
    await webkit.install_error_trap()
    await webkit.evaluate("setTimeout(() => console.error('late error'), 0)")
    await webkit.wait_for("window.__harnessErrors.length > 0")
    assert await webkit.errors() == ["late error"]
    shot = await webkit.screenshot(tmp_path / "webkit.png")
    assert shot.read_bytes().startswith(b"\x89PNG")


async def test_webkit_geolocation_needs_a_shim(webkit: WebKit, site: Site) -> None:
    """Finding: navigator.geolocation exists, but with no GeoClue (and no permission UI in
    automation) getCurrentPosition never answers, not even with an error. A test replaces
    it after navigation, and the page's own code then gets the test's position."""
    await webkit.goto(f"{site.url}/blank")
    assert await webkit.evaluate("typeof navigator.geolocation") == "object"
    native = await webkit.evaluate(
        f"Promise.race([{WHERE_AM_I}, new Promise((r) => setTimeout(() => r('silent'), 3000))])")
    print("WebKit native getCurrentPosition:", native)
    assert not isinstance(native, list), native
    await webkit.evaluate(FAKE_GEOLOCATION)
    assert await webkit.evaluate(WHERE_AM_I) == [53.4808, -2.2426, 20]

