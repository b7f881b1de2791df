"""`make bench`: every benchmark, then bench/RESULTS.md, bench/results.json and bench/relay.png.

    python -m bench.run

Parts (ERV_BENCH_PARTS, comma-separated, default all): case (case record), relay (this server
against PeerJS server and the Python floor, P = ERV_BENCH_PAIRS, default 20,200), profile
(py-spy on this server under the P = 200 load), scale (one node against two sharing Redis),
connect (connect time with aiortc), capacity (memory and sessions per process), page (the
caller's page in throttled Chromium), field (real calls through the network lab; needs root,
iproute2, iptables, coturn and Chromium, and is skipped, with the reason, without them).
Running a subset keeps the other parts' last results from bench/results.json, marked with
their own date and commit.

Shorter runs: ERV_BENCH_RELAY_SECONDS (6), ERV_BENCH_CALLS (20), ERV_BENCH_CAPACITY_MAX
(6000), ERV_BENCH_CAPACITY_SECONDS (5), ERV_BENCH_PAGE_RUNS (3), ERV_BENCH_APPENDS (2000),
ERV_BENCH_FIELD_RUNS (3; about 16 minutes with 3), ERV_BENCH_FIELD_SCENARIOS (default all of
bench/field.py's SCENARIOS). A smoke run of the field part, one direct call:

    ERV_BENCH_PARTS=field ERV_BENCH_FIELD_RUNS=1 ERV_BENCH_FIELD_SCENARIOS=direct \
        python -m bench.run

Logs of every server and the raw profile go to bench/out/ (not committed).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import case_record, report
from bench.capacity import capacity
from bench.common import BENCH, commit, log, machine
from bench.connect_time import connect_time
from bench.field import field
from bench.relay import comparison, profiled, scale_out
from bench.servers import node_version
from bench.victim_page import victim_page

OUT = BENCH / "out"
PARTS = ("case", "relay", "profile", "scale", "connect", "capacity", "page", "field")
KEYS = {"case": "case_record", "relay": "relay", "profile": "profile", "scale": "scale_out",
        "connect": "connect", "capacity": "capacity", "page": "victim_page", "field": "field"}


def _run(coro: Coroutine[Any, Any, dict[str, Any]], fast_loop: bool) -> dict[str, Any]:
    """Each part on its own event loop: uvloop for the load generator, where installed."""
    if fast_loop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def main() -> int:
    started = time.monotonic()
    wanted = [p.strip() for p in os.environ.get("ERV_BENCH_PARTS", ",".join(PARTS)).split(",")
              if p.strip()]
    unknown = set(wanted) - set(PARTS)
    if unknown:
        print(f"ERV_BENCH_PARTS: unknown {sorted(unknown)}; choose from {PARTS}", file=sys.stderr)
        return 2
    pairs = tuple(int(p) for p in os.environ.get("ERV_BENCH_PAIRS", "20,200").split(","))
    OUT.mkdir(exist_ok=True)
    previous: dict[str, Any] = {}
    if set(wanted) != set(PARTS) and (BENCH / "results.json").exists():
        previous = json.loads((BENCH / "results.json").read_text())
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    stamp = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "commit": commit()}
    log(f"bench at {stamp['commit']}: parts {', '.join(wanted)}")
    tmp = Path(tempfile.mkdtemp(prefix="erv-bench-"))
    big = max(pairs)
    jobs: dict[str, tuple[Callable[[], Coroutine[Any, Any, dict[str, Any]]], bool]] = {
        "case": (case_record.run, False),
        "relay": (lambda: comparison(tmp, OUT, pairs), True),
        "profile": (lambda: profiled(tmp, OUT, big, OUT / f"profile-erv-p{big}.txt"), True),
        "scale": (lambda: scale_out(tmp, OUT, big), True),
        "connect": (lambda: connect_time(tmp, OUT), False),
        "capacity": (lambda: capacity(tmp, OUT), True),
        "page": (lambda: victim_page(tmp, OUT), False),
        "field": (lambda: field(tmp, OUT), False),
    }
    results: dict[str, Any] = {k: v for k, v in previous.items() if k in KEYS.values()}
    failed = []
    try:
        for part in PARTS:
            if part not in wanted:
                if KEYS[part] not in results:
                    results[KEYS[part]] = {"skipped": "not run (ERV_BENCH_PARTS)"}
                continue
            job, fast = jobs[part]
            try:
                result = _run(job(), fast)
            except Exception as exc:
                traceback.print_exc()
                failed.append(part)
                result = {"skipped": f"failed: {type(exc).__name__}: {exc}"}
            result["_run"] = stamp
            results[KEYS[part]] = result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["meta"] = {
        **stamp, "machine": machine(), "node": node_version(),
        "elapsed_s": time.monotonic() - started, "load_start": load_start,
        "load_end": " ".join(f"{x:.2f}" for x in os.getloadavg()), "parts": wanted,
    }
    report.write(results)
    log(f"wrote bench/RESULTS.md, bench/results.json and bench/relay.png in "
        f"{(time.monotonic() - started) / 60:.1f} min")
    if failed:
        log(f"failed parts: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
