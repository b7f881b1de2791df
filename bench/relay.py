"""Part 1: the signalling relay, side by side with PeerJS server and the Python floor; the
profile of this server under the same load; and one node against two nodes sharing Redis."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import profile
from bench.common import ServerProcess, env_float, log
from bench.erv_setup import Control, SetupError, pairs_of
from bench.loadgen import (
    Endpoint,
    Fleet,
    FloorDialect,
    JoinRefused,
    PeerJsDialect,
    RelayResult,
    measure,
    probe,
)
from bench.servers import (
    fast_libraries,
    install_peerjs,
    start_erv,
    start_floor,
    start_peerjs,
)

Members = list[tuple[Endpoint, Endpoint]]


@dataclass
class Target:
    key: str
    label: str
    start: Callable[[Path, Path], Awaitable[ServerProcess]]  # (data dir, logs) -> server
    members: Callable[[ServerProcess, int], Awaitable[tuple[Members, Control | None]]]


async def _erv_members(server: ServerProcess, count: int) -> tuple[Members, Control | None]:
    control = await Control(server.url).open()
    calls = await control.calls(count)
    return pairs_of(calls), control


async def _peerjs_members(server: ServerProcess, count: int) -> tuple[Members, Control | None]:
    dialect = PeerJsDialect()

    def member(i: int, side: str) -> Endpoint:
        name = f"bench-{i}-{side}"
        return Endpoint(f"{server.ws_base}/peerjs?key=peerjs&id={name}&token=t{i}{side}",
                        dialect, name=name)

    return [(member(i, "a"), member(i, "b")) for i in range(count)], None


async def _floor_members(server: ServerProcess, count: int) -> tuple[Members, Control | None]:
    dialect = FloorDialect()

    def member(i: int, side: str) -> Endpoint:
        name = f"bench-{i}-{side}"
        return Endpoint(f"{server.ws_base}/ws?id={name}", dialect, name=name)

    return [(member(i, "a"), member(i, "b")) for i in range(count)], None


async def _start_erv(data: Path, logs: Path) -> ServerProcess:
    return await start_erv("erv", data, logs, unthrottled=True)


async def _start_peerjs(data: Path, logs: Path) -> ServerProcess:
    return await start_peerjs(logs)


async def _start_floor(data: Path, logs: Path) -> ServerProcess:
    return await start_floor(logs, fast=False)


async def _start_floor_fast(data: Path, logs: Path) -> ServerProcess:
    return await start_floor(logs, fast=True)


PEERJS = Target("peerjs", "PeerJS server 1.0.2 (Node.js)", _start_peerjs, _peerjs_members)
ERV = Target("erv", "this server (erv run)", _start_erv, _erv_members)
FLOOR = Target("floor", "floor: aiohttp relay, asyncio + json", _start_floor, _floor_members)
FLOOR_FAST = Target("floor-fast", "floor: aiohttp relay, uvloop + orjson", _start_floor_fast,
                    _floor_members)


async def run_target(target: Target, pairs: int, tmp: Path, logs: Path, *, seconds: float,
                     warmup: float, spy: Path | None = None) -> RelayResult:
    """A fresh server, `pairs` pairs connected, one measured window; `spy`: profile into it."""
    with tempfile.TemporaryDirectory(dir=tmp) as data:
        server = await target.start(Path(data), logs)
        fleet = Fleet()
        control: Control | None = None
        sampler: subprocess.Popen[bytes] | None = None
        try:
            members, control = await target.members(server, pairs)
            connected = await fleet.pairs(members)
            server.mark()
            if spy is not None:
                sampler = profile.start(server.proc.pid, warmup + seconds, spy)
            result = await measure(connected, [server], seconds=seconds, warmup=warmup,
                                   progress=lambda m: log(f"  {target.key}: {m}"))
            if sampler is not None:
                sampler.communicate(timeout=60)
            result.server_log = server.problems()
            return result
        finally:
            if sampler is not None and sampler.poll() is None:
                sampler.kill()
            await fleet.close()
            if control is not None:
                await control.close()
            server.stop()


async def comparison(tmp: Path, logs: Path, counts: tuple[int, ...]) -> dict[str, Any]:
    seconds = env_float("ERV_BENCH_RELAY_SECONDS", 6.0)
    warmup = env_float("ERV_BENCH_WARMUP_SECONDS", 1.5)
    targets = [ERV, FLOOR]
    skipped: dict[str, str] = {}
    reason = install_peerjs()
    if reason is None:
        targets.insert(0, PEERJS)
    else:
        skipped["peerjs"] = reason
    if fast_libraries():
        targets.append(FLOOR_FAST)
    else:
        skipped["floor-fast"] = "uvloop or orjson is not installed (pip install '.[bench]')"
    runs: dict[str, dict[str, Any]] = {}
    for pairs in counts:
        log(f"relay: {pairs} pairs, {seconds:.0f} s each")
        runs[str(pairs)] = {}
        for target in targets:
            result = await run_target(target, pairs, tmp, logs, seconds=seconds, warmup=warmup)
            runs[str(pairs)][target.key] = result.as_dict()
    return {
        "seconds": seconds, "warmup": warmup, "pairs": list(counts),
        "labels": {t.key: t.label for t in (PEERJS, ERV, FLOOR, FLOOR_FAST)},
        "runs": runs, "not_run": skipped,
    }


async def profiled(tmp: Path, logs: Path, pairs: int, out: Path) -> dict[str, Any]:
    """This server under the same load with py-spy attached (a separate, unmeasured run)."""
    if profile.py_spy() is None:
        return {"skipped": "py-spy is not installed (pip install '.[bench]')"}
    seconds = env_float("ERV_BENCH_PROFILE_SECONDS", 6.0)
    log(f"profile: this server, {pairs} pairs, py-spy for {seconds:.0f} s")
    result = await run_target(ERV, pairs, tmp, logs, seconds=seconds, warmup=1.0, spy=out)
    summary = profile.summary(out)
    if summary is None:
        return {"skipped": "py-spy wrote no profile (is ptrace allowed here?)"}
    return {"pairs": pairs, "seconds": seconds,
            "cpu_us_per_msg_while_sampled": result.cpu_us_per_msg, **summary}


def _installed(program: str) -> bool:
    return Path(program).exists()


async def scale_out(tmp: Path, logs: Path, pairs: int,
                    node_counts: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """Relayed msgs/s with every pair on one node, then spread over N nodes (pair i: handler
    on node i mod N, caller on the next), all in Redis mode (ERV_REDIS_URL) sharing one
    redis-server the bench starts. Sessions are made through node 1."""
    from tests.support.redis_server import REDIS_SERVER, RedisServer

    if not _installed(REDIS_SERVER):
        return {"skipped": "redis-server is not installed (apt-get install redis-server)"}
    seconds = env_float("ERV_BENCH_RELAY_SECONDS", 6.0)
    redis = RedisServer(tmp / "redis")
    redis.start()
    try:
        results: dict[str, Any] = {"pairs": pairs, "seconds": seconds}
        assert redis.process is not None
        helper = ServerProcess("redis-server", redis.process, redis.port,
                               redis.directory / "redis.log")
        for nodes in node_counts:
            outcome = await _nodes_run(tmp, logs, redis.url, nodes, pairs, seconds, helper)
            if isinstance(outcome, str):
                return {"skipped": outcome}
            results[f"nodes_{nodes}"] = outcome.as_dict()
            redis.flush()
        return results
    finally:
        redis.stop()


async def _nodes_run(tmp: Path, logs: Path, redis_url: str, nodes: int, pairs: int,
                     seconds: float, redis: ServerProcess) -> RelayResult | str:
    log(f"scale-out: {nodes} node(s) sharing Redis, {pairs} pairs")
    data = Path(tempfile.mkdtemp(dir=tmp))
    env = {"ERV_REDIS_URL": redis_url}
    servers: list[ServerProcess] = []
    fleet = Fleet()
    control: Control | None = None
    try:
        for n in range(nodes):
            try:
                servers.append(await start_erv(f"erv-node{n + 1}", data, logs, unthrottled=True,
                                               extra_env={**env, "ERV_NODE_NAME": f"n{n + 1}"}))
            except RuntimeError as exc:
                said = str(exc).strip().splitlines()[-1] if str(exc).strip() else "no output"
                return f"the server refused to start in Redis mode ({said})"
        control = await Control(servers[0].url).open()

        def placement(i: int) -> tuple[str, str]:
            # Pair i: its handler on node i, its caller on the next node (round robin).
            return servers[i % nodes].url, servers[(i + 1) % nodes].url

        try:
            calls = await control.calls(pairs, placement=placement)
            connected = await fleet.pairs(pairs_of(calls))
        except (SetupError, JoinRefused, ConnectionError) as exc:
            return (f"nodes do not share sessions yet: a caller or handler on another node "
                    f"than the one that made the session was refused ({exc})")
        problem = await probe(connected[0])
        if problem is not None:
            return f"messages do not cross nodes yet: {problem}"
        for server in servers:
            server.mark()
        result = await measure(connected, servers, seconds=seconds, warmup=1.5,
                               helpers=[redis],
                               progress=lambda m: log(f"  {nodes} node(s): {m}"))
        result.server_log = [f"node {i + 1}: {line}" for i, s in enumerate(servers)
                             for line in s.problems()]
        return result
    finally:
        await fleet.close()
        if control is not None:
            with contextlib.suppress(Exception):
                await control.close()
        for server in servers:
            server.stop()
