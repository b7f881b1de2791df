"""Case-record benchmark: durable appends per second and p99 append latency, side by side with
a plain SQLite insert at the same durability (WAL, synchronous=FULL, one transaction each);
then the same appends from 8 concurrent writers (where group commit shares each transaction),
then chain verification speed. Part of `make bench` (bench/run.py), never of `make test`;
`python -m bench.case_record` runs it alone (results-case-record.json)."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import commit
from server.db import Database
from server.record import SqliteCaseRecordStore
from server.record.crypto import load_or_create_keyring

APPENDS = int(os.environ.get("ERV_BENCH_APPENDS", "2000"))
WRITERS = 8
BODY = {"text": "they are downstairs and he has been drinking", "role": "victim", "staff": None}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def record_appends(folder: Path) -> tuple[list[float], float, float]:
    db = Database(folder / "record.sqlite3")
    await db.open()
    store = SqliteCaseRecordStore(db, load_or_create_keyring(folder / "keys.json"))
    await store.open()
    latencies = []
    start = time.perf_counter()
    for i in range(APPENDS):
        t = time.perf_counter()
        await store.append(f"session-{i % 50}", "chat", BODY)
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - start
    t = time.perf_counter()
    result = await store.verify()
    verify_elapsed = time.perf_counter() - t
    assert result.ok and result.records == APPENDS
    await db.close()
    return latencies, elapsed, verify_elapsed


async def concurrent_appends(folder: Path) -> tuple[list[float], float]:
    """The same total appends from WRITERS concurrent writers, each waiting for its own."""
    db = Database(folder / "concurrent.sqlite3")
    await db.open()
    store = SqliteCaseRecordStore(db, load_or_create_keyring(folder / "keys.json"))
    await store.open()
    latencies: list[float] = []

    async def writer(w: int) -> None:
        for i in range(w, APPENDS, WRITERS):
            t = time.perf_counter()
            await store.append(f"session-{i % 50}", "chat", BODY)
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    elapsed = time.perf_counter() - start
    result = await store.verify()
    assert result.ok and result.records == APPENDS
    await db.close()
    return latencies, elapsed


async def plain_inserts(folder: Path) -> tuple[list[float], float]:
    """The floor: the same number of durable single-row transactions, nothing else."""
    db = Database(folder / "plain.sqlite3")
    await db.open()
    await db.execute("CREATE TABLE plain (id INTEGER PRIMARY KEY, body BLOB)")
    payload = json.dumps(BODY).encode()
    latencies = []
    start = time.perf_counter()
    for _ in range(APPENDS):
        t = time.perf_counter()
        await db.transaction(lambda c: c.execute("INSERT INTO plain (body) VALUES (?)",
                                                 (payload,)))
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - start
    await db.close()
    return latencies, elapsed


async def run() -> dict[str, object]:
    """Every case-record figure, as one dict (also used by `make bench`, see bench/run.py)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # Alternate so neither side always runs on a warmer machine.
        plain, plain_s = await plain_inserts(folder)
        record, record_s, verify_s = await record_appends(folder)
        concurrent, concurrent_s = await concurrent_appends(folder)
    results: dict[str, object] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": (f"{platform.machine()}, {os.cpu_count()} cores, "
                    f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"),
        "appends": APPENDS,
        "record_appends_per_s": APPENDS / record_s,
        "record_p50_ms": statistics.median(record) * 1000,
        "record_p99_ms": percentile(record, 0.99) * 1000,
        "writers": WRITERS,
        "concurrent_appends_per_s": APPENDS / concurrent_s,
        "concurrent_p50_ms": statistics.median(concurrent) * 1000,
        "concurrent_p99_ms": percentile(concurrent, 0.99) * 1000,
        "plain_inserts_per_s": APPENDS / plain_s,
        "plain_p50_ms": statistics.median(plain) * 1000,
        "plain_p99_ms": percentile(plain, 0.99) * 1000,
        "verify_records_per_s": APPENDS / verify_s,
        "record_vs_plain_throughput": (APPENDS / record_s) / (APPENDS / plain_s),
    }
    return results


async def main() -> None:
    results = await run()
    write_json(results)
    print(table(results))


def write_json(r: dict[str, object]) -> None:
    out = Path(__file__).resolve().parent
    (out / "results-case-record.json").write_text(json.dumps(r, indent=2) + "\n")


def table(r: dict[str, object]) -> str:
    """The Markdown section for bench/RESULTS.md."""
    rec = f"{r['record_appends_per_s']:.0f} | {r['record_p50_ms']:.2f} | {r['record_p99_ms']:.2f}"
    con = (f"{r['concurrent_appends_per_s']:.0f} | {r['concurrent_p50_ms']:.2f}"
           f" | {r['concurrent_p99_ms']:.2f}")
    flo = f"{r['plain_inserts_per_s']:.0f} | {r['plain_p50_ms']:.2f} | {r['plain_p99_ms']:.2f}"
    section = f"""## Case record ({r['date']}, commit {r['commit']})

Machine: {r['machine']}. {r['appends']} appends each, run side by side in one process (WAL,
synchronous=FULL). Sequential rows wait for each append before the next (one transaction
each); the concurrent row spreads the same appends over {r['writers']} writers, whose appends
group commit lets share transactions.

| | per second | p50 ms | p99 ms |
| --- | ---: | ---: | ---: |
| case record append (encrypt + chain + insert) | {rec} |
| case record append, {r['writers']} concurrent writers | {con} |
| plain SQLite insert (floor) | {flo} |
| ratio record / floor (throughput) | {r['record_vs_plain_throughput']:.2f}x | | |
| chain verification | {r['verify_records_per_s']:.0f} records/s | | |
"""
    return section


if __name__ == "__main__":
    asyncio.run(main())
