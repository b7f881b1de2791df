"""Every connection, before aiohttp sees it: counted per client address and in all at TCP
accept, and closed if its request headers have not all arrived within the header limit.

aiohttp has no deadline for the first request's headers, and asyncio allows a TLS handshake
a minute, so a client that opens connections and sends half a request holds a descriptor
each for as long as it likes; about a thousand of them used up a default systemd unit's
1,024 and every caller's link failed.

The guard accepts connections itself (loop.sock_accept) and only then hands each to the
event loop with TLS (loop.connect_accepted_socket), so it counts at TCP accept, before any
TLS: a client that never finishes its handshake is counted and timed like one that never
finishes its headers, and one over its cap is refused before it costs a handshake. The
deadline runs from accept: the handshake gets the header limit, and the headers what is
left of it. The guard's protocol then sits on the decrypted side, in front of aiohttp's, and
watches for the blank line that ends the first request's headers. After that aiohttp's
keep-alive timeout bounds an idle connection.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

log = logging.getLogger("erv.connections")

END_OF_HEADERS = (b"\r\n\r\n", b"\n\n")  # aiohttp's parser accepts bare LF line ends too
# accept() failing for want of descriptors or memory: wait a moment rather than spin.
OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
ACCEPT_BACKOFF_SECONDS = 0.1


@dataclass
class ConnectionStats:
    """What /metrics shows: connections open now, and those refused or timed out so far."""

    open: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # "per_client" or "total"
    timed_out: int = 0


class ConnectionGuard:
    """One listener's accept loop, its limits, its counts and the connections it holds."""

    def __init__(self, make_handler: Callable[[], asyncio.Protocol], *,
                 header_timeout: float, per_client: int, total: int,
                 ssl_context: ssl.SSLContext | None = None,
                 stats: ConnectionStats | None = None) -> None:
        self.make_handler = make_handler
        self.header_timeout = header_timeout
        self.per_client = per_client  # 0: no cap per address
        self.total = total
        self.ssl_context = ssl_context
        self.stats = stats or ConnectionStats()
        self.by_client: Counter[str] = Counter()
        self.connections: set[GuardedConnection] = set()
        self.opening: set[asyncio.Task[None]] = set()
        self.accepting: asyncio.Task[None] | None = None
        self.sock: socket.socket | None = None

    def listen(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.accepting = asyncio.get_running_loop().create_task(self._accept(sock))

    def close(self) -> None:
        """Stop accepting, and drop connections that have not sent a whole request yet
        (aiohttp closes the others itself)."""
        if self.accepting is not None:
            self.accepting.cancel()
        if self.sock is not None:
            self.sock.close()
        for task in list(self.opening):
            task.cancel()
        for connection in list(self.connections):
            if not connection.headers_seen:
                connection.abort()

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, address = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    log.warning("cannot accept a connection: %s", exc.strerror)
                    await asyncio.sleep(ACCEPT_BACKOFF_SECONDS)
                continue
            client = str(address[0]) if isinstance(address, tuple) and address else "local"
            if not self._admit(client):
                conn.close()
                continue
            task = loop.create_task(self._open(conn, client))
            self.opening.add(task)
            task.add_done_callback(self.opening.discard)

    def _admit(self, client: str) -> bool:
        if self.stats.open >= self.total:
            reason = "total"
        elif self.per_client and self.by_client[client] >= self.per_client:
            reason = "per_client"
        else:
            self.stats.open += 1
            self.by_client[client] += 1
            return True
        self.stats.refused[reason] += 1
        count = self.stats.refused[reason]
        if count in {1, 10, 100} or count % 1000 == 0:
            # The address is not logged (it is personal data); the counts are in /metrics.
            log.warning("refused a connection: %s connection limit reached (%d so far)",
                        "a client's" if reason == "per_client" else "this node's", count)
        return False

    async def _open(self, conn: socket.socket, client: str) -> None:
        loop = asyncio.get_running_loop()
        connection = GuardedConnection(self, client, loop.time() + self.header_timeout)
        self.connections.add(connection)
        try:
            if self.ssl_context is None:
                await loop.connect_accepted_socket(lambda: connection, conn)
            else:
                await loop.connect_accepted_socket(
                    lambda: connection, conn, ssl=self.ssl_context,
                    ssl_handshake_timeout=self.header_timeout)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            # A failed, abandoned or too slow handshake; nothing reached aiohttp. The loop
            # has closed the socket (closing it here too could close a reused descriptor).
            if isinstance(exc, ConnectionAbortedError | TimeoutError) or \
                    loop.time() >= connection.deadline:
                self.stats.timed_out += 1
            connection.release()
        except asyncio.CancelledError:
            connection.release()
            raise

    def release(self, connection: GuardedConnection) -> None:
        if connection in self.connections:
            self.connections.discard(connection)
            self.stats.open -= 1
            self.by_client[connection.client] -= 1
            if self.by_client[connection.client] <= 0:
                del self.by_client[connection.client]


class GuardedConnection(asyncio.Protocol):
    """The decrypted side of one connection, in front of aiohttp's request handler: hands
    everything on, and closes the connection if its headers are late."""

    def __init__(self, guard: ConnectionGuard, client: str, deadline: float) -> None:
        self.guard = guard
        self.client = client
        self.deadline = deadline
        self.transport: asyncio.Transport | None = None
        self.handler: asyncio.Protocol | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.tail = b""
        self.headers_seen = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.timer = asyncio.get_running_loop().call_at(self.deadline, self._headers_too_slow)
        self.handler = self.guard.make_handler()
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.headers_seen:
            seen = self.tail + data
            if any(end in seen for end in END_OF_HEADERS):
                self.headers_seen = True
                self._cancel_timer()
            else:
                self.tail = seen[-3:]
        assert self.handler is not None
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received() if self.handler is not None else None

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.release()
        if self.handler is not None:
            self.handler.connection_lost(exc)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # no TLS close to wait for; connection_lost follows
        else:
            self.release()

    def release(self) -> None:
        self._cancel_timer()
        self.guard.release(self)

    def _headers_too_slow(self) -> None:
        self.timer = None
        if self.headers_seen:
            return
        self.guard.stats.timed_out += 1
        self.abort()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
