"""A network lab in Linux namespaces: a caller behind a shaped link and a NAT with a firewall.

```
caller eth0 10.77.1.2 -- 10.77.1.1 [link: emulator on TUN] 10.77.2.1 -- 10.77.2.2 [nat] 198.18.0.2 +
caller eth1 10.78.1.2 -- 10.78.1.1 [nat2: a second carrier] 198.18.0.4 ---------------------------+
                 [ctl: bridge br0, 198.18.0.1 (service, staff browsers), 198.18.0.3 (TURN)]
```
(all /24; nat has the switchable firewall, both NATs MASQUERADE, ctl does no NAT)

Why this shape: a 999 caller is on a phone network we do not control, behind carrier NAT and
sometimes a firewall that drops UDP; the control room is on the public side. Everything here
is real packets through the kernel (NAT, conntrack, iptables), only the link impairments are
done in user space (tests/field/linkemu.py) because this kernel has no netem.

Every namespace is named `ervlab-<pid>-<n>-<role>` so that a later run can find and delete
the leftovers of a run that was killed (its pid no longer exists). Nothing routes off the
machine: the namespaces have no link to the root namespace at all; the test process reaches
them by creating sockets inside them (`netns_socket`, a `setns` in a short-lived thread).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import datetime
import errno
import hashlib
import hmac
import ipaddress
import itertools
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from server.ice import turn_credential
from tests.field.linkemu import Impairment

__all__ = [
    "CALLER_4G",
    "CALLER_WIFI",
    "FIREWALL_MODES",
    "LINK_CALLER_SIDE",
    "LINK_NAT_SIDE",
    "NAT2_INSIDE",
    "NAT2_PUBLIC",
    "NAT_INSIDE",
    "NAT_PUBLIC",
    "SERVICE_IP",
    "TURN_IP",
    "Datagram",
    "Firewall",
    "FirewallMode",
    "Impairment",
    "LabUnavailable",
    "LinkEmulator",
    "NetLab",
    "PingResult",
    "PortBridge",
    "StunChannel",
    "StunMessage",
    "Turn",
    "TurnProbe",
    "UdpEcho",
    "chromium_in_ns",
    "connected_socket",
    "in_netns",
    "lab_problems",
    "listening_socket",
    "make_test_certificate",
    "netns_socket",
    "open_connection_in",
    "ping",
    "recv_datagram",
    "stun_binding",
    "sweep_leftovers",
    "turn_probe",
    "udp_socket",
]

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
PREFIX = "ervlab"
NAME_PATTERN = re.compile(rf"^{PREFIX}-(\d+)-(\d+)-([a-z0-9]+)$")
ROLES = ("caller", "link", "nat", "nat2", "ctl")

CALLER_WIFI = "10.77.1.2"
LINK_CALLER_SIDE = "10.77.1.1"
LINK_NAT_SIDE = "10.77.2.1"
NAT_INSIDE = "10.77.2.2"
NAT_PUBLIC = "198.18.0.2"
CALLER_4G = "10.78.1.2"
NAT2_INSIDE = "10.78.1.1"
NAT2_PUBLIC = "198.18.0.4"
SERVICE_IP = "198.18.0.1"
TURN_IP = "198.18.0.3"

FirewallMode = Literal["open", "udp_turn_only", "no_udp", "tcp443_only", "blocked"]
FIREWALL_MODES: tuple[FirewallMode, ...] = (
    "open", "udp_turn_only", "no_udp", "tcp443_only", "blocked",
)
Network = Literal["nat", "nat2"]

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class LabUnavailable(RuntimeError):
    """The machine cannot run the lab (not root, no `ip netns`, no TUN...)."""


# --- namespaces from inside the test process ------------------------------------------------


def _enter_netns(ns_name: str) -> None:
    """Move the calling thread (only it: network namespaces are per thread) into ns_name."""
    fd = os.open(f"/run/netns/{ns_name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"setns({ns_name}): {os.strerror(code)}")
    finally:
        os.close(fd)


def in_netns(ns_name: str, fn: Callable[[], T]) -> T:
    """Run fn in a fresh thread inside ns_name and return its result.

    Python 3.11 has no os.setns, and the test process must never change its own namespace
    (the event loop thread would then talk to the wrong network). Sockets created by fn keep
    the namespace they were created in after the thread exits.
    """
    result: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            _enter_netns(ns_name)
            result.append(fn())
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=target, name=f"netns-{ns_name}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def netns_socket(
    ns_name: str,
    family: socket.AddressFamily = socket.AF_INET,
    kind: socket.SocketKind = socket.SOCK_STREAM,
    proto: int = 0,
    bind: tuple[str, int] | None = None,
) -> socket.socket:
    """A socket that lives in ns_name (optionally bound), for use anywhere in this process."""

    def make() -> socket.socket:
        sock = socket.socket(family, kind, proto)
        try:
            if bind is not None:
                if kind == socket.SOCK_STREAM:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(bind)
        except BaseException:
            sock.close()
            raise
        return sock

    return in_netns(ns_name, make)


def listening_socket(
    ns_name: str, host: str, port: int = 0,
    family: socket.AddressFamily = socket.AF_INET, backlog: int = 128,
) -> socket.socket:
    """A bound, listening TCP socket inside ns_name, e.g. for aiohttp's `web.SockSite`."""
    sock = netns_socket(ns_name, family, socket.SOCK_STREAM, bind=(host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def connected_socket(
    ns_name: str, host: str, port: int, timeout: float = 5.0,
    family: socket.AddressFamily = socket.AF_INET,
) -> socket.socket:
    """A TCP socket inside ns_name, connected (blocking, in the helper thread) to host:port."""

    def make() -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)
        return sock

    return in_netns(ns_name, make)


async def open_connection_in(
    ns_name: str, host: str, port: int, timeout: float = 5.0,
    ssl_context: ssl.SSLContext | None = None, server_hostname: str | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio streams over a TCP (or TLS) connection made from inside ns_name."""
    sock = netns_socket(ns_name)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            return await asyncio.open_connection(sock=sock, ssl=ssl_context,
                                                 server_hostname=server_hostname)
    except BaseException:
        sock.close()
        raise


# --- probes with real packets -----------------------------------------------------------------


@dataclass
class PingResult:
    """Echo round trips in ms (received only); `sent - len(rtts_ms)` were lost."""

    sent: int
    rtts_ms: list[float]

    @property
    def received(self) -> int:
        return len(self.rtts_ms)

    @property
    def lost(self) -> int:
        return self.sent - self.received

    @property
    def median_ms(self) -> float:
        if not self.rtts_ms:
            raise ValueError("no echo reply received")
        return statistics.median(self.rtts_ms)


def _icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


async def ping(
    ns_name: str, host: str, count: int = 10, interval: float = 0.2, timeout: float = 2.0,
) -> PingResult:
    """ICMP echo from inside ns_name over a raw socket (iputils-ping is not installed here).

    A reply later than `timeout` after the last request counts as lost.
    """
    loop = asyncio.get_running_loop()
    sock = netns_socket(ns_name, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    ident = (os.getpid() ^ id(sock)) & 0xFFFF
    sent_at: dict[int, float] = {}
    rtts: dict[int, float] = {}

    async def receive() -> None:
        while True:
            packet = await loop.sock_recv(sock, 4096)
            now = time.monotonic()
            header = (packet[0] & 0x0F) * 4
            kind, _code, _sum, rid, seq = struct.unpack("!BBHHH", packet[header:header + 8])
            if kind == 0 and rid == ident and seq in sent_at and seq not in rtts:
                rtts[seq] = (now - sent_at[seq]) * 1000.0
                if len(rtts) == count:
                    return

    receiver = asyncio.ensure_future(receive())
    try:
        for seq in range(count):
            body = struct.pack("!d", time.time()) + b"erv-netlab-ping" * 2
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            packet = struct.pack("!BBHHH", 8, 0, _icmp_checksum(header + body), ident, seq)
            sent_at[seq] = time.monotonic()
            await loop.sock_sendto(sock, packet + body, (host, 0))
            if seq < count - 1:
                await asyncio.sleep(interval)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(receiver), timeout)
    finally:
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver
        sock.close()
    return PingResult(sent=count, rtts_ms=[rtts[seq] for seq in sorted(rtts)])


STUN_COOKIE = 0x2112A442
STUN_BINDING, STUN_ALLOCATE, STUN_REFRESH, STUN_CREATE_PERMISSION = 0x0001, 0x0003, 0x0004, 0x0008
STUN_SEND_INDICATION, STUN_DATA_INDICATION = 0x0016, 0x0017
ATTR_USERNAME, ATTR_INTEGRITY, ATTR_ERROR, ATTR_LIFETIME = 0x0006, 0x0008, 0x0009, 0x000D
ATTR_PEER, ATTR_DATA, ATTR_REALM, ATTR_NONCE = 0x0012, 0x0013, 0x0014, 0x0015
ATTR_RELAYED, ATTR_TRANSPORT, ATTR_MAPPED = 0x0016, 0x0019, 0x0020


@dataclass
class StunMessage:
    """A decoded STUN message: type, transaction id and raw attributes in order."""

    kind: int
    txid: bytes
    attrs: list[tuple[int, bytes]]

    def get(self, attr: int) -> bytes | None:
        return next((value for kind, value in self.attrs if kind == attr), None)

    def address(self, attr: int) -> tuple[str, int] | None:
        value = self.get(attr)
        if value is None or len(value) < 8 or value[1] != 0x01:
            return None
        port = struct.unpack("!H", value[2:4])[0] ^ (STUN_COOKIE >> 16)
        raw = struct.unpack("!I", value[4:8])[0] ^ STUN_COOKIE
        return str(ipaddress.IPv4Address(raw)), port

    @property
    def error(self) -> str | None:
        value = self.get(ATTR_ERROR)
        if value is None:
            return None
        return f"{(value[2] & 7) * 100 + value[3]} {value[4:].decode(errors='replace')}"

    @property
    def is_success(self) -> bool:
        return self.kind & 0x0110 == 0x0100


def _stun_attr(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def _xor_address(host: str, port: int) -> bytes:
    raw = int(ipaddress.IPv4Address(host)) ^ STUN_COOKIE
    return struct.pack("!BBHI", 0, 1, port ^ (STUN_COOKIE >> 16), raw)


def stun_encode(kind: int, txid: bytes, attrs: Sequence[tuple[int, bytes]],
                key: bytes | None = None) -> bytes:
    """Encode a STUN message; with key, append MESSAGE-INTEGRITY (HMAC-SHA1, RFC 5389)."""
    body = b"".join(_stun_attr(attr, value) for attr, value in attrs)
    if key is not None:
        head = struct.pack("!HHI", kind, len(body) + 24, STUN_COOKIE) + txid
        body += _stun_attr(ATTR_INTEGRITY, hmac.new(key, head + body, hashlib.sha1).digest())
    return struct.pack("!HHI", kind, len(body), STUN_COOKIE) + txid + body


def stun_decode(data: bytes) -> StunMessage | None:
    if len(data) < 20:
        return None
    kind, length, cookie = struct.unpack("!HHI", data[:8])
    if cookie != STUN_COOKIE or len(data) < 20 + length:
        return None
    attrs, offset = [], 20
    while offset + 4 <= 20 + length:
        attr, size = struct.unpack("!HH", data[offset:offset + 4])
        attrs.append((attr, data[offset + 4:offset + 4 + size]))
        offset += 4 + size + (-size % 4)
    return StunMessage(kind, data[8:20], attrs)


TurnTransport = Literal["udp", "tcp", "tls"]


class StunChannel:
    """STUN transactions from inside a namespace over UDP, TCP or TLS.

    Requests are matched to answers by transaction id (retransmitted every 250 ms over UDP);
    indications (TURN Data) are queued for `indication()`.
    """

    def __init__(self) -> None:
        self._pending: dict[bytes, asyncio.Future[StunMessage]] = {}
        self._indications: asyncio.Queue[StunMessage] = asyncio.Queue()
        self._udp: socket.socket | None = None
        self._server: tuple[str, int] = ("", 0)
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, ns_name: str, host: str, port: int, transport: TurnTransport = "udp",
        timeout: float = 2.0, cafile: str | None = None, server_hostname: str | None = None,
    ) -> StunChannel:
        channel = cls()
        channel._server = (host, port)
        if transport == "udp":
            sock = netns_socket(ns_name, socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            channel._udp = sock
            channel._reader_task = asyncio.ensure_future(channel._read_udp(sock))
            return channel
        context = None
        if transport == "tls":
            context = ssl.create_default_context(cafile=cafile)
            if cafile is None:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        reader, writer = await open_connection_in(
            ns_name, host, port, timeout, ssl_context=context,
            server_hostname=(server_hostname or host) if context else None,
        )
        channel._writer = writer
        channel._reader_task = asyncio.ensure_future(channel._read_stream(reader))
        return channel

    def _dispatch(self, message: StunMessage | None) -> None:
        if message is None:
            return
        future = self._pending.pop(message.txid, None)
        if future is not None and not future.done():
            future.set_result(message)
        elif message.kind & 0x0110 == 0x0010:
            self._indications.put_nowait(message)

    async def _read_udp(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            while True:
                self._dispatch(stun_decode(await loop.sock_recv(sock, 65536)))

    async def _read_stream(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                header = await reader.readexactly(20)
                body = await reader.readexactly(struct.unpack("!H", header[2:4])[0])
                self._dispatch(stun_decode(header + body))

    async def send(self, data: bytes) -> None:
        if self._udp is not None:
            await asyncio.get_running_loop().sock_sendto(self._udp, data, self._server)
        else:
            assert self._writer is not None
            self._writer.write(data)
            await self._writer.drain()

    async def request(self, kind: int, attrs: Sequence[tuple[int, bytes]],
                      key: bytes | None = None, timeout: float = 2.0) -> StunMessage:
        """Send one request and wait for its answer (TimeoutError if none)."""
        txid = os.urandom(12)
        data = stun_encode(kind, txid, attrs, key)
        future: asyncio.Future[StunMessage] = asyncio.get_running_loop().create_future()
        self._pending[txid] = future
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.send(data)
                    if self._udp is None:
                        return await future
                    with contextlib.suppress(TimeoutError):
                        return await asyncio.wait_for(asyncio.shield(future), 0.25)
        finally:
            self._pending.pop(txid, None)

    async def indication(self, timeout: float = 2.0) -> StunMessage:
        return await asyncio.wait_for(self._indications.get(), timeout)

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        if self._udp is not None:
            self._udp.close()
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await self._writer.wait_closed()


async def stun_binding(
    ns_name: str, host: str, port: int = 3478,
    transport: TurnTransport = "udp", timeout: float = 1.0,
) -> tuple[str, int] | None:
    """One STUN Binding request from inside ns_name; the mapped (public) address, or None.

    No credentials needed, so it shows whether a STUN/TURN server is reachable through the
    NAT and which public address the NAT gives the caller.
    """
    try:
        channel = await StunChannel.open(ns_name, host, port, transport, timeout)
    except (OSError, TimeoutError):
        return None
    try:
        answer = await channel.request(STUN_BINDING, [], timeout=timeout)
    except (OSError, TimeoutError):
        return None
    finally:
        await channel.close()
    return answer.address(ATTR_MAPPED) if answer.is_success else None


@dataclass
class TurnProbe:
    """What one TURN allocation attempt achieved; `error` says where it stopped."""

    transport: TurnTransport
    ok: bool = False
    error: str | None = None
    mapped: tuple[str, int] | None = None
    relayed: tuple[str, int] | None = None
    echoed: bool = False


async def turn_probe(
    ns_name: str, username: str, password: str, *, transport: TurnTransport = "udp",
    host: str = TURN_IP, port: int | None = None, peer: tuple[str, int] | None = None,
    timeout: float = 2.0, cafile: str | None = None, server_hostname: str | None = None,
) -> TurnProbe:
    """A TURN client's first steps from inside ns_name: Allocate (with the 401 nonce dance),
    then, given a peer, CreatePermission, Send and wait for the peer's echo as Data.

    Our own client rather than turnutils_uclient: that takes 3-5 s per successful run and
    hangs when the server is unreachable, while this answers in milliseconds or `timeout`.
    """
    port = port if port is not None else (443 if transport == "tls" else 3478)
    probe = TurnProbe(transport)
    try:
        channel = await StunChannel.open(ns_name, host, port, transport, timeout, cafile,
                                         server_hostname)
    except (OSError, TimeoutError, ssl.SSLError) as error:
        probe.error = f"connect: {error!r}"
        return probe
    udp = struct.pack("!B3x", 17)
    try:
        first = await channel.request(STUN_ALLOCATE, [(ATTR_TRANSPORT, udp)], timeout=timeout)
        realm, nonce = first.get(ATTR_REALM), first.get(ATTR_NONCE)
        if realm is None or nonce is None:
            probe.error = f"allocate without credentials: {first.error or 'no realm/nonce'}"
            return probe
        key = hashlib.md5(f"{username}:{realm.decode()}:{password}".encode()).digest()
        auth = [(ATTR_USERNAME, username.encode()), (ATTR_REALM, realm), (ATTR_NONCE, nonce)]
        answer = await channel.request(STUN_ALLOCATE, [(ATTR_TRANSPORT, udp), *auth], key,
                                       timeout)
        if not answer.is_success:
            probe.error = f"allocate: {answer.error}"
            return probe
        probe.mapped = answer.address(ATTR_MAPPED)
        probe.relayed = answer.address(ATTR_RELAYED)
        if peer is not None:
            permit = await channel.request(STUN_CREATE_PERMISSION,
                                           [(ATTR_PEER, _xor_address(*peer)), *auth], key, timeout)
            if not permit.is_success:
                probe.error = f"create permission: {permit.error}"
                return probe
            payload = b"erv-turn-probe " + os.urandom(8).hex().encode()
            await channel.send(stun_encode(STUN_SEND_INDICATION, os.urandom(12), [
                (ATTR_PEER, _xor_address(*peer)), (ATTR_DATA, payload)]))
            deadline = asyncio.get_running_loop().time() + timeout
            while not probe.echoed:
                remaining = deadline - asyncio.get_running_loop().time()
                data = await channel.indication(max(remaining, 0.001))
                probe.echoed = data.kind == STUN_DATA_INDICATION and data.get(ATTR_DATA) == payload
        probe.ok = True
        with contextlib.suppress(OSError, TimeoutError):
            await channel.request(STUN_REFRESH, [(ATTR_LIFETIME, struct.pack("!I", 0)), *auth],
                                  key, timeout=0.5)
    except TimeoutError:
        probe.error = probe.error or "timeout"
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as error:
        probe.error = f"{error!r}"
    finally:
        await channel.close()
    return probe


# Linux socket options Python 3.11's socket module does not export.
SO_SNDBUFFORCE, SO_RCVBUFFORCE, SO_TIMESTAMPNS = 32, 33, 35
UDP_BUFFER = 8 * 1024 * 1024


@dataclass(frozen=True)
class Datagram:
    data: bytes
    source: tuple[str, int]
    at: float  # kernel receive time, time.time() clock


def udp_socket(ns_name: str, bind: tuple[str, int] | None = None) -> socket.socket:
    """A non-blocking UDP socket in ns_name whose datagrams carry kernel receive timestamps.

    Timing measured by the kernel, not by when this (busy, shared) event loop gets round to
    reading, so one-way delays through the link stay honest on a noisy machine.
    """
    sock = netns_socket(ns_name, socket.AF_INET, socket.SOCK_DGRAM, bind=bind)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    # Room for ~2 s of a 2000 packet/s stream while the test process is descheduled, so a
    # busy machine shows up as delay rather than as loss the link never caused.
    for option in (SO_RCVBUFFORCE, SO_SNDBUFFORCE):
        with contextlib.suppress(PermissionError):
            sock.setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER)
    sock.setblocking(False)
    return sock


def _recv_stamped(sock: socket.socket) -> Datagram:
    data, ancillary, _flags, source = sock.recvmsg(65536, socket.CMSG_SPACE(16))
    at = time.time()
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
            seconds, nanoseconds = struct.unpack("qq", payload[:16])
            at = seconds + nanoseconds / 1e9
    return Datagram(data, source, at)


def _mark_ready(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def recv_datagram(sock: socket.socket) -> Datagram:
    """The next datagram on a `udp_socket`, with its kernel timestamp."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return _recv_stamped(sock)
        except (BlockingIOError, InterruptedError):
            pass
        readable: asyncio.Future[None] = loop.create_future()
        loop.add_reader(sock.fileno(), _mark_ready, readable)
        try:
            await readable
        finally:
            loop.remove_reader(sock.fileno())


class UdpEcho:
    """A UDP echo server on a socket inside a namespace (a TURN peer, a media sink).

    Remembers who sent what and when (kernel timestamps), so tests can see the source
    address after NAT or relay, and one-way delays: senders in this process share the clock.
    """

    def __init__(self, ns_name: str, host: str, port: int = 0) -> None:
        self.sock = udp_socket(ns_name, bind=(host, port))
        self.address: tuple[str, int] = self.sock.getsockname()
        self.received: list[Datagram] = []
        self.echo = True
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> UdpEcho:
        self._task = asyncio.ensure_future(self._serve())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sock.close()

    async def _serve(self) -> None:
        while True:
            try:
                got = await recv_datagram(self.sock)
            except OSError:  # e.g. ICMP unreachable reported on the socket
                await asyncio.sleep(0.01)
                continue
            self.received.append(got)
            if self.echo:
                with contextlib.suppress(OSError):
                    self.sock.sendto(got.data, got.source)


# --- the NAT's firewall -------------------------------------------------------------------


def _mode_rules(mode: FirewallMode) -> tuple[list[str], list[str]]:
    """iptables rules for ERV-OUT (caller -> public) and ERV-IN (public -> caller).

    Forbidden kinds of traffic are dropped per packet in both directions whatever their
    conntrack state, so switching mode cuts an established flow at once (no conntrack
    flush needed); ERV-IN then accepts only ESTABLISHED,RELATED (replies), so nothing from
    the public side can open a flow to the caller, as behind a real NAT. Each DROP has a
    comment, which `Firewall.drops` reads back as a counter.
    """
    turn = f"-d {TURN_IP} -p udp --dport 3478"
    out: dict[FirewallMode, list[str]] = {
        "open": ["-j ACCEPT"],
        "udp_turn_only": [
            f"{turn} -j ACCEPT", _drop("-p udp", "out-udp"), "-j ACCEPT",
        ],
        "no_udp": [_drop("-p udp", "out-udp"), "-j ACCEPT"],
        "tcp443_only": [
            "-p tcp --dport 443 -j ACCEPT", _drop("-p udp", "out-udp"),
            _drop("-p tcp", "out-tcp"), _drop("", "out-other"),
        ],
        "blocked": [_drop("-p udp", "out-udp"), _drop("-p tcp", "out-tcp"),
                    _drop("", "out-other")],
    }
    inbound: dict[FirewallMode, list[str]] = {
        "open": [],
        "udp_turn_only": [_drop(f"-p udp ! -s {TURN_IP}", "in-udp"),
                          _drop("-p udp ! --sport 3478", "in-udp")],
        "no_udp": [_drop("-p udp", "in-udp")],
        "tcp443_only": [_drop("-p udp", "in-udp"), _drop("-p tcp ! --sport 443", "in-tcp"),
                        _drop("! -p tcp", "in-other")],
        "blocked": [_drop("-p udp", "in-udp"), _drop("-p tcp", "in-tcp"),
                    _drop("", "in-other")],
    }
    established = "-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
    return out[mode], [*inbound[mode], established, _drop("", "in-unsolicited")]


def _drop(match: str, name: str) -> str:
    return f"{match} -m comment --comment {name} -j DROP".strip()


class Firewall:
    """The FORWARD-chain firewall of the nat namespace, switchable between modes at any time."""

    def __init__(self, ns_name: str, inside: str = "in0", public: str = "pub") -> None:
        self.ns_name = ns_name
        self.inside = inside
        self.public = public
        self.mode: FirewallMode = "open"

    def install(self) -> None:
        """The whole ruleset (fresh namespace): MASQUERADE, the dispatch, mode `open`."""
        rules = "\n".join([
            "*nat",
            f"-A POSTROUTING -o {self.public} -j MASQUERADE",
            "COMMIT",
            "*filter",
            ":FORWARD DROP [0:0]",
            ":ERV-OUT - [0:0]",
            ":ERV-IN - [0:0]",
            f"-A FORWARD -i {self.inside} -o {self.public} -j ERV-OUT",
            f"-A FORWARD -i {self.public} -o {self.inside} -j ERV-IN",
            _drop("-A FORWARD", "stray"),
            "COMMIT",
            "",
        ])
        _ns_exec(self.ns_name, ["iptables-restore"], input=rules)
        self.set_mode("open")

    def set_mode(self, mode: FirewallMode) -> None:
        """Atomically replace both mode chains (counters start again from zero)."""
        if mode not in FIREWALL_MODES:
            raise ValueError(f"unknown firewall mode {mode!r}; one of {FIREWALL_MODES}")
        out, inbound = _mode_rules(mode)
        lines = ["*filter", "-F ERV-OUT", "-F ERV-IN"]
        lines += [f"-A ERV-OUT {rule}" for rule in out]
        lines += [f"-A ERV-IN {rule}" for rule in inbound]
        lines += ["COMMIT", ""]
        _ns_exec(self.ns_name, ["iptables-restore", "--noflush"], input="\n".join(lines))
        self.mode = mode

    def drops(self) -> dict[str, int]:
        """Packets dropped per named rule since the last mode switch, e.g. {'out-udp': 12}.

        Keys: out-udp, out-tcp, out-other (caller -> public), in-udp, in-tcp, in-other,
        in-unsolicited (public -> caller) and stray; a key is absent if the mode has no such
        rule, so read with `.get(name, 0)`.
        """
        saved = _ns_exec(self.ns_name, ["iptables-save", "-c", "-t", "filter"]).stdout
        counts: dict[str, int] = {}
        for line in saved.splitlines():
            match = re.match(r"\[(\d+):\d+\] -A \S+ .*--comment \"?([\w-]+)\"? -j DROP", line)
            if match:
                counts[match[2]] = counts.get(match[2], 0) + int(match[1])
        return counts

    def flush_conntrack(self) -> None:
        """Forget every NAT mapping and tracked flow (as a NAT box reboot or timeout would).

        Done over ctnetlink directly (one IPCTNL_MSG_CT_DELETE without attributes flushes the
        table), because the `conntrack` tool is not installed. Not needed for mode switches.
        """
        nfnl_ctnetlink, ct_delete = 1, 2
        message = struct.pack("!BBH", socket.AF_INET, 0, 0)  # nfgenmsg, res_id big-endian
        header = struct.pack("=IHHII", 16 + len(message), (nfnl_ctnetlink << 8) | ct_delete,
                             0x1 | 0x4, 1, 0)  # NLM_F_REQUEST | NLM_F_ACK
        sock = netns_socket(self.ns_name, socket.AF_NETLINK, socket.SOCK_RAW, 12)
        with sock:
            sock.settimeout(2.0)
            sock.send(header + message)
            reply = sock.recv(4096)
        kind = struct.unpack("=H", reply[4:6])[0]
        code = struct.unpack("=i", reply[16:20])[0] if kind == 2 else 0  # NLMSG_ERROR
        if code not in (0, -errno.ENOENT):
            raise OSError(-code, f"conntrack flush: {os.strerror(-code)}")

    def conntrack_entries(self) -> list[str]:
        """The nat namespace's tracked flows, one /proc/net/nf_conntrack line each."""
        text = _ns_exec(self.ns_name, ["cat", "/proc/net/nf_conntrack"]).stdout
        return [line for line in text.splitlines() if line.strip()]


# --- the link emulator ----------------------------------------------------------------------


class LinkEmulator:
    """The tests/field/linkemu.py process in the link namespace, and a client for its socket."""

    def __init__(self, ns_name: str, control: Path) -> None:
        self.ns_name = ns_name
        self.control = control
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = control.with_suffix(".log")

    def start(self, seed: int | None = None, timeout: float = 10.0) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "tests.field.linkemu", "--control", str(self.control),
               "--parent", str(os.getpid())]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.ns_name, *cmd], cwd=REPO,
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LabUnavailable(f"link emulator exited: {self.log_path.read_text()}")
            with contextlib.suppress(OSError):
                self.request({"cmd": "ping"})
                return self.process
            time.sleep(0.05)
        raise LabUnavailable(f"link emulator did not answer on {self.control}")

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5.0)
            sock.connect(str(self.control))
            sock.sendall(json.dumps(message).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        answer: dict[str, Any] = json.loads(data)
        if not answer.get("ok"):
            raise ValueError(f"link emulator refused {message}: {answer.get('error')}")
        return answer

    def shape(self, up: Impairment | None = None, down: Impairment | None = None) -> None:
        self.request({"cmd": "shape", "up": _impairment_json(up), "down": _impairment_json(down)})

    def blackout(self, on: bool = True) -> None:
        self.request({"cmd": "blackout", "on": on})

    def counters(self) -> dict[str, dict[str, Any]]:
        answer = self.request({"cmd": "counters"})
        return {"up": answer["up"], "down": answer["down"]}

    def reset_counters(self) -> None:
        self.request({"cmd": "reset_counters"})


def _impairment_json(impairment: Impairment | None) -> dict[str, float] | None:
    return None if impairment is None else asdict(impairment)


# --- running things in namespaces -----------------------------------------------------------


def _ns_exec(
    ns_name: str, cmd: Sequence[str], *, input: str | None = None, check: bool = True,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["ip", "netns", "exec", ns_name, *cmd], input=input, capture_output=True, text=True,
        timeout=timeout, check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"in {ns_name}: {' '.join(cmd)} failed ({result.returncode}): "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    return result


def _ip_batch(ns_name: str, lines: Iterable[str]) -> None:
    """Several `ip` commands in one process (`ip -n NS -batch -`), failing on the first error."""
    script = "\n".join(lines) + "\n"
    result = subprocess.run(["ip", "-n", ns_name, "-batch", "-"], input=script,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ip -n {ns_name} -batch failed: {result.stderr.strip()}\n{script}")


def _pid_alive(pid: int) -> bool:
    """Whether pid runs (a zombie does not: it is only waiting for its parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _stop_process(process: subprocess.Popen[Any], grace: float = 3.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait(grace)


def _kill_netns_pids(ns_name: str, grace: float = 2.0) -> None:
    """Terminate, then kill, every process still inside ns_name (they keep it alive)."""

    def pids() -> list[int]:
        result = subprocess.run(["ip", "netns", "pids", ns_name], capture_output=True,
                                text=True, check=False)
        return [int(word) for word in result.stdout.split() if word.isdigit()]

    remaining = pids()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in remaining:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while remaining and time.monotonic() < deadline:
            time.sleep(0.05)
            remaining = [pid for pid in remaining if _pid_alive(pid)]
        if not remaining:
            return
        remaining = pids()


def _delete_netns(ns_name: str) -> None:
    _kill_netns_pids(ns_name)
    subprocess.run(["ip", "netns", "del", ns_name], capture_output=True, check=False)


def sweep_leftovers() -> list[str]:
    """Delete namespaces and temp dirs of lab runs whose owning process no longer exists."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                             check=False).stdout
    removed = []
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        match = NAME_PATTERN.match(name)
        if match and int(match[1]) != os.getpid() and not _pid_alive(int(match[1])):
            _delete_netns(name)
            removed.append(name)
    for path in Path(tempfile.gettempdir()).glob(f"{PREFIX}-*-*"):
        match = re.match(rf"{PREFIX}-(\d+)-", path.name)
        if match and int(match[1]) != os.getpid() and not _pid_alive(int(match[1])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed


def lab_problems() -> list[str]:
    """Why this machine cannot run the lab (empty if it can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not running as root (network namespaces, iptables and TUN need it)")
    for tool in ("ip", "iptables-restore", "iptables-save"):
        if shutil.which(tool) is None:
            problems.append(f"`{tool}` not found (apt-get install iproute2 iptables)")
    if not os.path.exists("/dev/net/tun"):
        problems.append("/dev/net/tun missing (the link emulator needs TUN)")
    if not problems and subprocess.run(["ip", "netns", "list"], capture_output=True,
                                       check=False).returncode != 0:
        problems.append("`ip netns` does not work here")
    return problems


# --- the lab ---------------------------------------------------------------------------------


_instances = itertools.count()


class NetLab:
    """The whole topology; `start()`/`stop()` are idempotent and `stop()` leaves nothing.

    The emulator is always in the caller's eth0 path (pass-through by default), the firewall
    starts `open` and the caller starts on eth0 (the `nat` network, "Wi-Fi").
    emulator_seed makes loss and jitter repeatable.
    """

    def __init__(self, emulator_seed: int | None = None) -> None:
        self.emulator_seed = emulator_seed
        self.index = next(_instances)
        self.tmp: Path | None = None
        self.link: LinkEmulator | None = None
        self.firewall: Firewall | None = None
        self.network: Network = "nat"
        self.processes: list[subprocess.Popen[Any]] = []
        self.started = False

    def __repr__(self) -> str:
        state = "started" if self.started else "stopped"
        return f"<NetLab {self.ns('caller').removesuffix('-caller')}-* {state}>"

    def ns(self, role: str) -> str:
        """The real namespace name of a role: caller, link, nat, nat2 or ctl."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {ROLES}")
        return f"{PREFIX}-{os.getpid()}-{self.index}-{role}"

    # lifecycle

    def start(self) -> NetLab:
        if self.started:
            return self
        problems = lab_problems()
        if problems:
            raise LabUnavailable("; ".join(problems))
        sweep_leftovers()
        self.started = True
        atexit.register(self.stop)
        try:
            self.tmp = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{os.getpid()}-{self.index}-"))
            self._build()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill what the lab started (by pid), then anything left in its namespaces; delete."""
        if not self.started:
            return
        self.started = False
        atexit.unregister(self.stop)
        for process in reversed(self.processes):
            _stop_process(process)
        self.processes.clear()
        for role in ROLES:
            _delete_netns(self.ns(role))
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        self.link = None
        self.firewall = None

    def __enter__(self) -> NetLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _build(self) -> None:
        ns = self.ns
        for role in ROLES:
            subprocess.run(["ip", "netns", "add", ns(role)], check=True, capture_output=True)
        # veth pairs are created directly inside the namespaces: no name ever appears in the
        # root namespace, so concurrent runs cannot collide and nothing can route off-box.
        _ip_batch(ns("caller"), [
            f"link add eth0 type veth peer name lk-c netns {ns('link')}",
            f"link add eth1 type veth peer name in0 netns {ns('nat2')}",
        ])
        _ip_batch(ns("link"), [f"link add lk-n type veth peer name in0 netns {ns('nat')}"])
        _ip_batch(ns("ctl"), [
            f"link add ct-nat type veth peer name pub netns {ns('nat')}",
            f"link add ct-nat2 type veth peer name pub netns {ns('nat2')}",
        ])
        sysctl = {
            "caller": ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"],
            "link": ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
                     "net.ipv4.conf.default.rp_filter=0", "net.ipv6.conf.all.disable_ipv6=1",
                     "net.ipv6.conf.default.disable_ipv6=1"],
            "nat": ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1"],
            "nat2": ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.disable_ipv6=1",
                     "net.ipv6.conf.default.disable_ipv6=1"],
            "ctl": ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"],
        }
        for role, settings in sysctl.items():
            _ns_exec(ns(role), ["sysctl", "-q", "-w", *settings])
        _ip_batch(ns("caller"), [
            "link set lo up", "link set eth0 up", "link set eth1 up",
            f"addr add {CALLER_WIFI}/24 dev eth0",
            f"route add default via {LINK_CALLER_SIDE} dev eth0",
        ])
        _ip_batch(ns("nat"), [
            "link set lo up", "link set in0 up", "link set pub up",
            f"addr add {NAT_INSIDE}/24 dev in0", f"addr add {NAT_PUBLIC}/24 dev pub",
            f"route add 10.77.1.0/24 via {LINK_NAT_SIDE} dev in0",
        ])
        _ip_batch(ns("nat2"), [
            "link set lo up", "link set in0 up", "link set pub up",
            f"addr add {NAT2_INSIDE}/24 dev in0", f"addr add {NAT2_PUBLIC}/24 dev pub",
        ])
        _ip_batch(ns("ctl"), [
            "link set lo up", "link add br0 type bridge", "link set br0 type bridge stp_state 0",
            "link set ct-nat master br0", "link set ct-nat2 master br0",
            "link set ct-nat up", "link set ct-nat2 up", "link set br0 up",
            f"addr add {SERVICE_IP}/24 dev br0", f"addr add {TURN_IP}/24 dev br0",
        ])
        _ip_batch(ns("link"), [
            "tuntap add dev tun-up mode tun", "tuntap add dev tun-dn mode tun",
            "link set lo up", "link set lk-c up", "link set lk-n up",
            f"addr add {LINK_CALLER_SIDE}/24 dev lk-c", f"addr add {LINK_NAT_SIDE}/24 dev lk-n",
            f"route add default via {NAT_INSIDE} dev lk-n",
        ])
        _ns_exec(ns("link"), ["sysctl", "-q", "-w", "net.ipv4.conf.tun-up.rp_filter=0",
                              "net.ipv4.conf.tun-dn.rp_filter=0"])
        assert self.tmp is not None
        self.link = LinkEmulator(ns("link"), self.tmp / "linkemu.sock")
        self.processes.append(self.link.start(self.emulator_seed))
        # Only once the emulator holds the TUNs (carrier up) do packets get steered into them.
        # A long TUN queue: a descheduled emulator then delays packets instead of the kernel
        # dropping them where the emulator's counters cannot see it.
        _ip_batch(ns("link"), [
            "link set tun-up txqueuelen 10000", "link set tun-dn txqueuelen 10000",
            "link set tun-up up", "link set tun-dn up",
            "route add default dev tun-up table 100", "route add default dev tun-dn table 101",
            "rule add iif lk-c lookup 100 pref 100", "rule add iif lk-n lookup 101 pref 101",
        ])
        self.firewall = Firewall(ns("nat"))
        self.firewall.install()
        _ns_exec(ns("nat2"), ["iptables-restore"], input="\n".join([
            "*nat", "-A POSTROUTING -o pub -j MASQUERADE", "COMMIT", "",
        ]))
        self.network = "nat"

    # commands in namespaces

    def run(
        self, role: str, *cmd: str, check: bool = False, timeout: float = 30.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run cmd inside a role's namespace, capturing text output."""
        return _ns_exec(self.ns(role), cmd, input=input, check=check, timeout=timeout)

    async def arun(
        self, role: str, *cmd: str, timeout: float = 30.0,
    ) -> subprocess.CompletedProcess[str]:
        """`run` without blocking the event loop (for when the loop must keep serving)."""
        args = ["ip", "netns", "exec", self.ns(role), *cmd]
        process = await asyncio.create_subprocess_exec(
            *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            out, err = await process.communicate()
        assert process.returncode is not None
        return subprocess.CompletedProcess(args, process.returncode, out.decode(errors="replace"),
                                           err.decode(errors="replace"))

    def popen(self, role: str, *cmd: str, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start cmd inside a role's namespace; `stop()` kills it by pid if it is still up."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        process: subprocess.Popen[Any] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(role), *cmd], **kwargs,
        )
        self.processes.append(process)
        return process

    def pids(self, role: str) -> list[int]:
        """Processes inside a role's namespace (e.g. to see a browser has really gone)."""
        listing = subprocess.run(["ip", "netns", "pids", self.ns(role)], capture_output=True,
                                 text=True, check=False).stdout
        return [int(word) for word in listing.split() if word.isdigit()]

    def listen(self, role: str, host: str, port: int = 0) -> socket.socket:
        """`listening_socket` in a role's namespace."""
        return listening_socket(self.ns(role), host, port)

    def chromium(self, role: str = "caller", chromium: str = "/usr/bin/chromium") -> str:
        """A Chromium wrapper that starts it in a role's namespace (see chromium_in_ns)."""
        assert self.tmp is not None, "lab not started"
        return chromium_in_ns(self.ns(role), self.tmp / f"chromium-{role}", chromium)

    # knobs

    def _need(self) -> tuple[LinkEmulator, Firewall]:
        if self.link is None or self.firewall is None:
            raise RuntimeError("lab not started")
        return self.link, self.firewall

    def set_firewall(self, mode: FirewallMode) -> None:
        self._need()[1].set_mode(mode)

    def firewall_drops(self) -> dict[str, int]:
        return self._need()[1].drops()

    def flush_conntrack(self) -> None:
        self._need()[1].flush_conntrack()

    def conntrack_entries(self) -> list[str]:
        return self._need()[1].conntrack_entries()

    def shape(self, up: Impairment | None = None, down: Impairment | None = None) -> None:
        """Set both directions of the caller's link (None = pass-through)."""
        self._need()[0].shape(up, down)

    def blackout(self, on: bool = True) -> None:
        self._need()[0].blackout(on)

    def link_counters(self) -> dict[str, dict[str, Any]]:
        return self._need()[0].counters()

    def reset_link_counters(self) -> None:
        self._need()[0].reset_counters()

    def switch_caller_network(self, network: Network) -> None:
        """Move the caller between eth0 (`nat`, "Wi-Fi") and eth1 (`nat2`, "4G").

        The old interface loses its address (and so its routes) as when a phone leaves Wi-Fi;
        sockets bound to it start failing and the browser sees a network change.
        """
        if network == self.network:
            return
        caller = self.ns("caller")
        if network == "nat2":
            _ip_batch(caller, [
                "addr flush dev eth0", f"addr add {CALLER_4G}/24 dev eth1",
                f"route replace default via {NAT2_INSIDE} dev eth1",
            ])
        elif network == "nat":
            _ip_batch(caller, [
                "addr flush dev eth1", f"addr add {CALLER_WIFI}/24 dev eth0",
                f"route replace default via {LINK_CALLER_SIDE} dev eth0",
            ])
        else:
            raise ValueError(f"unknown network {network!r}: 'nat' or 'nat2'")
        self.network = network

    def reset(self) -> None:
        """Back to the starting state: firewall open, link clean, caller on eth0."""
        link, firewall = self._need()
        if link.process is not None and link.process.poll() is not None:
            raise RuntimeError(f"link emulator died: {link.log_path.read_text()}")
        if firewall.mode != "open":
            firewall.set_mode("open")
        link.shape(None, None)
        link.blackout(False)
        self.switch_caller_network("nat")
        link.reset_counters()


# --- reaching namespaced ports from the root namespace ---------------------------------------


class PortBridge:
    """127.0.0.1:<free port> here, forwarded to host:port inside a namespace.

    For things that only listen on a namespace's loopback (a browser's debugging port in the
    caller namespace): tools in the test process connect to `bridge.port` as usual.
    """

    def __init__(self, ns_name: str, host: str, port: int) -> None:
        self.ns_name = ns_name
        self.host = host
        self.target_port = port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> PortBridge:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        """Close the listener and every forwarded connection, then let the handlers finish
        (closing rather than cancelling them: asyncio logs cancelled stream handlers)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2.0)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> PortBridge:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        self._writers.add(writer)
        try:
            far_reader, far_writer = await open_connection_in(self.ns_name, self.host,
                                                              self.target_port)
        except (OSError, TimeoutError):
            writer.close()
            self._writers.discard(writer)
            return
        self._writers.add(far_writer)
        try:
            await asyncio.gather(_pump(reader, far_writer), _pump(far_reader, writer))
        finally:
            for each in (writer, far_writer):
                each.close()
                self._writers.discard(each)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close; a reset or a closed far side just ends the copy."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


# --- Chromium in a namespace -----------------------------------------------------------------


def chromium_in_ns(ns_name: str, directory: Path | None = None,
                   chromium: str = "/usr/bin/chromium") -> str:
    """An executable wrapper that runs Chromium inside ns_name, for Playwright's executable_path.

    `ip netns exec` execs in place (same pid, open fds kept), so Playwright still owns the
    process and its --remote-debugging-pipe on fds 3 and 4. Without a directory the wrapper
    goes to a temp dir removed at exit (or by the next run's sweep if this one is killed).
    """
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{os.getpid()}-chromium-"))
        atexit.register(shutil.rmtree, directory, True)
    directory.mkdir(parents=True, exist_ok=True)
    wrapper = directory / "chromium"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {ns_name} {chromium} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


# --- coturn ----------------------------------------------------------------------------------


def make_test_certificate(directory: Path, ip: str, dns: str) -> tuple[Path, Path]:
    """A self-signed certificate and key (PEM) for ip and dns, for coturn's TLS listener."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(ip)), x509.DNSName(dns)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "turn-cert.pem", directory / "turn-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


class Turn:
    """Debian's coturn in the ctl namespace on 198.18.0.3: UDP/TCP 3478 and TLS 443.

    Credentials are the service's own ERV_TURN_SECRET scheme (server/ice.py): coturn's
    `use-auth-secret` REST mode checks HMAC-SHA1(secret, "<expiry>:<id>") and the expiry.
    """

    def __init__(self, lab: NetLab, secret: str, realm: str = "erv.test",
                 binary: str = "/usr/bin/turnserver") -> None:
        self.lab = lab
        self.secret = secret
        self.realm = realm
        self.binary = binary
        self.process: subprocess.Popen[Any] | None = None
        assert lab.tmp is not None, "lab not started"
        self.directory = lab.tmp / "turn"
        self.log_path = self.directory / "turn.log"

    def start(self, timeout: float = 15.0) -> Turn:
        if self.process is not None:
            return self
        if not Path(self.binary).exists():
            raise LabUnavailable(f"{self.binary} missing: apt-get install coturn")
        self.directory.mkdir(parents=True, exist_ok=True)
        cert, key = make_test_certificate(self.directory, TURN_IP, "turn.erv.test")
        args = [
            self.binary, "-n",
            "--listening-ip", TURN_IP, "--relay-ip", TURN_IP,
            "--listening-port", "3478", "--tls-listening-port", "443",
            "--use-auth-secret", "--static-auth-secret", self.secret, "--realm", self.realm,
            "--cert", str(cert), "--pkey", str(key),
            "--no-cli", "--no-multicast-peers", "--no-rfc5780",
            # The control room's address is in 198.18.0.0/15 (benchmarking), which hardened
            # coturn configs deny; Debian's 4.6.1 does not by default, but say it explicitly.
            "--allowed-peer-ip", "198.18.0.0-198.18.0.255",
            "--min-port", "49152", "--max-port", "65535",
            "--db", str(self.directory / "turndb"),
            "--pidfile", str(self.directory / "turn.pid"),
            "--log-file", str(self.log_path), "--simple-log", "--no-stdout-log", "--verbose",
        ]
        with open(self.directory / "turn.stdout", "wb") as out:
            self.process = self.lab.popen("ctl", *args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        pending = {"tcp/3478", "tcp/443", "udp/3478"}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LabUnavailable(f"turnserver exited ({self.process.returncode}): {self.log()}")
            for listener in sorted(pending):
                if self._answers(listener):
                    pending.discard(listener)
            if not pending:
                return self
            time.sleep(0.1)
        raise LabUnavailable(f"turnserver did not listen on {sorted(pending)}: {self.log()}")

    def _answers(self, listener: str) -> bool:
        """Whether coturn accepts TCP on a port, or answers a STUN Binding over UDP."""
        transport, port = listener.split("/")
        ctl = self.lab.ns("ctl")
        if transport == "tcp":
            try:
                connected_socket(ctl, TURN_IP, int(port), timeout=0.5).close()
            except OSError:
                return False
            return True
        txid = os.urandom(12)
        with netns_socket(ctl, socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.3)
            try:
                sock.sendto(stun_encode(STUN_BINDING, txid, []), (TURN_IP, int(port)))
                answer = stun_decode(sock.recv(2048))
            except OSError:
                return False
        return answer is not None and answer.txid == txid and answer.is_success

    def stop(self) -> None:
        if self.process is not None:
            _stop_process(self.process)
            with contextlib.suppress(ValueError):
                self.lab.processes.remove(self.process)
            self.process = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return "(no log)"

    def urls(self) -> list[str]:
        return [
            f"turn:{TURN_IP}:3478?transport=udp",
            f"turn:{TURN_IP}:3478?transport=tcp",
            f"turns:{TURN_IP}:443?transport=tcp",
        ]

    def credential(self, participant: str = "lab", ttl: int = 600) -> tuple[str, str]:
        """(username, password) as the service would mint them for participant."""
        return turn_credential(self.secret, participant, ttl)

    def ice_servers(self, participant: str = "lab", ttl: int = 600) -> list[dict[str, Any]]:
        username, credential = self.credential(participant, ttl)
        return [{"urls": self.urls(), "username": username, "credential": credential}]
