"""Part `field`: real calls through the network lab, timed (the scenarios of
tests/field/test_field_calls.py, with the rig of tests/support/field_call.py).

Each call is a fresh service (TLS on 198.18.0.1:443 in the lab's `ctl` namespace) and fresh
browsers: the handler's Chromium in `ctl`, the caller's behind the link emulator and the
NAT/firewall. coturn (198.18.0.3) and the lab itself are started once for the part and reset
between calls. Repetitions are interleaved (round 1: every scenario, round 2: every
scenario...), so a busy minute on this shared machine lands on all scenarios alike.

Per call:
- from the caller's tap on Join to the handler's first decoded frame (the stills scenario:
  to the first still picture shown in the call view);
- a window from 16 s to 20 s after the tap: what the handler receives (fps, resolution, video
  kbit/s, audio packets/s, concealment), what the caller sends (outbound-rtp bytesSent per peer
  connection), the uplink on the wire (the link emulator's counters), the caller's selected
  pair and the rung the call view shows;
- blackouts and the network change, after that window: from the blackout's end (or the
  switch) until frames decode again on the handler (on a new pair, for the switch);
- the weak link, after that window: the specialist is invited and accepts (desk toggle,
  invite, accept, as in tests/browser/test_whole_call.py) and the same window is taken again
  16-20 s after the specialist's first frame, for both receivers and the caller's uplink.

ERV_BENCH_FIELD_RUNS (3) repetitions; ERV_BENCH_FIELD_SCENARIOS (comma-separated keys, default
all) picks scenarios, e.g. `ERV_BENCH_PARTS=field ERV_BENCH_FIELD_RUNS=1
ERV_BENCH_FIELD_SCENARIOS=direct python -m bench.run` as a smoke run.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import statistics
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import ROOT, env_int, log

RUNS = 3
STEADY_AT_S = 20.0  # the steady window ends this long after the tap on Join
WINDOW_S = 4.0
FIRST_FRAME_TIMEOUT_S = 60.0
WEAK_FIRST_FRAME_TIMEOUT_S = 90.0
FIRST_STILL_TIMEOUT_S = 40.0
RECOVERY_TIMEOUT_S = 45.0
POLL_MS = 100
SETTLE_MS = 2000  # after video is back, so the caller's socket can finish resuming too
CHROMIUM = "/usr/bin/chromium"
TURNSERVER = "/usr/bin/turnserver"


@dataclass(frozen=True)
class Scenario:
    """One field scenario: the network, whether TURN is offered, what happens mid-call."""

    key: str
    label: str
    firewall: str = "open"
    turn: bool = True
    weak: bool = False
    blackout_s: float = 0.0
    switch: bool = False
    stills: bool = False
    goal_s: float | None = None  # first-frame goal
    relay: str | None = None  # the relay protocol the call should settle on


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("direct", "direct through the NAT", turn=False, goal_s=1.0),
    Scenario("turn_udp", "UDP blocked except TURN (relay UDP)", "udp_turn_only", goal_s=1.5,
             relay="udp"),
    Scenario("turn_tcp", "all UDP blocked (TURN/TCP)", "no_udp", goal_s=1.5, relay="tcp"),
    Scenario("turn_tls", "only TCP 443 (TURN/TLS)", "tcp443_only", goal_s=1.5, relay="tls"),
    Scenario("weak", "weak link (400 kbit/s, 150 ms, 3% loss)", weak=True, goal_s=4.0),
    Scenario("blackout10", "blackout 10 s", blackout_s=10.0),
    Scenario("blackout30", "blackout 30 s", blackout_s=30.0),
    Scenario("switch", "network change (Wi-Fi to 4G)", switch=True),
    Scenario("stills", "UDP blocked, no TURN (still pictures)", "no_udp", turn=False,
             stills=True),
)

# -- in the pages (window.__pcs is the rig's INSTRUMENT) ----------------------------------------

# In a watching page: what arrives from the caller over `ms` milliseconds. As the rig's
# RECEIVED, but only from peer connections that carry video (only the caller sends video; a
# staff page's link to the other staff member carries that member's voice), and with kbit/s.
RECEIVED_FROM_CALLER = """
async (ms) => {
  const sample = async () => {
    const pcs = {};
    for (const [i, pc] of window.__pcs.entries()) {
      if (pc.connectionState === "closed") continue;
      const s = {frames: 0, bytes: 0, packets: 0, concealed: 0, samples: 0, width: 0, height: 0};
      (await pc.getStats()).forEach((r) => {
        if (r.type !== "inbound-rtp") return;
        if (r.kind === "video") {
          s.frames += r.framesDecoded || 0;
          s.bytes += r.bytesReceived || 0;
          s.width = Math.max(s.width, r.frameWidth || 0);
          s.height = Math.max(s.height, r.frameHeight || 0);
        } else {
          s.packets += r.packetsReceived || 0;
          s.concealed += r.concealedSamples || 0;
          s.samples += r.totalSamplesReceived || 0;
        }
      });
      pcs[i] = s;
    }
    return {pcs, at: performance.now()};
  };
  const a = await sample();
  await new Promise((resolve) => setTimeout(resolve, ms));
  const b = await sample();
  const seconds = (b.at - a.at) / 1000;
  const out = {fps: 0, audio_pps: 0, video_kbit_s: 0, concealment: null, width: 0, height: 0,
               frames: 0, links: 0};
  let concealed = 0, samples = 0;
  for (const [i, s] of Object.entries(b.pcs)) {
    if (s.bytes === 0) continue;
    const p = a.pcs[i] || {frames: 0, bytes: 0, packets: 0, concealed: 0, samples: 0};
    out.links += 1;
    out.frames += s.frames;
    out.fps += (s.frames - p.frames) / seconds;
    out.video_kbit_s += (s.bytes - p.bytes) * 8 / 1000 / seconds;
    out.audio_pps += (s.packets - p.packets) / seconds;
    out.width = Math.max(out.width, s.width);
    out.height = Math.max(out.height, s.height);
    concealed += s.concealed - p.concealed;
    samples += s.samples - p.samples;
  }
  out.concealment = samples > 0 ? concealed / samples : null;
  return out;
}
"""


# In the caller's page: what each live peer connection sends over `ms` milliseconds.
SENT = """
async (ms) => {
  const sample = async () => {
    const links = {};
    for (const [i, pc] of window.__pcs.entries()) {
      if (pc.connectionState === "closed") continue;
      const stats = await pc.getStats();
      const link = {video: 0, audio: 0, headers: 0, width: 0, height: 0, fps: null,
                    limitation: null, target: null, available: null};
      stats.forEach((r) => {
        if (r.type === "outbound-rtp") {
          link.headers += r.headerBytesSent || 0;
          if (r.kind === "video") {
            link.video += r.bytesSent || 0;
            link.width = Math.max(link.width, r.frameWidth || 0);
            link.height = Math.max(link.height, r.frameHeight || 0);
            link.fps = r.framesPerSecond ?? link.fps;
            link.limitation = r.qualityLimitationReason || link.limitation;
            link.target = r.targetBitrate ?? link.target;
          } else {
            link.audio += r.bytesSent || 0;
          }
        }
        if (r.type === "transport" && r.selectedCandidatePairId) {
          const pair = stats.get(r.selectedCandidatePairId);
          if (pair && pair.availableOutgoingBitrate !== undefined) {
            link.available = pair.availableOutgoingBitrate;
          }
        }
      });
      links[i] = link;
    }
    return {links, at: performance.now()};
  };
  const a = await sample();
  await new Promise((resolve) => setTimeout(resolve, ms));
  const b = await sample();
  const kbit = (bytes) => bytes * 8 / (b.at - a.at);
  const out = [];
  for (const [i, link] of Object.entries(b.links)) {
    const before = a.links[i] || {video: 0, audio: 0, headers: 0};
    if (link.video + link.audio === 0) continue;
    out.push({pc: Number(i), video_kbit_s: kbit(link.video - before.video),
              audio_kbit_s: kbit(link.audio - before.audio),
              header_kbit_s: kbit(link.headers - before.headers),
              width: link.width, height: link.height, fps: link.fps,
              limitation: link.limitation,
              target_kbit_s: link.target === null ? null : link.target / 1000,
              available_kbit_s: link.available === null ? null : link.available / 1000});
  }
  return out;
}
"""

# In a watching page: framesDecoded per live peer connection (its index in __pcs), so a
# connection replaced during a restart still counts as video coming back.
PC_FRAMES = """
async () => {
  const out = {};
  for (const [i, pc] of window.__pcs.entries()) {
    if (pc.connectionState === "closed") continue;
    let frames = 0;
    (await pc.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") frames += r.framesDecoded || 0;
    });
    out[i] = frames;
  }
  return out;
}
"""

# Added to the caller's and the handler's pages (open_field_call's caller_script and
# staff_script, after the rig's INSTRUMENT): a timeline of the page's signalling socket (its
# `connection-state`) and of each peer connection's connectionState, wall-clock milliseconds.
PAGE_EVENTS = """
(() => {
  window.__events = [];
  const note = (what, state) => window.__events.push([Date.now(), what, state]);
  const Instrumented = window.RTCPeerConnection;
  window.RTCPeerConnection = function (...args) {
    const pc = new Instrumented(...args);
    const name = "pc" + (window.__pcs.length - 1);
    pc.addEventListener("connectionstatechange", () => note(name, pc.connectionState));
    return pc;
  };
  window.RTCPeerConnection.prototype = Instrumented.prototype;
  document.addEventListener("DOMContentLoaded", () => {
    const node = document.querySelector("[data-testid=connection-state]");
    if (!node) return;
    note("socket", node.dataset.state);
    new MutationObserver(() => note("socket", node.dataset.state))
      .observe(node, {attributes: true, attributeFilter: ["data-state"]});
  });
})();
"""

STILLS_SHOWN = """
() => {
  const img = document.querySelector("[data-testid=still-picture]");
  return img && !img.hidden && img.naturalWidth > 0 ? Number(img.dataset.count || 0) : 0;
}
"""


# -- the rig around a call ----------------------------------------------------------------------


@dataclass
class Rig:
    """What lives for the whole part: the lab, coturn and Playwright."""

    lab: Any  # tests.support.netlab.NetLab
    turn: Any  # tests.support.netlab.Turn
    playwright: Any
    tmp: Path


def problems() -> list[str]:
    """Why the part cannot run here (empty if it can)."""
    try:
        import playwright.async_api  # noqa: F401

        from tests.support.netlab import lab_problems
    except ImportError as exc:
        return [f"a package is missing ({exc}): make bench installs .[test,bench]"]
    found = lab_problems()
    for path, package in ((CHROMIUM, "chromium"), (TURNSERVER, "coturn")):
        if not Path(path).exists():
            found.append(f"{path} missing (apt-get install {package}, or make system-deps)")
    return found


def chosen_scenarios() -> list[Scenario]:
    raw = os.environ.get("ERV_BENCH_FIELD_SCENARIOS", "").strip()
    if not raw:
        return list(SCENARIOS)
    by_key = {s.key: s for s in SCENARIOS}
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    unknown = [k for k in keys if k not in by_key]
    if unknown:
        raise ValueError(f"ERV_BENCH_FIELD_SCENARIOS: unknown {unknown}; choose from "
                         f"{', '.join(by_key)}")
    return [by_key[k] for k in keys]


def _prepare(lab: Any, scenario: Scenario, directory: Path) -> None:
    """The lab as the scenario wants it (from its starting state), and the call's folder."""
    from tests.support.netlab import Impairment

    directory.mkdir(parents=True, exist_ok=True)
    lab.reset()
    if scenario.firewall != "open":
        lab.set_firewall(scenario.firewall)
    if scenario.weak:
        weak = Impairment(delay_ms=150, loss=0.03, rate_kbit=400)
        lab.shape(up=weak, down=weak)


async def _specialist_desk(service: Any, browsers: Any) -> Any:
    """A specialist signed in on the desk in the control room, marked available."""
    from server.accounts import StaffRole
    from tests.support.live import PASSWORD

    await service.live.add_staff("sam", StaffRole.SPECIALIST)
    desk = await (await browsers.context(phone=False)).new_page()
    await desk.goto("/login")
    await desk.fill("input[name=username]", "sam")
    await desk.fill("input[name=password]", PASSWORD)
    await desk.click("button[type=submit]")
    await desk.wait_for_load_state()
    await desk.goto("/specialist")
    await desk.get_by_test_id("availability-toggle").click()
    await desk.wait_for_selector("[data-testid=availability-toggle][aria-pressed=true]")
    return desk


async def one_call(rig: Rig, scenario: Scenario, directory: Path) -> dict[str, Any]:
    """A fresh service and fresh browsers for one call of `scenario`; its measures."""
    from tests.support.field_call import field_browsers, field_service, open_field_call

    started = time.monotonic()
    _prepare(rig.lab, scenario, directory)
    turn_urls = rig.turn.urls() if scenario.turn else []
    settings: dict[str, Any] = {"still_every": 2} if scenario.stills else {}
    async with (
        field_service(rig.lab, directory, turn_urls=turn_urls,
                      turn_secret=rig.turn.secret if scenario.turn else "",
                      **settings) as service,
        field_browsers(rig.playwright, rig.lab) as browsers,
    ):
        desk = await _specialist_desk(service, browsers) if scenario.weak else None
        call = await open_field_call(service, browsers, caller_script=PAGE_EVENTS,
                                     staff_script=PAGE_EVENTS)
        await call.join()
        measure = _stills_call(call) if scenario.stills else _video_call(rig, call, scenario, desk)
        out = await measure
        out["setup_s"] = call.joined_at - started
        out["measured_s"] = time.monotonic() - started
    return out


# -- measures -----------------------------------------------------------------------------------


async def _until(page: Any, at: float) -> None:
    left = at - time.monotonic()
    if left > 0:
        await page.wait_for_timeout(left * 1000)


def _uplink(before: dict[str, Any], after: dict[str, Any], seconds: float) -> dict[str, float]:
    """The caller's uplink through the link emulator (every IP packet: media, TURN,
    signalling), between two readings of its counters."""
    up0, up1 = before["up"], after["up"]
    return {
        "offered_kbit_s": (up1["bytes_in"] - up0["bytes_in"]) * 8 / seconds / 1000,
        "delivered_kbit_s": (up1["bytes_out"] - up0["bytes_out"]) * 8 / seconds / 1000,
        "queue_drops_per_s": (up1["dropped_queue"] - up0["dropped_queue"]) / seconds,
        "loss_drops_per_s": (up1["dropped_loss"] - up0["dropped_loss"]) / seconds,
    }


def _sent_totals(links: list[dict[str, Any]]) -> dict[str, Any]:
    video = sum(link["video_kbit_s"] for link in links)
    audio = sum(link["audio_kbit_s"] for link in links)
    headers = sum(link["header_kbit_s"] for link in links)
    return {"links": links, "streams": len(links), "video_kbit_s": video,
            "audio_kbit_s": audio, "total_kbit_s": video + audio,
            "with_headers_kbit_s": video + audio + headers}


async def _window(rig: Rig, call: Any, watchers: dict[str, Any]) -> dict[str, Any]:
    """WINDOW_S of what each watching page receives and what the caller sends, at once."""
    ms = WINDOW_S * 1000
    counters = rig.lab.link_counters() if rig.lab.network == "nat" else None
    started = time.monotonic()
    got = await asyncio.gather(*(page.evaluate(RECEIVED_FROM_CALLER, ms)
                                 for page in watchers.values()),
                               call.caller.evaluate(SENT, ms))
    out: dict[str, Any] = dict(zip(watchers, got[:-1], strict=True))
    out["caller_sent"] = _sent_totals(got[-1])
    if counters is not None:
        out["uplink"] = _uplink(counters, rig.lab.link_counters(), time.monotonic() - started)
    return out


async def _rung(call: Any) -> tuple[str | None, str | None]:
    rung = await call.handler.get_by_test_id("caller-rung").get_attribute("data-state")
    reason = await call.handler.get_by_test_id("caller-rung-reason").get_attribute("data-reason")
    return rung, reason or None


async def _steady(rig: Rig, call: Any, watchers: dict[str, Any]) -> dict[str, Any]:
    """The window ending STEADY_AT_S after the tap on Join, the pair and the rung."""
    await _until(call.handler, call.joined_at + STEADY_AT_S - WINDOW_S)
    out = await _window(rig, call, watchers)
    out["pair"] = await call.pair()
    out["rung"], out["rung_reason"] = await _rung(call)
    return out


async def _video_back(call: Any, since: float, old_pair: dict[str, Any] | None) -> float | None:
    """Seconds from `since` until frames decode on the handler again (between two polls),
    on a pair other than `old_pair` when one is given; None if not within the timeout."""
    previous: dict[str, int] = await call.handler.evaluate(PC_FRAMES)
    while time.monotonic() < since + RECOVERY_TIMEOUT_S:
        await call.handler.wait_for_timeout(POLL_MS)
        now: dict[str, int] = await call.handler.evaluate(PC_FRAMES)
        rising = any(frames > previous.get(pc, 0) for pc, frames in now.items())
        previous = now
        if not rising:
            continue
        if old_pair is not None:
            pair = await call.pair()
            if pair is None or pair == old_pair:
                continue
        return time.monotonic() - since
    return None


async def _timeline(page: Any, start_wall: float) -> dict[str, Any]:
    """What a page went through from `start_wall` (time.time()) on: its socket's and its peer
    connections' states (PAGE_EVENTS), in seconds from then."""
    events = await page.evaluate("() => window.__events || []")
    seen = [(round(ms / 1000 - start_wall, 2), what, state) for ms, what, state in events
            if ms / 1000 >= start_wall]

    def first(what: str, states: tuple[str, ...], after: float | None = None) -> float | None:
        return next((at for at, w, s in seen if w.startswith(what) and s in states
                     and (after is None or at > after)), None)

    lost = first("socket", ("reconnecting",))
    pc_down = first("pc", ("disconnected", "failed"))
    return {"socket_lost_s": lost,
            "socket_back_s": first("socket", ("connected",), lost) if lost is not None else None,
            "pc_down_s": pc_down,
            "pc_up_s": first("pc", ("connected",), pc_down) if pc_down is not None else None,
            "events": seen}


async def _timelines(call: Any, start_wall: float) -> dict[str, Any]:
    return {"caller_timeline": await _timeline(call.caller, start_wall),
            "handler_timeline": await _timeline(call.handler, start_wall)}


async def _recovery(rig: Rig, call: Any, scenario: Scenario) -> dict[str, Any]:
    """The disruption, then how long until video is back; both pages' timelines."""
    if scenario.blackout_s:
        start_wall = time.time()
        rig.lab.blackout(True)
        await call.handler.wait_for_timeout(scenario.blackout_s * 1000)
        rig.lab.blackout(False)
        back = await _video_back(call, time.monotonic(), None)
        await call.handler.wait_for_timeout(SETTLE_MS)
        return {"recovery_s": back, **await _timelines(call, start_wall)}
    before = await call.pair()
    start_wall = time.time()
    rig.lab.switch_caller_network("nat2")
    back = await _video_back(call, time.monotonic(), before)
    await call.handler.wait_for_timeout(SETTLE_MS)
    after = await call.pair()
    timeline = await _timelines(call, start_wall)
    # Measured. Giving the Wi-Fi address back lets the caller's abandoned socket finish its
    # close: otherwise the service's shutdown waits 10 s for a close handshake nobody answers.
    rig.lab.switch_caller_network("nat")
    return {"recovery_s": back, **timeline, "pair_before": before, "pair_after": after}


async def _first_frame(call: Any, timeout: float) -> float | None:  # noqa: ASYNC109
    try:
        return float(await call.first_frame(timeout=timeout))
    except AssertionError:
        return None


async def _video_call(rig: Rig, call: Any, scenario: Scenario, desk: Any) -> dict[str, Any]:
    timeout = WEAK_FIRST_FRAME_TIMEOUT_S if scenario.weak else FIRST_FRAME_TIMEOUT_S
    first = await _first_frame(call, timeout)
    out: dict[str, Any] = {"connected": first is not None, "first_frame_s": first}
    if first is None:
        out["rung"], out["rung_reason"] = await _rung(call)
        return out
    out["steady"] = await _steady(rig, call, {"handler": call.handler})
    if scenario.blackout_s or scenario.switch:
        out.update(await _recovery(rig, call, scenario))
    if desk is not None:
        try:
            out["mesh"] = await _with_specialist(rig, call, desk)
        except Exception as exc:  # the handler-alone figures above still count
            out["mesh_error"] = f"{type(exc).__name__}: {exc}"[:400]
    return out


async def _first_decoded(page: Any, deadline: float) -> float:
    """When `page` first has a decoded video frame (monotonic time)."""
    from tests.support.field_call import FRAMES

    while time.monotonic() < deadline:
        if int(await page.evaluate(FRAMES)) > 0:
            return time.monotonic()
        await page.wait_for_timeout(POLL_MS / 2)
    raise TimeoutError("no frame reached the specialist")


async def _with_specialist(rig: Rig, call: Any, desk: Any) -> dict[str, Any]:
    """Invite the specialist, who accepts; both staff pages then watch the caller."""
    invited = time.monotonic()
    await call.handler.get_by_test_id("invite-specialist").click()
    await desk.get_by_test_id("invitation-alert").wait_for(state="visible", timeout=20_000)
    await desk.get_by_test_id("accept-invitation").click()
    seen = await _first_decoded(desk, invited + FIRST_FRAME_TIMEOUT_S)
    await _until(desk, seen + STEADY_AT_S - WINDOW_S)
    out = await _window(rig, call, {"handler": call.handler, "specialist": desk})
    out["rung"], out["rung_reason"] = await _rung(call)
    out["specialist_first_frame_s"] = seen - invited
    return out


async def _stills_call(call: Any) -> dict[str, Any]:
    """No media path: time to the first still shown, then stills/min in the window."""
    deadline = call.joined_at + FIRST_STILL_TIMEOUT_S
    first = None
    while time.monotonic() < deadline:
        if int(await call.handler.evaluate(STILLS_SHOWN)) > 0:
            first = time.monotonic() - call.joined_at
            break
        await call.handler.wait_for_timeout(POLL_MS)
    out: dict[str, Any] = {"connected": first is not None, "first_still_s": first}
    await _until(call.handler, call.joined_at + STEADY_AT_S - WINDOW_S)
    count = int(await call.handler.evaluate(STILLS_SHOWN))
    got = await call.received(seconds=WINDOW_S)
    shown = int(await call.handler.evaluate(STILLS_SHOWN)) - count
    out["steady"] = {"handler": {**got, "stills_per_min": shown * 60 / WINDOW_S},
                     "pair": await call.pair()}
    out["steady"]["rung"], out["steady"]["rung_reason"] = await _rung(call)
    return out


# -- the part -----------------------------------------------------------------------------------


async def _timed_call(rig: Rig, scenario: Scenario, run: int) -> dict[str, Any]:
    started = time.monotonic()
    directory = rig.tmp / f"{scenario.key}-{run}"
    try:
        sample = await one_call(rig, scenario, directory)
    except Exception as exc:
        traceback.print_exc()
        sample = {"connected": False, "error": f"{type(exc).__name__}: {exc}"[:400]}
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    sample["run"] = run
    sample["call_s"] = time.monotonic() - started
    sample["load_1min"] = os.getloadavg()[0]
    log(f"  field {scenario.key} run {run}: {_brief(sample)}")
    return sample


def _brief(sample: dict[str, Any]) -> str:
    if sample.get("error"):
        return f"error {sample['error'][:160]}"
    first = sample.get("first_frame_s", sample.get("first_still_s"))
    parts = [f"first {'none' if first is None else f'{first:.2f} s'}"]
    handler = sample.get("steady", {}).get("handler")
    if handler:
        parts.append(f"{handler['fps']:.1f} fps {handler['width']}x{handler['height']}")
    if "recovery_s" in sample:
        back = sample["recovery_s"]
        parts.append(f"back {'never' if back is None else f'{back:.2f} s'}")
    mesh = sample.get("mesh")
    if mesh:
        parts.append(f"mesh uplink {mesh['caller_sent']['total_kbit_s']:.0f} kbit/s")
    parts.append(f"call {sample.get('call_s', 0):.0f} s (setup {sample.get('setup_s', 0):.1f} s, "
                 f"after {sample.get('call_s', 0) - sample.get('measured_s', 0):.1f} s)")
    return ", ".join(parts)


async def _all_calls(rig: Rig, scenarios: list[Scenario], runs: int) -> dict[str, list[Any]]:
    samples: dict[str, list[Any]] = {s.key: [] for s in scenarios}
    for run in range(1, runs + 1):
        for scenario in scenarios:
            samples[scenario.key].append(await _timed_call(rig, scenario, run))
    return samples


def code_fingerprint() -> str:
    """A digest of what a call runs (server/, signaling/, web/): another engineer's edit in the
    middle of a run shows as a different digest at the end."""
    digest = hashlib.sha256()
    for folder in ("server", "signaling", "web"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _keep_log(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


async def field(tmp: Path, logs: Path) -> dict[str, Any]:
    found = problems()
    if found:
        log(f"field: skipped: {'; '.join(found)}")
        return {"skipped": "; ".join(found)}
    from playwright.async_api import async_playwright

    from tests.support.netlab import NetLab, Turn

    scenarios = chosen_scenarios()
    runs = env_int("ERV_BENCH_FIELD_RUNS", RUNS)
    log(f"field: {runs} run(s) of {len(scenarios)} scenario(s), interleaved")
    started = time.monotonic()
    code_before = code_fingerprint()
    lab = NetLab().start()
    try:
        turn = Turn(lab, os.urandom(18).hex()).start()
        try:
            async with async_playwright() as playwright:
                rig = Rig(lab, turn, playwright, tmp / "field")
                samples = await _all_calls(rig, scenarios, runs)
        finally:
            _keep_log(logs / "field-turn.log", turn.log())
            turn.stop()
    finally:
        lab.stop()
    result = summarise(scenarios, samples, runs, time.monotonic() - started)
    code_after = code_fingerprint()
    result["code"] = {"before": code_before, "after": code_after,
                      "changed_during_run": code_before != code_after}
    if code_before != code_after:
        log("  field: server/, signaling/ or web/ changed during the run")
    return result


# -- summary ------------------------------------------------------------------------------------


def spread(values: list[float | None]) -> dict[str, Any]:
    """Median, min and max of the values present; n counts them."""
    present = [v for v in values if v is not None]
    if not present:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(present), "min": min(present), "max": max(present),
            "n": len(present)}


def resolution_spread(sizes: list[tuple[int, int]]) -> dict[str, Any]:
    """The median resolution by pixel count (the lower middle for an even count), and the
    smallest and largest."""
    present = sorted((s for s in sizes if s[0] and s[1]), key=lambda s: s[0] * s[1])
    if not present:
        return {"median": None, "min": None, "max": None, "n": 0}

    def name(size: tuple[int, int]) -> str:
        return f"{size[0]}x{size[1]}"

    return {"median": name(present[(len(present) - 1) // 2]), "min": name(present[0]),
            "max": name(present[-1]), "n": len(present)}


def _counts(values: list[str | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        key = value or "none"
        out[key] = out.get(key, 0) + 1
    return out


def _path(pair: dict[str, Any] | None) -> str:
    if not pair:
        return "none"
    if pair.get("local") == "relay":
        return f"relay/{pair.get('relayProtocol')}"
    return f"{pair.get('local')}-{pair.get('remote')}/{pair.get('protocol')}"


def _receiver(windows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "fps": spread([w.get("fps") for w in windows]),
        "resolution": resolution_spread([(w.get("width", 0), w.get("height", 0))
                                         for w in windows]),
        "video_kbit_s": spread([w.get("video_kbit_s") for w in windows]),
        "audio_pps": spread([w.get("audio_pps") for w in windows]),
        "concealment": spread([w.get("concealment") for w in windows]),
        "stills_per_min": spread([w.get("stills_per_min") for w in windows]),
    }


def _sender(windows: list[dict[str, Any]]) -> dict[str, Any]:
    sent = [w["caller_sent"] for w in windows if "caller_sent" in w]
    per_stream = [link["video_kbit_s"] for s in sent for link in s["links"]]
    uplink = [w["uplink"] for w in windows if "uplink" in w]
    return {
        "streams": spread([s["streams"] for s in sent]),
        "total_kbit_s": spread([s["total_kbit_s"] for s in sent]),
        "video_kbit_s": spread([s["video_kbit_s"] for s in sent]),
        "with_headers_kbit_s": spread([s["with_headers_kbit_s"] for s in sent]),
        "video_per_stream_kbit_s": spread(per_stream),
        "sent_resolution": resolution_spread([(link["width"], link["height"])
                                              for s in sent for link in s["links"]]),
        "limitation": _counts([link["limitation"] for s in sent for link in s["links"]]),
        "available_kbit_s": spread([link["available_kbit_s"] for s in sent
                                    for link in s["links"]]),
        "uplink_offered_kbit_s": spread([u["offered_kbit_s"] for u in uplink]),
        "uplink_delivered_kbit_s": spread([u["delivered_kbit_s"] for u in uplink]),
        "uplink_queue_drops_per_s": spread([u["queue_drops_per_s"] for u in uplink]),
    }


def _per_link(windows: list[dict[str, Any]], position: int) -> dict[str, Any]:
    """The caller's stream on its `position`-th live peer connection (in creation order: the
    handler's link comes first, the specialist joins later)."""
    links = [sorted(w["caller_sent"]["links"], key=lambda link: link["pc"]) for w in windows]
    chosen = [ls[position] for ls in links if len(ls) > position]
    return {
        "video_kbit_s": spread([link["video_kbit_s"] for link in chosen]),
        "sent_resolution": resolution_spread([(link["width"], link["height"])
                                              for link in chosen]),
        "available_kbit_s": spread([link["available_kbit_s"] for link in chosen]),
        "limitation": _counts([link["limitation"] for link in chosen]),
    }


def _mesh_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    pairs = [(s["steady"], s["mesh"]) for s in samples if "mesh" in s and "steady" in s]
    alone = [a for a, _ in pairs]
    both = [b for _, b in pairs]
    return {
        "errors": [s["mesh_error"] for s in samples if "mesh_error" in s],
        "to_handler_alone": _per_link(alone, 0),
        "to_handler_both": _per_link(both, 0),
        "to_specialist_both": _per_link(both, 1),
        "calls": len(pairs),
        "alone": {"handler": _receiver([a["handler"] for a in alone]), "caller": _sender(alone),
                  "rung": _counts([a.get("rung") for a in alone])},
        "both": {"handler": _receiver([b["handler"] for b in both]),
                 "specialist": _receiver([b["specialist"] for b in both]),
                 "caller": _sender(both), "rung": _counts([b.get("rung") for b in both])},
        "specialist_first_frame_s": spread([b["specialist_first_frame_s"] for b in both]),
    }


def _links_summary(samples: list[dict[str, Any]], blackout_s: float) -> dict[str, Any]:
    """The pages' timelines: links up again counted from the blackout's end (or the switch),
    the caller's link seen down from the start of the disruption."""

    def after_end(value: float | None) -> float | None:
        return None if value is None else value - blackout_s

    caller = [s["caller_timeline"] for s in samples if "caller_timeline" in s]
    handler = [s["handler_timeline"] for s in samples if "handler_timeline" in s]
    return {
        "caller_link_up_s": spread([after_end(c["pc_up_s"]) for c in caller]),
        "handler_link_up_s": spread([after_end(h["pc_up_s"]) for h in handler]),
        "caller_link_down_s": spread([c["pc_down_s"] for c in caller]),
        "caller_socket_dropped": sum(1 for c in caller if c["socket_lost_s"] is not None),
        "caller_socket_back_s": spread([after_end(c["socket_back_s"]) for c in caller]),
    }


def summarise_scenario(scenario: Scenario, samples: list[dict[str, Any]]) -> dict[str, Any]:
    steady = [s["steady"] for s in samples if "steady" in s]
    first_key = "first_still_s" if scenario.stills else "first_frame_s"
    summary: dict[str, Any] = {
        "label": scenario.label, "turn": scenario.turn, "firewall": scenario.firewall,
        "goal_s": scenario.goal_s, "expected_relay": scenario.relay,
        "runs": len(samples), "connected": sum(1 for s in samples if s.get("connected")),
        "errors": [s["error"] for s in samples if s.get("error")],
        "first_s": spread([s.get(first_key) for s in samples]), "first_kind": first_key,
        "first_values": [s.get(first_key) for s in samples],
        "handler": _receiver([w["handler"] for w in steady]),
        "caller": _sender(steady),
        "path": _counts([_path(w.get("pair")) for w in steady]),
        "rung": _counts([w.get("rung") for w in steady]),
        "call_s": spread([s.get("call_s") for s in samples]),
    }
    if scenario.blackout_s or scenario.switch:
        disrupted = [s for s in samples if "recovery_s" in s]
        backs = [s["recovery_s"] for s in disrupted]
        summary["recovery_s"] = spread(backs)
        summary["recovered"] = sum(1 for b in backs if b is not None)
        summary["disrupted"] = len(disrupted)
        summary["recovery"] = _links_summary(disrupted, scenario.blackout_s)
    if scenario.weak:
        summary["mesh"] = _mesh_summary(samples)
    return summary


def goals(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The goals: every call with a TURN path connects; first frame under each goal."""
    rows: list[dict[str, Any]] = []
    with_turn = {k: s for k, s in summary.items() if s["turn"]}
    if with_turn:
        connected = sum(s["connected"] for s in with_turn.values())
        calls = sum(s["runs"] for s in with_turn.values())
        missed = [f"{k} {s['runs'] - s['connected']}" for k, s in with_turn.items()
                  if s["connected"] < s["runs"]]
        rows.append({"goal": "every scripted call connects when a TURN path exists",
                     "scenario": ", ".join(with_turn), "connected": connected,
                     "calls": calls, "missed_by_scenario": missed,
                     "met": connected == calls})
    for key, s in summary.items():
        if s["goal_s"] is None:
            continue
        first = s["first_s"]
        met = first["median"] is not None and first["median"] < s["goal_s"]
        under = sum(1 for v in s["first_values"] if v is not None and v < s["goal_s"])
        rows.append({"goal": f"first frame under {s['goal_s']:g} s", "scenario": key,
                     "first_s": first, "runs": s["runs"], "runs_under": under,
                     "met": met and s["connected"] == s["runs"]})
    return rows


def summarise(scenarios: list[Scenario], samples: dict[str, list[Any]], runs: int,
              elapsed: float) -> dict[str, Any]:
    summary = {s.key: summarise_scenario(s, samples[s.key]) for s in scenarios}
    result = {
        "runs": runs, "order": [s.key for s in scenarios], "elapsed_s": elapsed,
        "steady_window_s": [STEADY_AT_S - WINDOW_S, STEADY_AT_S],
        "scenarios": summary, "goals": goals(summary), "cores": os.cpu_count(),
        "load_1min": spread([s.get("load_1min") for v in samples.values() for s in v]),
        "samples": samples,
    }
    log(f"  field: {sum(len(v) for v in samples.values())} calls in {elapsed / 60:.1f} min")
    return result
