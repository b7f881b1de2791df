"""A user-space link emulator on two TUN devices (the kernel here has no netem).

The lab's link namespace routes everything arriving from the caller side into `tun-up` and
everything arriving from the NAT side into `tun-dn` (policy rules by `iif`). This process
reads each TUN, applies that direction's impairments (delay, jitter, loss, a rate limit with
a drop-tail queue, a blackout) and writes the packet back into the same TUN, from where the
kernel forwards it on by the main table. With nothing set it writes each packet straight
back from the read callback, so the lab can keep it in the path at all times.

Controlled over a filesystem UNIX socket (it crosses namespaces) with JSON lines:

    {"cmd": "ping"}
    {"cmd": "shape", "up": {"delay_ms": 150, "jitter_ms": 0, "loss": 0,
                            "rate_kbit": 0, "queue_ms": 400}, "down": null}
    {"cmd": "blackout", "on": true}
    {"cmd": "counters"}          {"cmd": "reset_counters"}

Each answer is one JSON line with "ok". A direction given as null is pass-through; a
direction left out keeps its settings. Run as
`ip netns exec <link> python -m tests.field.linkemu --control PATH --parent PID`.

Measured in the lab (tests/field/test_lab.py, 2 shared cores): pass-through ping ~0.5 ms;
150 ms each way gives a 301-303 ms ping RTT (an earlier prototype of the same design gave
304-310); a 400 kbit/s limit gives ~389 kbit/s of TCP goodput (the prototype ~362); 2000
packets/s each way at 20 ms each way get through without loss, RTT median ~43 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import fcntl
import json
import os
import random
import signal
import struct
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKET = 65535
# A packet due within this much of now goes out in the current timer callback: asyncio's
# timers fire up to a millisecond early or late anyway, and batching keeps up at high rates.
SLACK_S = 0.0003


def open_tun(name: str) -> int:
    """Attach to (or create) TUN device `name` without packet info; non-blocking fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


@dataclass(frozen=True)
class Impairment:
    """One direction's settings; all zero is pass-through."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    rate_kbit: float = 0.0
    queue_ms: float = 400.0

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0 or self.rate_kbit < 0 or self.queue_ms < 0:
            raise ValueError("delay_ms, jitter_ms, rate_kbit and queue_ms must be >= 0")
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError("loss must be between 0 and 1")

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Impairment:
        if data is None:
            return cls()
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown impairment fields: {sorted(unknown)}")
        return cls(**{key: float(value) for key, value in data.items()})

    @property
    def delays(self) -> bool:
        return self.delay_ms > 0 or self.jitter_ms > 0


@dataclass
class Counters:
    """Per direction, since the last reset."""

    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    dropped_loss: int = 0
    dropped_queue: int = 0
    dropped_blackout: int = 0
    dropped_write: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_loss + self.dropped_queue + self.dropped_blackout + self.dropped_write


@dataclass
class Direction:
    """One TUN device: packets are read, scheduled, and written back into it in order.

    Departure = max(previous departure, serialisation end + delay + jitter sample), so jitter
    never reorders. The rate limit is a serialisation clock (`link_free`): a packet waits
    until the link is free, then occupies it for bits / rate; if it would wait longer than
    queue_ms it is dropped (drop-tail).
    """

    name: str
    fd: int
    loop: asyncio.AbstractEventLoop
    rng: random.Random
    impairment: Impairment = field(default_factory=Impairment)
    blackout: bool = False
    counters: Counters = field(default_factory=Counters)
    queue: collections.deque[tuple[float, bytes]] = field(default_factory=collections.deque)
    link_free: float = 0.0
    last_departure: float = 0.0
    timer: asyncio.TimerHandle | None = None

    def on_readable(self) -> None:
        now = self.loop.time()
        while True:
            try:
                packet = os.read(self.fd, MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                print(f"linkemu {self.name}: read failed: {error}", file=sys.stderr)
                return
            self.admit(packet, now)

    def admit(self, packet: bytes, now: float) -> None:
        counters, imp = self.counters, self.impairment
        counters.packets_in += 1
        counters.bytes_in += len(packet)
        if self.blackout:
            counters.dropped_blackout += 1
            return
        if imp.loss and self.rng.random() < imp.loss:
            counters.dropped_loss += 1
            return
        departure = now
        if imp.rate_kbit:
            start = max(now, self.link_free)
            if start - now > imp.queue_ms / 1000.0:
                counters.dropped_queue += 1
                return
            self.link_free = start + len(packet) * 8 / (imp.rate_kbit * 1000.0)
            departure = self.link_free
        if imp.delays:
            extra = imp.delay_ms
            if imp.jitter_ms:
                extra = max(0.0, extra + self.rng.uniform(-imp.jitter_ms, imp.jitter_ms))
            departure += extra / 1000.0
        departure = max(departure, self.last_departure)
        self.last_departure = departure
        if departure <= now + SLACK_S and not self.queue:
            self.write(packet)
            return
        self.queue.append((departure, packet))
        if self.timer is None:
            self.timer = self.loop.call_at(departure, self.flush)

    def flush(self) -> None:
        self.timer = None
        now = self.loop.time()
        queue = self.queue
        while queue and queue[0][0] <= now + SLACK_S:
            self.write(queue.popleft()[1])
        if queue:
            self.timer = self.loop.call_at(queue[0][0], self.flush)

    def write(self, packet: bytes) -> None:
        try:
            os.write(self.fd, packet)
        except OSError:
            self.counters.dropped_write += 1
            return
        self.counters.packets_out += 1
        self.counters.bytes_out += len(packet)

    def set_blackout(self, on: bool) -> None:
        self.blackout = on
        if on:
            self.counters.dropped_blackout += len(self.queue)
            self.queue.clear()
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

    def report(self) -> dict[str, Any]:
        return {
            **asdict(self.counters),
            "dropped": self.counters.dropped,
            "queued": len(self.queue),
            "blackout": self.blackout,
            "impairment": asdict(self.impairment),
        }


class Emulator:
    """Both directions plus the JSON-lines control server."""

    def __init__(self, up: Direction, down: Direction) -> None:
        self.directions = {"up": up, "down": down}

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd == "ping":
            return {"ok": True, "pid": os.getpid()}
        if cmd == "shape":
            settings = {
                name: Impairment.from_json(request[name])
                for name in self.directions
                if name in request
            }
            for name, impairment in settings.items():
                self.directions[name].impairment = impairment
            return {"ok": True}
        if cmd == "blackout":
            for direction in self.directions.values():
                direction.set_blackout(bool(request.get("on", True)))
            return {"ok": True}
        if cmd == "counters":
            return {"ok": True, **{n: d.report() for n, d in self.directions.items()}}
        if cmd == "reset_counters":
            for direction in self.directions.values():
                direction.counters = Counters()
            return {"ok": True}
        raise ValueError(f"unknown cmd {cmd!r}")

    async def serve_client(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    answer = self.handle(json.loads(line))
                except (ValueError, TypeError, KeyError) as error:
                    answer = {"ok": False, "error": str(error)}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def parent_alive(pid: int) -> bool:
    """Whether the lab's process is still our parent (a dead one is a zombie for a while,
    so also notice being re-parented)."""
    if os.getppid() != pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    rng = random.Random(args.seed)
    up = Direction("up", open_tun(args.up), loop, rng)
    down = Direction("down", open_tun(args.down), loop, rng)
    emulator = Emulator(up, down)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    for direction in (up, down):
        loop.add_reader(direction.fd, direction.on_readable)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(args.control)
    server = await asyncio.start_unix_server(emulator.serve_client, path=args.control)
    try:
        while not stop.is_set():
            if args.parent and not parent_alive(args.parent):
                print("linkemu: parent gone, exiting", file=sys.stderr)
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    finally:
        server.close()
        for direction in (up, down):
            loop.remove_reader(direction.fd)
            os.close(direction.fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.control)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", required=True, help="UNIX socket path for JSON control")
    parser.add_argument("--up", default="tun-up", help="TUN device for caller -> network")
    parser.add_argument("--down", default="tun-dn", help="TUN device for network -> caller")
    parser.add_argument("--parent", type=int, default=0, help="exit when this pid is gone")
    parser.add_argument("--seed", type=int, default=None, help="random seed (loss, jitter)")
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
