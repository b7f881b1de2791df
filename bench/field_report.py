"""The `## Field` section of bench/RESULTS.md, from the field part's results (bench/field.py)."""

from __future__ import annotations

from typing import Any

TITLE = "## Field: real calls through the network lab"


def spread_text(stat: dict[str, Any] | None, fmt: str = ".2f", expected: int | None = None,
                scale: float = 1.0) -> str:
    """`median (min-max)`, the range left out when it is one value; [n=k] when fewer runs
    gave the figure than were expected."""
    if not stat or stat.get("median") is None:
        return "n/a"
    if isinstance(stat["median"], str):  # a resolution
        text = stat["median"]
        if stat["min"] != stat["max"]:
            text += f" ({stat['min']}-{stat['max']})"
    else:
        median, low, high = (stat[k] * scale for k in ("median", "min", "max"))
        text = format(median, fmt)
        if format(low, fmt) != format(high, fmt):
            text += f" ({format(low, fmt)}-{format(high, fmt)})"
    if expected is not None and stat["n"] != expected:
        text += f" [n={stat['n']}]"
    return text


def counts_text(counts: dict[str, int] | None) -> str:
    if not counts:
        return "n/a"
    return ", ".join(f"{key} ({n})" for key, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _label(f: dict[str, Any], key: str) -> str:
    return str(f["scenarios"][key]["label"])


def goals_table(f: dict[str, Any]) -> list[str]:
    lines = ["### Goals", "", "| goal | scenario | measured | met |", "| --- | --- | --- | --- |"]
    for goal in f["goals"]:
        if "connected" in goal:
            missed = "; ".join(goal["missed_by_scenario"])
            measured = (f"{goal['connected']} of {goal['calls']} calls connected"
                        f"{f' (not: {missed})' if missed else ''}")
            scenario = "every scenario with TURN"
        else:
            measured = (f"median {spread_text(goal['first_s'])} s; {goal['runs_under']} of "
                        f"{goal['runs']} runs under")
            scenario = _label(f, goal["scenario"])
        lines.append(f"| {goal['goal']} | {scenario} | {measured} "
                     f"| {'met' if goal['met'] else 'missed'} |")
    lines += ["", "A first-frame goal counts as met when the median is under it and every run "
              "connected; the runs under it are shown beside.", ""]
    return lines


def first_frame_table(f: dict[str, Any]) -> list[str]:
    lines = ["### First frame (s from the caller's tap on Join)", "",
             "| scenario | connected | to the handler's first decoded frame, median (min-max) "
             "| goal |", "| --- | ---: | ---: | ---: |"]
    for key in f["order"]:
        s = f["scenarios"][key]
        what = spread_text(s["first_s"], expected=s["runs"])
        if s["first_kind"] == "first_still_s":
            what += " (to the first still picture shown)"
        goal = f"< {s['goal_s']:g} s" if s["goal_s"] is not None else "—"
        lines.append(f"| {s['label']} | {s['connected']}/{s['runs']} | {what} | {goal} |")
    errors = [(key, e) for key in f["order"] for e in f["scenarios"][key]["errors"]]
    lines.append("")
    if errors:
        lines += ["Calls that failed:", ""] + [f"- {key}: `{e[:200]}`" for key, e in errors]
        lines.append("")
    return lines


def steady_table(f: dict[str, Any]) -> list[str]:
    start, end = f["steady_window_s"]
    lines = [f"### What the handler receives after 20 s of call ({start:g}-{end:g} s after "
             f"the tap on Join)", "",
             "| scenario | resolution | fps | video kbit/s | audio packets/s | concealment % "
             "| caller sends, kbit/s | path (caller's selected pair) | rung |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for key in f["order"]:
        s, h = f["scenarios"][key], f["scenarios"][key]["handler"]
        if s["first_kind"] == "first_still_s":
            video = f"stills: {spread_text(h['stills_per_min'], '.0f')} per min"
            lines.append(f"| {s['label']} | {video} | — | — | — | — | — "
                         f"| {counts_text(s['path'])} | {counts_text(s['rung'])} |")
            continue
        lines.append(
            f"| {s['label']} | {spread_text(h['resolution'])} | {spread_text(h['fps'], '.1f')} "
            f"| {spread_text(h['video_kbit_s'], '.0f')} | {spread_text(h['audio_pps'], '.0f')} "
            f"| {spread_text(h['concealment'], '.1f', scale=100)} "
            f"| {spread_text(s['caller']['total_kbit_s'], '.0f')} "
            f"| {counts_text(s['path'])} | {counts_text(s['rung'])} |")
    lines += ["", "Resolution, fps and video kbit/s are what the handler's page decodes from "
              "the caller (inbound-rtp frameWidth/Height, framesDecoded and bytesReceived over "
              "the window); `caller sends` is the caller page's outbound-rtp bytesSent, audio "
              "and video, summed over its peer connections (RTP payload, headers not counted). "
              "The caller's page captures 640x480 at up to 15 fps. The path is the caller's own "
              "view: local-remote candidate types, or relay/<its protocol to TURN>.", ""]
    return lines


def recovery_table(f: dict[str, Any]) -> list[str]:
    keys = [k for k in f["order"] if "recovery_s" in f["scenarios"][k]]
    if not keys:
        return []
    lines = ["### Recovery (s after the blackout's end, or after the switch)", "",
             "| scenario | video decoding again on the handler | recovered "
             "| caller's link connected again | handler's link connected again "
             "| caller's link seen down (s after the start) | caller's socket dropped |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key in keys:
        s = f["scenarios"][key]
        r = s["recovery"]
        lines.append(
            f"| {s['label']} | {spread_text(s['recovery_s'], expected=s['disrupted'])} "
            f"| {s['recovered']}/{s['disrupted']} | {spread_text(r['caller_link_up_s'])} "
            f"| {spread_text(r['handler_link_up_s'])} | {spread_text(r['caller_link_down_s'])} "
            f"| {r['caller_socket_dropped']}/{s['disrupted']} |")
    lines += ["", "Video is back when framesDecoded rises between two polls 100 ms apart (on "
              "a new pair for the switch). The links' times are their peer connections' "
              "`connectionState` going back to `connected` (after `disconnected` or `failed`), "
              "read from events in each page; the socket is the caller page's "
              "`connection-state`. Field tests' note: the network change's goal is 5 s.", ""]
    return lines


def _row(label: str, alone: str, both: str) -> str:
    return f"| {label} | {alone} | {both} |"


def mesh_table(f: dict[str, Any]) -> list[str]:
    weak = f["scenarios"].get("weak")
    if not weak or not weak.get("mesh", {}).get("calls"):
        return []
    m = weak["mesh"]
    a, b = m["alone"], m["both"]

    def rx(side: dict[str, Any], who: str, field: str, fmt: str) -> str:
        return spread_text(side[who][field], fmt) if who in side else "—"

    lines = [
        "### Weak link: the handler alone, then the handler and a specialist", "",
        f"The same weak-link calls ({m['calls']}): the window 16-20 s after the tap on Join "
        f"(the handler alone), then the specialist is invited and accepts, and the same window "
        f"16-20 s after the specialist's first frame (each staff page gets its own stream from "
        f"the caller: a browser mesh, so the caller's 400 kbit/s uplink carries both). The "
        f"specialist's first decoded frame came {spread_text(m['specialist_first_frame_s'])} s "
        f"after the handler's click on Invite (the desk's alert and Accept in between).", "",
        "| | handler alone | handler + specialist |", "| --- | ---: | ---: |",
        _row("handler receives: resolution", rx(a, "handler", "resolution", ""),
             rx(b, "handler", "resolution", "")),
        _row("handler receives: fps", rx(a, "handler", "fps", ".1f"),
             rx(b, "handler", "fps", ".1f")),
        _row("handler receives: video kbit/s", rx(a, "handler", "video_kbit_s", ".0f"),
             rx(b, "handler", "video_kbit_s", ".0f")),
        _row("handler receives: audio packets/s", rx(a, "handler", "audio_pps", ".0f"),
             rx(b, "handler", "audio_pps", ".0f")),
        _row("specialist receives: resolution", "—", rx(b, "specialist", "resolution", "")),
        _row("specialist receives: fps", "—", rx(b, "specialist", "fps", ".1f")),
        _row("specialist receives: video kbit/s", "—", rx(b, "specialist", "video_kbit_s", ".0f")),
        _row("caller sends: video to the handler, kbit/s",
             spread_text(m["to_handler_alone"]["video_kbit_s"], ".0f"),
             spread_text(m["to_handler_both"]["video_kbit_s"], ".0f")),
        _row("caller sends: video to the specialist, kbit/s", "—",
             spread_text(m["to_specialist_both"]["video_kbit_s"], ".0f")),
        _row("caller sends: total, audio + video payload, kbit/s",
             spread_text(a["caller"]["total_kbit_s"], ".0f"),
             spread_text(b["caller"]["total_kbit_s"], ".0f")),
        _row("caller sends: total with RTP headers, kbit/s",
             spread_text(a["caller"]["with_headers_kbit_s"], ".0f"),
             spread_text(b["caller"]["with_headers_kbit_s"], ".0f")),
        _row("caller's uplink on the wire (link emulator, every IP packet), kbit/s",
             spread_text(a["caller"]["uplink_delivered_kbit_s"], ".0f"),
             spread_text(b["caller"]["uplink_delivered_kbit_s"], ".0f")),
        _row("uplink queue drops per s (random loss is 3% on top)",
             spread_text(a["caller"]["uplink_queue_drops_per_s"], ".1f"),
             spread_text(b["caller"]["uplink_queue_drops_per_s"], ".1f")),
        _row("caller's estimate per link (availableOutgoingBitrate), kbit/s",
             spread_text(m["to_handler_alone"]["available_kbit_s"], ".0f"),
             f"to the handler {spread_text(m['to_handler_both']['available_kbit_s'], '.0f')}; "
             f"to the specialist "
             f"{spread_text(m['to_specialist_both']['available_kbit_s'], '.0f')}"),
        _row("caller's encoder limited by", counts_text(a["caller"]["limitation"]),
             counts_text(b["caller"]["limitation"])),
        _row("rung in the handler's call view", counts_text(a["rung"]), counts_text(b["rung"])),
        "",
    ]
    if m.get("errors"):
        lines += ["With the specialist, calls that failed:", ""]
        lines += [f"- `{error[:200]}`" for error in m["errors"]] + [""]
    return lines


def section(f: dict[str, Any]) -> str:
    load = f.get("load_1min", {})
    lines = [
        TITLE, "",
        f"bench/field.py: {f['runs']} run(s) of each scenario of tests/field/test_field_calls.py, "
        f"interleaved (round 1 every scenario, then round 2...), each call a fresh service "
        f"(TLS on 198.18.0.1:443 in the lab) and fresh Chromiums (the handler's in the control "
        f"room's namespace, the caller's behind the link emulator, NAT and firewall); coturn "
        f"and the lab start once for the part. Medians with (min-max) over the runs. "
        f"{sum(s['runs'] for s in f['scenarios'].values())} calls in "
        f"{f['elapsed_s'] / 60:.1f} min; 1-minute load average during the calls "
        f"{spread_text(load, '.1f')} on {f.get('cores', 2)} cores (the machine is shared: "
        f"other jobs' browsers ran alongside, so timings carry their noise).", "",
    ]
    if f.get("code", {}).get("changed_during_run"):
        lines += ["**server/, signaling/ or web/ changed while this part ran** (another "
                  "engineer's edits): later rounds may have run other code than earlier ones.", ""]
    lines += goals_table(f)
    lines += first_frame_table(f)
    lines += steady_table(f)
    lines += recovery_table(f)
    lines += mesh_table(f)
    return "\n".join(lines)
