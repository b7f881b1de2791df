"""bench/RESULTS.md, bench/results.json and bench/relay.png from one run's results."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import case_record, field_report
from bench.common import BENCH

ORDER = ("peerjs", "erv", "floor", "floor-fast")
CHART = BENCH / "relay.png"


def _num(value: Any, fmt: str = ".0f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, fmt)


def _ratio(value: Any, base: Any) -> str:
    try:
        if not base or math.isnan(base) or math.isnan(value):
            return "n/a"
        return f"{value / base:.2f}x"
    except TypeError:
        return "n/a"


def relay_section(relay: dict[str, Any], profile: dict[str, Any],
                  scale: dict[str, Any]) -> str:
    labels = relay["labels"]
    lines = [
        "## 1. Signalling relay",
        "",
        f"P pairs, each bouncing an SDP-sized signal (about 2.6 KB of JSON) back and forth in a "
        f"closed loop: A sends, the server relays to B, B sends its own back at once, the server "
        f"relays it to A; the next goes when the last came back. Each server is a fresh process "
        f"of its own; the load generator (bench/loadgen.py, aiohttp client on uvloop) is another "
        f"process and drives every server with the same code. Measured over "
        f"{relay['seconds']:.0f} s after {relay['warmup']:.1f} s of warm-up. CPU is the server "
        f"processes' utime + stime from /proc/<pid>/stat over the window, divided by the "
        f"messages relayed in it. Ratios are to PeerJS server in the same run. The server and "
        f"the load generator share the machine's 2 cores: where the load generator's column "
        f"nears 1.0 it, not the server, caps msgs/s and latency; CPU per message stays a fair "
        f"comparison either way.",
        "",
        "This server runs with every check on (staff sign-in and caller credentials at hello, "
        "frame validation, per-participant seq and resume buffer, send queue per socket) in "
        "real sessions: one handler in P sessions, a caller in each. Its per-socket rate limit "
        "(20 frames/s, burst 60) would refuse a closed loop within a second, so it is raised "
        "for this part only (bench/erv_launch.py; the bucket is still checked on every frame). "
        "Parts 2, 3 and 5 run `erv run` unchanged.",
        "",
    ]
    for name, reason in relay.get("not_run", {}).items():
        lines.append(f"- {labels.get(name, name)}: not run: {reason}")
    for pairs, runs in relay["runs"].items():
        base = runs.get("peerjs", {})
        lines += [
            "",
            f"### P = {pairs} pairs",
            "",
            "| server | msgs/s | vs PeerJS | RTT p50 ms | p50 vs PeerJS | RTT p99 ms "
            "| p99 vs PeerJS | CPU µs/msg | CPU vs PeerJS | server RSS MB "
            "| load generator cores |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for key in ORDER:
            r = runs.get(key)
            if r is None:
                continue
            lines.append(
                f"| {labels[key]} | {_num(r['msgs_per_s'])} "
                f"| {_ratio(r['msgs_per_s'], base.get('msgs_per_s'))} "
                f"| {_num(r['rtt_p50_ms'], '.2f')} "
                f"| {_ratio(r['rtt_p50_ms'], base.get('rtt_p50_ms'))} "
                f"| {_num(r['rtt_p99_ms'], '.2f')} "
                f"| {_ratio(r['rtt_p99_ms'], base.get('rtt_p99_ms'))} "
                f"| {_num(r['cpu_us_per_msg'], '.1f')} "
                f"| {_ratio(r['cpu_us_per_msg'], base.get('cpu_us_per_msg'))} "
                f"| {_num(r.get('server_rss_mb'))} | {_num(r['loadgen_cores'], '.2f')} |"
            )
            if r.get("failures"):
                lines.append(f"| ↳ failures: {'; '.join(r['failures'][:3])} |" + " |" * 10)
            for line in r.get("server_log", []):
                lines.append(f"| ↳ logged: `{line}` |" + " |" * 10)
    lines += ["", f"![relay comparison]({CHART.name})", ""]
    big = relay["runs"].get("200") or relay["runs"][max(relay["runs"], key=int)]
    lines += profile_section(profile, {k: v.get("server_rss_mb", 0.0) for k, v in big.items()})
    lines += scale_section(scale)
    return "\n".join(lines)


def profile_section(profile: dict[str, Any], relay_rss: dict[str, float]) -> list[str]:
    lines = ["### Where this server's CPU goes (py-spy, P = 200)", ""]
    if "skipped" in profile:
        return [*lines, f"Not profiled: {profile['skipped']}", ""]
    lines += [
        f"py-spy `record --native` at 100 Hz for {profile['seconds']:.0f} s on the server "
        f"under the P = {profile['pairs']} load, in a separate run (sampling slows it: "
        f"{profile['cpu_us_per_msg_while_sampled']:.0f} µs/msg while sampled); "
        f"{profile['samples']} busy samples, idle waits left out. Raw stacks: "
        f"`{Path(profile['raw']).name}` in bench/out/.",
        "",
        "| kind of work (leaf frame) | share of busy samples |",
        "| --- | ---: |",
    ]
    lines += [f"| {name} | {share * 100:.1f}% |" for name, share in profile["categories"]]
    lines += ["", "| hottest frames, own time | share |", "| --- | ---: |"]
    lines += [f"| `{h['frame']}` | {h['share'] * 100:.1f}% |" for h in profile["own"][:12]]
    lines += ["", "| project functions, total time (with callees) | share |", "| --- | ---: |"]
    lines += [f"| `{h['frame']}` | {h['share'] * 100:.1f}% |" for h in profile["project"][:10]]
    lines += ["", "What the profile points at, and what would cut it (for the server's owners; "
              "the bench changes nothing in server/ or signaling/):", ""]
    lines += advice(profile, relay_rss)
    lines.append("")
    return lines


def advice(profile: dict[str, Any], rss: dict[str, float]) -> list[str]:
    """Plain reading of the profile: each kind of work over a few percent, and its fix."""
    share = {name.split(" (")[0]: value for name, value in profile["categories"]}
    out = []

    def pct(key: str) -> str:
        return f"{share.get(key, 0.0) * 100:.0f}%"

    if share.get("getpid system call", 0.0) > 0.02:
        chains = "; ".join(f"`{chain}` {part * 100:.0f}%"
                           for chain, part in profile.get("getpid_callers", []))
        out.append(
            f"- {pct('getpid system call')} is `getpid()`: on Python 3.11, "
            f"`asyncio.get_running_loop()` (and so `asyncio.current_task()`, `Queue.get()`, "
            f"`create_future()`) makes a getpid system call each time to detect a fork "
            f"(Python 3.12 dropped it). Callers: {chains}. Take the reader task once, before "
            f"the read loop, instead of `asyncio.current_task()` per frame; pass the loop in "
            f"rather than asking for it per message.")
    if share.get("event loop, tasks and queues", 0.0) > 0.05:
        out.append(
            f"- {pct('event loop, tasks and queues')} is the event loop and task switching: "
            f"every relayed message goes through an `asyncio.Queue` and wakes the target "
            f"socket's writer task (`Connection._write`). Writing straight to the transport "
            f"when nothing is queued and the transport is not paused (queue only under "
            f"back-pressure) saves a task wake-up and a queue round per message.")
    if share.get("garbage collector", 0.0) > 0.02:
        ours, peer = rss.get("erv"), rss.get("peerjs")
        memory = (f" This server ended the P = 200 run at {ours:.0f} MB RSS against "
                  f"{peer:.0f} MB for PeerJS server." if ours and peer else "")
        out.append(
            f"- {pct('garbage collector')} is the cyclic garbage collector. The resume buffer "
            f"keeps 512 `(seq, text)` tuples per participant: with SDP-sized signals that is "
            f"about 1.3 MB each, and every full collection walks every tuple.{memory} Keep "
            f"seqs and texts in two deques (ints and strings are not tracked), cap the buffer "
            f"in bytes as well as in messages, and `gc.freeze()` after start-up.")
    if share.get("memory allocation", 0.0) > 0.04:
        out.append(
            f"- {pct('memory allocation')} is malloc/free: each relayed SDP is copied several "
            f"times (the parsed dicts, the encoded text with its seq spliced in, its UTF-8 "
            f"bytes, and aiohttp's header + payload concatenation). Keeping frames as bytes "
            f"end to end would save two of those copies.")
    if share.get("JSON parse and encode", 0.0) > 0.08:
        out.append(f"- {pct('JSON parse and encode')} is JSON: parse with orjson, and encode "
                   f"the relayed frame once.")
    out.append(
        f"- {pct('socket read/write system calls')} is the socket reads and writes "
        f"themselves (one read per frame in, one write per frame out, as PeerJS server does); "
        f"{pct('aiohttp WebSocket framing and reading')} is aiohttp's WebSocket framing; "
        f"{pct('project code')} runs in the project's own Python (validation, routing, seq "
        f"and buffer: see the functions above).")
    return out


def scale_section(scale: dict[str, Any]) -> list[str]:
    lines = ["### One node against two nodes (Redis mode)", ""]
    if "skipped" in scale:
        return [*lines, f"Skipped: {scale['skipped']}", ""]
    one, two = scale["nodes_1"], scale["nodes_2"]
    lines += [
        f"{scale['pairs']} pairs, closed loop as above, every node `erv run` with "
        f"ERV_REDIS_URL on one redis-server the bench started (AOF on), sessions made "
        f"through node 1. Two nodes: each pair's handler on one node, its caller on the other "
        f"(half the pairs each way), so every message crosses nodes. CPU counts every node.",
        "",
        "| nodes | msgs/s | RTT p50 ms | RTT p99 ms | CPU µs/msg (all nodes) "
        "| redis-server CPU µs/msg | failures |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for label, r in (("1", one), ("2", two)):
        lines.append(f"| {label} | {_num(r['msgs_per_s'])} | {_num(r['rtt_p50_ms'], '.2f')} "
                     f"| {_num(r['rtt_p99_ms'], '.2f')} | {_num(r['cpu_us_per_msg'], '.1f')} "
                     f"| {_num(r.get('helper_cpu_us_per_msg'), '.1f')} "
                     f"| {'; '.join(r['failures']) or 'none'} |")
    lines += ["", f"Two nodes relay {_ratio(two['msgs_per_s'], one['msgs_per_s'])} the "
                  f"messages per second of one.", ""]
    logged = [f"- {label}: `{line}`" for label, r in (("one node", one), ("two nodes", two))
              for line in r.get("server_log", [])]
    if logged:
        lines += ["What the nodes logged (commonest warnings):", "", *logged, ""]
    return lines


def connect_section(c: dict[str, Any]) -> str:
    if "skipped" in c:
        return f"## 2. Connect time\n\nSkipped: {c['skipped']}\n"

    def row(label: str, key: str, fmt: str = ".1f") -> str:
        return f"| {label} | {_num(c[key]['p50'], fmt)} | {_num(c[key]['p95'], fmt)} |"

    return "\n".join([
        "## 2. Connect time",
        "",
        f"{c['calls']} calls through `erv run`, one after another, with aiortc peers on "
        f"loopback in the bench process: from the caller's redeem request (POST /j/<token>) to "
        f"the handler's first decoded video frame (320x240 test pattern). Browser order: the "
        f"caller joins, the handler hears `peer joined` and offers, the caller answers with its "
        f"camera, both trickle candidates ({c['signal_frames_per_call']:.0f} signal frames "
        f"per call). The server's part is the redeem request, the join (socket open to "
        f"`welcome`), the `peer joined` notice, and the offer's and answer's time between the "
        f"peers (send to receipt, one clock); candidates travel while the peers work.",
        "",
        "| | p50 ms | p95 ms |",
        "| --- | ---: | ---: |",
        row("redeem to first decoded frame", "total_ms", ".0f"),
        row("of which the server's part", "server_ms"),
        row("redeem request (POST /j/<token>)", "redeem_ms"),
        row("join: socket open, hello, welcome", "join_ms"),
        row("`peer joined` reaching the handler after the welcome", "peer_joined_ms", ".2f"),
        row("offer relayed (handler to caller)", "offer_relay_ms", ".2f"),
        row("answer relayed (caller to handler)", "answer_relay_ms", ".2f"),
        row("median relay of a call's signal frames", "relay_median_ms", ".2f"),
        "",
    ])


def capacity_section(c: dict[str, Any]) -> str:
    if "skipped" in c:
        return f"## 3. Capacity\n\nSkipped: {c['skipped']}\n"
    lines = [
        "## 3. Capacity (one process)",
        "",
        f"`erv run` unchanged (rate limit on, heartbeats every 20 s). Each live session has "
        f"three sockets (caller, handler, supervisor as observer), all joined and read. RSS is "
        f"read with every socket idle, after 2 s; per session = (RSS - RSS with no sessions, "
        f"{c['base_rss_mb']:.0f} MB) / sessions. Then each session's caller and handler bounce "
        f"an SDP-sized signal once every {c['interval_s']:g} s (two relayed messages a second "
        f"per session, far busier than a connected call) for {c['seconds']:.0f} s. Steps stop at "
        f"the first p99 over {c['p99_limit_ms']:.0f} ms (a failing step is tried once more and "
        f"both tries are shown) or at the cap of {c['cap']} sessions (the open-file limit "
        f"allows {c['file_limit_sessions']}).",
        "",
        "| sessions | sockets | RSS MB | KB per session | msgs/s | RTT p50 ms | RTT p99 ms "
        "| CPU µs/msg | load generator cores |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in c["steps"]:
        retry = (f" (first try {_num(s['first_try_p99_ms'], '.1f')})"
                 if "first_try_p99_ms" in s else "")
        lines.append(
            f"| {s['sessions']} | {s['sockets']} | {s['rss_mb']:.0f} "
            f"| {s['rss_per_session_kb']:.0f} | {_num(s['msgs_per_s'])} "
            f"| {_num(s['rtt_p50_ms'], '.2f')} | {_num(s['rtt_p99_ms'], '.1f')}{retry} "
            f"| {_num(s['cpu_us_per_msg'], '.0f')} | {_num(s['loadgen_cores'], '.2f')} |")
    best = c["max_sessions_p99_ok"]
    memory = c["memory"]
    lines += [
        "",
        f"- Memory per idle live session: {_num(memory.get('100'))} KB at 100 sessions, "
        f"{_num(memory.get('1000'))} KB at 1,000.",
        f"- Most concurrent sessions with relay p99 under {c['p99_limit_ms']:.0f} ms: "
        f"{'at least ' if c['limited_by_cap'] else ''}{best}"
        f"{' (the largest step tried)' if c['limited_by_cap'] else ''}.",
        "",
    ]
    spied = c.get("failing_step_profile")
    if spied and "skipped" not in spied:
        kinds = ", ".join(f"{name} {share * 100:.0f}%" for name, share in spied["categories"][:5])
        hot = ", ".join(f"`{h['frame']}` {h['share'] * 100:.0f}%" for h in spied["own"][:5])
        lines += [
            f"The first failing step, run again with py-spy on the server "
            f"({spied['sessions']} sessions, p99 {spied['rtt_p99_ms']:.0f} ms while sampled, "
            f"{spied['samples']} busy samples): {kinds}. Hottest frames: {hot}. A long "
            f"`gc_collect_main` share means full collections over the whole heap stall the "
            f"event loop for every socket at once (raw stacks in bench/out/).",
            "",
        ]
    return "\n".join(lines)


def page_section(p: dict[str, Any]) -> str:
    if "skipped" in p:
        return f"## 5. Victim page\n\nSkipped: {p['skipped']}\n"
    return "\n".join([
        "## 5. Victim page on a weak mobile link",
        "",
        f"Debian's Chromium (headless, via Playwright), phone-sized context, cache off, "
        f"network throttled with the DevTools protocol (Network.emulateNetworkConditions: "
        f"{p['down_kbit_s']} kbit/s down, {p['up_kbit_s']} kbit/s up, {p['latency_ms']} ms "
        f"added to each request); GET of a fresh link, plain HTTP on loopback (a real link "
        f"adds TLS round trips). Median of {p['runs']} cold loads; times from navigation start.",
        "",
        "| | value |",
        "| --- | ---: |",
        f"| consent screen laid out (choices and Join) | {p['consent_ms']:.0f} ms |",
        f"| first contentful paint | {p['fcp_ms']:.0f} ms |",
        f"| DOMContentLoaded (module scripts run) | {p['dom_content_loaded_ms']:.0f} ms |",
        f"| load event | {p['load_ms']:.0f} ms |",
        f"| bytes on the wire until network idle | {p['bytes'] / 1024:.1f} KiB "
        f"({p['requests']:.0f} requests) |",
        "",
    ])


def targets_section(relay: dict[str, Any]) -> str:
    lines = ["## Targets (issue 6)", "", "| target | measured | met |", "| --- | --- | --- |"]
    runs = relay["runs"]
    for pairs, r in runs.items():
        ours, peer = r.get("erv"), r.get("peerjs")
        if not ours or not peer:
            lines.append(f"| CPU per message ≤ 0.8x PeerJS (P = {pairs}) | PeerJS not run | — |")
            continue
        ratio = ours["cpu_us_per_msg"] / peer["cpu_us_per_msg"]
        lines.append(f"| CPU per relayed message ≤ 0.8x PeerJS server (P = {pairs}) "
                     f"| {ours['cpu_us_per_msg']:.1f} vs {peer['cpu_us_per_msg']:.1f} µs "
                     f"= {ratio:.2f}x | {'yes' if ratio <= 0.8 else 'no'} |")
    big = runs.get("200") or runs[max(runs, key=int)]
    ours, peer = big.get("erv"), big.get("peerjs")
    if ours and peer:
        ok = ours["rtt_p99_ms"] <= peer["rtt_p99_ms"]
        lines.append(f"| RTT p99 at P = {max(runs, key=int)} no worse than PeerJS server "
                     f"| {ours['rtt_p99_ms']:.1f} vs {peer['rtt_p99_ms']:.1f} ms "
                     f"| {'yes' if ok else 'no'} |")
    lines.append("")
    return "\n".join(lines)


def chart(relay: dict[str, Any]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    metrics = (("msgs_per_s", "relayed messages per second (higher is better)"),
               ("rtt_p99_ms", "round trip p99, ms (lower is better)"),
               ("cpu_us_per_msg", "server CPU per message, µs (lower is better)"))
    pair_counts = list(relay["runs"])
    keys = [k for k in ORDER if any(k in relay["runs"][p] for p in pair_counts)]
    colours = {"peerjs": "#6b7280", "erv": "#2563eb", "floor": "#f59e0b", "floor-fast": "#10b981"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    width = 0.8 / max(1, len(keys))
    for ax, (metric, title) in zip(axes, metrics, strict=True):
        for i, key in enumerate(keys):
            xs = [j + (i - (len(keys) - 1) / 2) * width for j in range(len(pair_counts))]
            ys = [relay["runs"][p].get(key, {}).get(metric, 0.0) for p in pair_counts]
            bars = ax.bar(xs, ys, width, label=relay["labels"][key], color=colours[key])
            ax.bar_label(bars, fmt="%.0f" if metric == "msgs_per_s" else "%.1f", fontsize=7)
        ax.set_xticks(range(len(pair_counts)), [f"P = {p}" for p in pair_counts])
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.12)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(keys), fontsize=9, frameon=False)
    fig.suptitle("Signalling relay: closed loop, SDP-sized messages, same load generator")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(CHART, dpi=110)
    plt.close(fig)
    return CHART


def _earlier(part: dict[str, Any], meta: dict[str, Any]) -> str:
    run = part.get("_run")
    if not run or (run.get("commit") == meta["commit"] and run.get("date") == meta["date"]):
        return ""
    return f"\n_From an earlier run: {run['date']}, commit {run['commit']}._\n"


def _section(results: dict[str, Any], key: str, title: str,
             render: Callable[[dict[str, Any]], str]) -> str:
    part = results.get(key, {"skipped": "not run"})
    if "skipped" in part and key not in ("profile", "scale_out"):
        return f"{title}\n\nSkipped: {part['skipped']}\n"
    text = render(part)
    note = _earlier(part, results["meta"])
    if note:
        head, _, rest = text.partition("\n")
        text = f"{head}\n{note}{rest}"
    return text


def write(results: dict[str, Any]) -> str:
    (BENCH / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    case = results.get("case_record", {})
    if case and "skipped" not in case:
        case_record.write_json({k: v for k, v in case.items() if k != "_run"})
    relay = results.get("relay", {"skipped": "not run"})
    if "skipped" not in relay:
        chart(relay)
    meta = results["meta"]
    parts = [
        "# Benchmark results",
        "",
        f"Written by `make bench` on {meta['date']} at commit {meta['commit']}, in "
        f"{meta['elapsed_s'] / 60:.1f} minutes. Machine: {meta['machine']}; "
        f"Node.js {meta['node']}. Load average {meta['load_start']} at the start, "
        f"{meta['load_end']} at the end: this machine is shared, so absolute figures move "
        f"between runs; compare the ratios, which are measured in the same run.",
        "",
        targets_section(relay) if "skipped" not in relay else "",
        _section(results, "relay", "## 1. Signalling relay",
                 lambda r: relay_section(r, results.get("profile", {"skipped": "not run"}),
                                         results.get("scale_out", {"skipped": "not run"}))),
        _section(results, "connect", "## 2. Connect time", connect_section),
        _section(results, "capacity", "## 3. Capacity", capacity_section),
        _section(results, "case_record", "## 4. Case record",
                 lambda r: case_record.table(r).replace("## Case record", "## 4. Case record",
                                                        1)),
        _section(results, "victim_page", "## 5. Victim page", page_section),
        _section(results, "field", field_report.TITLE, field_report.section),
    ]
    text = "\n".join(parts)
    (BENCH / "RESULTS.md").write_text(text)
    return text
