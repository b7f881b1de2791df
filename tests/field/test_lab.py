"""The network lab itself, with real packets: every knob a field test relies on is proven here.

Figures are asserted loosely (a shared 2-core machine), but each test shows the knob moves the
measured quantity the right way: RTT with delay, throughput with rate, lost echoes with loss
and blackout, drop counters with each firewall mode, the public source address with the NAT
and the network switch, and TURN allocations per transport through the firewall.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import struct
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import async_playwright

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.netlab import (
    NAT2_PUBLIC,
    NAT_PUBLIC,
    SERVICE_IP,
    TURN_IP,
    Datagram,
    FirewallMode,
    Impairment,
    NetLab,
    PortBridge,
    Turn,
    UdpEcho,
    open_connection_in,
    ping,
    recv_datagram,
    stun_binding,
    sweep_leftovers,
    turn_probe,
    udp_socket,
)

# --- helpers ---------------------------------------------------------------------------------


@dataclass
class TcpSink:
    """A TCP server in ctl that counts bytes with arrival times and remembers peers."""

    peers: list[str] = field(default_factory=list)
    arrivals: list[tuple[float, int]] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    handlers: list[asyncio.Task[Any]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.handlers.append(task)
        self.peers.append(writer.get_extra_info("peername")[0])
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                self.arrivals.append((time.monotonic(), len(data)))
                if data.startswith(b"hello"):
                    writer.write(b"hi\n")
        writer.close()

    @property
    def total(self) -> int:
        return sum(size for _, size in self.arrivals)

    async def close(self) -> None:
        """End every connection so the handlers finish (a cancelled one logs an error)."""
        for writer in self.writers:
            writer.close()
        if self.handlers:
            await asyncio.wait(self.handlers, timeout=2.0)


@contextlib.asynccontextmanager
async def tcp_sink(lab: NetLab, host: str = SERVICE_IP, port: int = 0
                   ) -> AsyncIterator[tuple[TcpSink, int]]:
    sink = TcpSink()
    server = await asyncio.start_server(sink.handle, sock=lab.listen("ctl", host, port))
    try:
        yield sink, int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await sink.close()
        await server.wait_closed()


async def tcp_hello(lab: NetLab, port: int, host: str = SERVICE_IP, timeout: float = 1.0
                    ) -> bool:
    """Whether the caller can open a TCP connection and get an answer."""
    try:
        reader, writer = await open_connection_in(lab.ns("caller"), host, port, timeout)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"hello\n")
        return await asyncio.wait_for(reader.readline(), timeout) == b"hi\n"
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


class UdpProbe:
    """A UDP socket in the caller namespace sending numbered, timestamped datagrams.

    Send times are time.time(), the clock of the kernel receive timestamps (udp_socket).
    """

    def __init__(self, lab: NetLab) -> None:
        self.sock = udp_socket(lab.ns("caller"))
        self.replies: list[tuple[int, float]] = []
        self.unsent = 0

    def send(self, seq: int, target: tuple[str, int], size: int = 200) -> None:
        payload = struct.pack("!Id", seq, time.time())
        try:
            self.sock.sendto(payload + b"\0" * max(0, size - len(payload)), target)
        except BlockingIOError:
            self.unsent += 1

    async def collect(self, duration: float) -> list[tuple[int, float]]:
        """Echoed datagrams for `duration` s: (seq, round trip ms)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + duration
        while (remaining := deadline - loop.time()) > 0:
            try:
                got = await asyncio.wait_for(recv_datagram(self.sock), remaining)
            except TimeoutError:
                break
            seq, sent = struct.unpack("!Id", got.data[:12])
            self.replies.append((seq, (got.at - sent) * 1000))
        return self.replies

    def close(self) -> None:
        self.sock.close()


def one_way(got: Datagram) -> tuple[int, float]:
    """(seq, one-way delay ms) of a UdpProbe datagram as received by a UdpEcho."""
    seq, sent = struct.unpack("!Id", got.data[:12])
    return seq, (got.at - sent) * 1000


# --- basic path and NAT ----------------------------------------------------------------------


async def test_caller_reaches_the_service_through_the_nat(lab: NetLab) -> None:
    result = await ping(lab.ns("caller"), SERVICE_IP, count=5, interval=0.05)
    assert result.lost == 0, result
    assert result.median_ms < 25, f"pass-through emulator adds too much: {result}"
    async with tcp_sink(lab) as (sink, port):
        assert await tcp_hello(lab, port)
    assert sink.peers == [NAT_PUBLIC], "the service must see the NAT's public address"
    counters = lab.link_counters()
    assert counters["up"]["packets_out"] >= 5 and counters["down"]["packets_out"] >= 5, (
        "traffic on eth0 must cross the link emulator"
    )


async def test_nothing_from_the_public_side_reaches_the_caller_unsolicited(lab: NetLab) -> None:
    # A host on the public segment that routes the caller's private net at the NAT (as a
    # neighbour on a carrier's network could) still cannot open anything towards the caller.
    lab.run("ctl", "ip", "route", "add", "10.77.1.0/24", "via", NAT_PUBLIC, check=True)
    try:
        result = await ping(lab.ns("ctl"), "10.77.1.2", count=3, interval=0.05, timeout=0.5)
    finally:
        lab.run("ctl", "ip", "route", "del", "10.77.1.0/24", check=True)
    assert result.received == 0
    assert lab.firewall_drops()["in-unsolicited"] >= 3


# --- link emulator knobs ---------------------------------------------------------------------


def test_emulator_rejects_nonsense_settings(lab: NetLab) -> None:
    emulator = lab.link
    assert emulator is not None
    with pytest.raises(ValueError, match="loss"):
        emulator.request({"cmd": "shape", "up": {"loss": 1.5}})
    with pytest.raises(ValueError, match="unknown"):
        emulator.request({"cmd": "shape", "down": {"delay": 5}})
    with pytest.raises(ValueError, match="loss"):
        Impairment(loss=-0.1)
    assert lab.link_counters()["up"]["impairment"]["loss"] == 0


async def test_delay_150ms_each_way_gives_about_300ms_rtt(lab: NetLab) -> None:
    lab.shape(up=Impairment(delay_ms=150), down=Impairment(delay_ms=150))
    result = await ping(lab.ns("caller"), SERVICE_IP, count=10, interval=0.1)
    print(f"ping with 150 ms each way: median {result.median_ms:.1f} ms, {result.rtts_ms}")
    assert result.lost == 0, result
    assert 280 <= result.median_ms <= 450, result


async def bulk_kbit(lab: NetLab, size: int, timeout: float) -> float:
    """Send `size` bytes caller -> ctl over TCP; goodput from first to last byte received.

    Whole-transfer timing on purpose: with drop-tail losses TCP hands data to the receiver
    in bursts (after each retransmission), so per-second samples swing around the rate.
    """
    async with tcp_sink(lab) as (sink, port):
        _reader, writer = await open_connection_in(lab.ns("caller"), SERVICE_IP, port)
        writer.write(b"x" * size)
        await writer.drain()
        deadline = time.monotonic() + timeout
        while sink.total < size and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        writer.close()
        assert sink.total == size, f"only {sink.total} of {size} bytes in {timeout} s"
        first, last = sink.arrivals[0][0], sink.arrivals[-1][0]
        return size * 8 / (last - first) / 1000


async def test_rate_limit_caps_tcp_throughput(lab: NetLab) -> None:
    lab.shape(up=Impairment(rate_kbit=400), down=Impairment(rate_kbit=400))
    kbit = await bulk_kbit(lab, 200_000, timeout=10.0)  # about 4 s at 400 kbit/s
    counters = lab.link_counters()["up"]
    print(f"TCP at 400 kbit/s: {kbit:.0f} kbit/s ({counters['dropped_queue']} queue drops)")
    assert 250 <= kbit <= 420, kbit


async def test_unlimited_link_is_much_faster(lab: NetLab) -> None:
    kbit = await bulk_kbit(lab, 4_000_000, timeout=10.0)
    print(f"TCP pass-through: {kbit / 1000:.1f} Mbit/s")
    assert kbit > 5000, "the pass-through path should not be the bottleneck of a video call"


async def test_loss_drops_a_share_of_packets(lab: NetLab) -> None:
    lab.shape(up=Impairment(loss=0.3))
    result = await ping(lab.ns("caller"), SERVICE_IP, count=60, interval=0.02, timeout=1.0)
    dropped = lab.link_counters()["up"]["dropped_loss"]
    print(f"loss 0.3 up: {result.lost}/60 echoes lost, emulator dropped {dropped}")
    assert 6 <= result.lost <= 33, result
    assert dropped >= 6 and dropped <= result.lost


async def test_blackout_drops_everything_and_lifting_it_restores(lab: NetLab) -> None:
    caller = lab.ns("caller")
    assert (await ping(caller, SERVICE_IP, count=3, interval=0.05)).lost == 0
    lab.blackout(True)
    dark = await ping(caller, SERVICE_IP, count=5, interval=0.05, timeout=0.5)
    assert dark.received == 0, dark
    assert lab.link_counters()["up"]["dropped_blackout"] >= 5
    lab.blackout(False)
    assert (await ping(caller, SERVICE_IP, count=3, interval=0.05)).lost == 0


async def test_jitter_varies_delay_but_never_reorders(lab: NetLab,
                                                      service_echo: UdpEcho) -> None:
    lab.shape(up=Impairment(delay_ms=40, jitter_ms=20))
    service_echo.echo = False
    probe = UdpProbe(lab)
    arrivals: list[tuple[int, float]] = []
    try:
        for seq in range(100):
            probe.send(seq, service_echo.address)
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
    finally:
        probe.close()
    arrivals = [one_way(got) for got in service_echo.received]
    seqs = [seq for seq, _ in arrivals]
    assert seqs == sorted(seqs) and len(seqs) >= 95, seqs
    delays = [delay for _, delay in arrivals]
    print(f"jitter 40±20 ms: one-way min {min(delays):.1f} max {max(delays):.1f} "
          f"stdev {statistics.pstdev(delays):.1f}")
    assert 15 <= min(delays) and max(delays) <= 200, delays
    assert statistics.pstdev(delays) > 3, "jitter should spread the delay"


async def test_drop_tail_queue_bounds_the_delay(lab: NetLab, service_echo: UdpEcho) -> None:
    lab.shape(up=Impairment(rate_kbit=1000, queue_ms=100))
    service_echo.echo = False
    probe = UdpProbe(lab)
    try:
        for seq in range(200):  # 200 kB at once into a 1 Mbit/s link with 100 ms of queue
            probe.send(seq, service_echo.address, size=1000)
        await asyncio.sleep(0.6)
    finally:
        probe.close()
    counters = lab.link_counters()["up"]
    delays = [one_way(got)[1] for got in service_echo.received]
    print(f"burst into 1 Mbit/s, 100 ms queue: {len(delays)} through, "
          f"{counters['dropped_queue']} dropped, max delay {max(delays):.0f} ms")
    assert counters["dropped_queue"] >= 150, counters
    assert 5 <= len(delays) <= 40
    assert max(delays) < 300, delays


async def test_emulator_keeps_up_with_2000_packets_per_second_each_way(
        lab: NetLab, service_echo: UdpEcho) -> None:
    lab.shape(up=Impairment(delay_ms=20), down=Impairment(delay_ms=20))
    probe = UdpProbe(lab)
    total, per_tick, tick = 3000, 20, 0.01  # 2000 pps of 600 bytes (9.6 Mbit/s) each way
    try:
        collector = asyncio.ensure_future(probe.collect(total / per_tick * tick + 1.0))
        started = time.monotonic()
        for batch in range(total // per_tick):
            for seq in range(batch * per_tick, (batch + 1) * per_tick):
                probe.send(seq, service_echo.address, size=600)
            await asyncio.sleep(max(0.0, started + (batch + 1) * tick - time.monotonic()))
        replies = await collector
    finally:
        probe.close()
    rtts = sorted(rtt for _, rtt in replies)
    counters = lab.link_counters()
    median, p95 = statistics.median(rtts), rtts[int(len(rtts) * 0.95)]
    summary = (f"{probe.unsent} not sent, {len(service_echo.received)}/{total} reached the echo, "
               f"{len(replies)} came back; "
               f"up in/out {counters['up']['packets_in']}/{counters['up']['packets_out']}, "
               f"down in/out {counters['down']['packets_in']}/{counters['down']['packets_out']}")
    print(f"2000 pps each way with 20 ms each way: {summary}; "
          f"RTT median {median:.1f} p95 {p95:.1f} ms")
    assert counters["up"]["dropped"] == 0 and counters["down"]["dropped"] == 0, summary
    assert len(replies) >= total * 0.97, summary
    # Falling behind shows as delays growing through the run (hundreds of ms and more);
    # a descheduled process on a busy 2-core machine costs tens of ms now and then.
    assert 38 <= median <= 100, f"the emulator fell behind: {summary}"
    assert p95 <= 400, f"the emulator fell behind: {summary}"


# --- firewall --------------------------------------------------------------------------------

# What gets through per mode: ping, UDP to the service, UDP to TURN 3478, TCP to the service
# on a high port, TCP to port 443.
REACHABLE: dict[FirewallMode, tuple[bool, bool, bool, bool, bool]] = {
    "open": (True, True, True, True, True),
    "udp_turn_only": (True, False, True, True, True),
    "no_udp": (True, False, False, True, True),
    "tcp443_only": (False, False, False, False, True),
    "blocked": (False, False, False, False, False),
}


async def udp_answered(lab: NetLab, echo: UdpEcho, timeout: float = 0.6) -> bool:
    probe = UdpProbe(lab)
    try:
        for seq in range(3):
            probe.send(seq, echo.address)
        return bool(await probe.collect(timeout))
    finally:
        probe.close()


@pytest.mark.parametrize("mode", list(REACHABLE))
async def test_firewall_mode_blocks_what_it_should(
        lab: NetLab, turn: Turn, service_echo: UdpEcho, mode: FirewallMode) -> None:
    lab.set_firewall(mode)
    caller = lab.ns("caller")
    async with tcp_sink(lab) as (_high, port), tcp_sink(lab, port=443):
        got = await asyncio.gather(
            ping(caller, SERVICE_IP, count=2, interval=0.05, timeout=0.6),
            udp_answered(lab, service_echo),
            stun_binding(caller, TURN_IP, 3478, "udp", timeout=0.7),
            tcp_hello(lab, port, timeout=0.7),
            tcp_hello(lab, 443, timeout=0.7),
        )
    seen = (got[0].received > 0, got[1], got[2] is not None, got[3], got[4])
    assert seen == REACHABLE[mode], f"{mode}: ping, udp, turn-udp, tcp, tcp443 = {seen}"
    drops = lab.firewall_drops()
    if not seen[1]:
        assert drops["out-udp"] >= 3, drops
    if not seen[3]:
        assert drops["out-tcp"] >= 1, drops
    if not seen[0]:
        assert drops["out-other"] >= 2, drops
    if mode == "open":
        assert got[2] is not None and got[2][0] == NAT_PUBLIC


async def test_switching_mode_cuts_an_established_udp_flow(lab: NetLab,
                                                          service_echo: UdpEcho) -> None:
    probe = UdpProbe(lab)
    try:
        probe.send(0, service_echo.address)
        assert await probe.collect(0.5), "flow should work while open"
        public = service_echo.received[-1].source
        assert public[0] == NAT_PUBLIC
        lab.set_firewall("no_udp")
        probe.replies.clear()
        probe.send(1, service_echo.address)
        # and the service side keeps sending to the caller's public mapping: cut as well
        service_echo.sock.sendto(struct.pack("!Id", 2, time.time()), public)
        assert not await probe.collect(0.5)
        drops = lab.firewall_drops()
        assert drops["out-udp"] >= 1 and drops["in-udp"] >= 1, drops
        lab.set_firewall("open")
        probe.send(3, service_echo.address)
        assert await probe.collect(0.5), "flow should resume when the firewall opens"
    finally:
        probe.close()


async def test_flush_conntrack_forgets_the_nat_mappings(lab: NetLab,
                                                       service_echo: UdpEcho) -> None:
    assert await udp_answered(lab, service_echo)
    port = service_echo.address[1]
    assert any(f"dport={port}" in line for line in lab.conntrack_entries())
    lab.flush_conntrack()
    assert not any(f"dport={port}" in line for line in lab.conntrack_entries())
    assert await udp_answered(lab, service_echo), "new flows work after the flush"


# --- network change --------------------------------------------------------------------------


async def test_switch_caller_network_moves_to_the_second_carrier(lab: NetLab) -> None:
    async with tcp_sink(lab) as (sink, port):
        assert await tcp_hello(lab, port)
        lab.switch_caller_network("nat2")
        lab.reset_link_counters()
        assert await tcp_hello(lab, port)
        assert lab.link_counters()["up"]["packets_in"] == 0, "4G does not cross the Wi-Fi link"
        addresses = json.loads(lab.run("caller", "ip", "-j", "-4", "addr", "show", "eth0",
                                       check=True).stdout)
        assert not any(entry.get("addr_info") for entry in addresses), (
            "eth0 keeps no address after leaving Wi-Fi"
        )
        lab.switch_caller_network("nat")
        assert await tcp_hello(lab, port)
    assert sink.peers == [NAT_PUBLIC, NAT2_PUBLIC, NAT_PUBLIC]


# --- TURN ------------------------------------------------------------------------------------

TURN_WORKS: dict[FirewallMode, set[str]] = {
    "open": {"udp", "tcp", "tls"},
    "udp_turn_only": {"udp", "tcp", "tls"},
    "no_udp": {"tcp", "tls"},
    "tcp443_only": {"tls"},
    "blocked": set(),
}


@pytest.mark.parametrize("mode", list(TURN_WORKS))
async def test_turn_allocation_through_the_firewall(
        lab: NetLab, turn: Turn, service_echo: UdpEcho, mode: FirewallMode) -> None:
    lab.set_firewall(mode)
    username, password = turn.credential("caller-1")
    probes = await asyncio.gather(*(
        turn_probe(lab.ns("caller"), username, password, transport=transport,
                   peer=service_echo.address, timeout=1.0,
                   cafile=str(turn.directory / "turn-cert.pem"), server_hostname="turn.erv.test")
        for transport in ("udp", "tcp", "tls")
    ))
    works = {probe.transport for probe in probes if probe.ok and probe.echoed}
    assert works == TURN_WORKS[mode], [(p.transport, p.error) for p in probes]
    for probe in probes:
        if probe.ok:
            assert probe.mapped is not None and probe.mapped[0] == NAT_PUBLIC
            assert probe.relayed is not None and probe.relayed[0] == TURN_IP
    if works:
        assert {got.source[0] for got in service_echo.received} == {TURN_IP}, (
            "the peer hears the relay, never the caller"
        )


async def test_turn_checks_the_rest_credential(lab: NetLab, turn: Turn,
                                               service_echo: UdpEcho) -> None:
    caller = lab.ns("caller")
    username, _password = turn.credential("caller-2")
    wrong = await turn_probe(caller, username, "not-the-password", peer=service_echo.address)
    assert not wrong.ok and wrong.error is not None and "401" in wrong.error
    expired = await turn_probe(caller, *turn.credential("caller-3", ttl=-60))
    assert not expired.ok and expired.error is not None and "401" in expired.error


async def test_turnutils_uclient_agrees(lab: NetLab, turn: Turn) -> None:
    """coturn's own client over TLS on 443, as an independent check of our probe.

    Its peer is our echo on 198.18.0.1:3480 (bound before the client starts: turnutils_peer
    may not be up yet on a busy machine, and the client does not retry).
    """
    username, password = turn.credential("uclient")
    async with UdpEcho(lab.ns("ctl"), SERVICE_IP, 3480) as peer:
        result = await lab.arun(
            "caller", "turnutils_uclient", "-t", "-S", "-p", "443", "-u", username,
            "-w", password, "-e", SERVICE_IP, "-r", "3480", "-n", "3", "-c", TURN_IP,
            timeout=20,
        )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-1000:]
    assert "tot_recv_msgs=3" in result.stdout, result.stdout[-2000:]
    assert "Total lost packets 0" in result.stdout
    assert {got.source[0] for got in peer.received} == {TURN_IP}


# --- cleanup discipline ----------------------------------------------------------------------


def test_sweep_removes_what_a_killed_run_left_behind(lab: NetLab) -> None:
    """A namespace named for a pid that is gone is deleted, and what runs inside is killed;
    the running lab (its pid is alive) is left alone."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"ervlab-{dead.pid}-0-caller"
    subprocess.run(["ip", "netns", "add", name], check=True)
    orphan = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "60"])
    try:
        deadline = time.monotonic() + 5
        while not subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                                 text=True, check=False).stdout.strip():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert name in sweep_leftovers()
        assert orphan.wait(5) is not None, "processes inside a leftover namespace are killed"
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                 check=True).stdout
        assert name not in listing
        assert lab.ns("caller") in listing
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


# --- Chromium in the caller namespace --------------------------------------------------------


async def test_chromium_runs_in_the_caller_namespace(lab: NetLab) -> None:
    seen: list[str | None] = []

    async def index(request: web.Request) -> web.Response:
        seen.append(request.remote)
        return web.Response(text="<title>lab</title><p id=ok>served in ctl</p>",
                            content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.SockSite(runner, lab.listen("ctl", SERVICE_IP, 0))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://{SERVICE_IP}:{port}/"
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=lab.chromium("caller", CHROMIUM), headless=True,
                args=[*CHROMIUM_ARGS, "--remote-debugging-port=9222"],
            )
            try:
                page = await browser.new_page()
                response = await page.goto(url, timeout=15000)
                assert response is not None and response.status == 200
                assert await page.text_content("#ok") == "served in ctl"
                assert seen == [NAT_PUBLIC], "the browser's request must come through the NAT"
                assert lab.pids("caller"), "Chromium runs inside the caller namespace"
                assert lab.link_counters()["up"]["packets_in"] > 0
                # its DevTools port listens on the caller namespace's loopback: bridge to it
                async with PortBridge(lab.ns("caller"), "127.0.0.1", 9222) as bridge, \
                        aiohttp.ClientSession() as http:
                    async with http.get(f"http://127.0.0.1:{bridge.port}/json/version") as got:
                        assert "Browser" in await got.json(content_type=None)
                lab.set_firewall("blocked")
                blocked = await browser.new_page()
                with pytest.raises(PlaywrightError):
                    await blocked.goto(url + "?again", timeout=2000)
                assert len(seen) == 1
            finally:
                await browser.close()
    finally:
        await runner.cleanup()
    deadline = time.monotonic() + 10
    while lab.pids("caller"):
        assert time.monotonic() < deadline, "Chromium left processes in the caller namespace"
        await asyncio.sleep(0.1)
