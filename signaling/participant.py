"""A participant: one person's place in a session, which outlives any one socket.

Every message the server sends a participant gets the next `seq` and is kept in a bounded
resume buffer, so a client whose socket drops can come back within the resume window, say the
last seq it saw, and get exactly what it missed, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from signaling.protocol import Role, encode

log = logging.getLogger("erv.signaling")

RESUME_BUFFER_MESSAGES = 512
RESUME_BUFFER_CHARS = 256 * 1024  # and at most this much text: SDP is big, memory is not free
SEND_QUEUE_LIMIT = 1024


def with_seq(body: str, seq: int) -> str:
    """The encoded JSON object `body` with `"seq": seq` added as its last member."""
    return f'{body[:-1]},"seq":{seq}}}'


class Socket(Protocol):
    """What a participant needs of a WebSocket (aiohttp's WebSocketResponse fits)."""

    @property
    def closed(self) -> bool: ...

    async def send_str(self, data: str, compress: int | None = None) -> None: ...

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


@dataclass(frozen=True)
class Admission:
    """Who a `hello` let in, as decided by the server's authenticator."""

    session: str  # a session id, or lobby_key(staff_id) for a staff member's own channel
    role: Role
    identity: str  # staff username, or "victim"
    display_name: str
    staff_id: int | None = None
    # The caller's credential, as its digest: which link let this caller in, so ending the
    # credentials of earlier links can find (or keep) the caller in the call.
    credential: str = ""


def lobby_key(staff_id: int) -> str:
    return f"lobby:{staff_id}"


def is_lobby(session: str) -> bool:
    return session.startswith("lobby:")


class Connection:
    """One live socket and the task that writes to it, so a slow reader never blocks others.

    The writer sleeps on a plain future while nothing is queued and, once woken, sends
    everything queued: one wake-up per burst rather than one per frame.
    """

    def __init__(self, socket: Socket, direct: Callable[[str], bool] | None = None) -> None:
        self.socket = socket
        # Writes a frame at once when nothing is queued (see signaling/direct_send.py).
        self._direct = direct
        self._loop = asyncio.get_running_loop()
        self._outbox: deque[str] = deque()
        self._wake: asyncio.Future[None] | None = None
        self.closing = False
        self.close_code = 1000
        self.close_reason = b""
        # Set by the endpoint that reads this socket: it then closes the socket itself, from
        # its own task, once the writer has sent everything queued. (aiohttp's close() from
        # another task while a read is pending drops the connection before the client's
        # close reply, so clients would see 1006 rather than our code.)
        self.on_close: Callable[[], None] | None = None
        self._held: list[str] | None = None
        self._writer = self._loop.create_task(self._write())

    def hold(self) -> None:
        """Queue session messages aside until `release`, so the welcome goes out first."""
        if self._held is None:
            self._held = []

    def release(self, first: list[str]) -> None:
        """Send `first` (the welcome, replayed frames), then whatever arrived meanwhile."""
        held, self._held = self._held or [], None
        for text in (*first, *held):
            self.send(text)

    def send(self, text: str) -> None:
        if self.closing:
            return
        if self._held is not None:
            self._held.append(text)
            return
        outbox = self._outbox
        if not outbox and self._direct is not None and self._direct(text):
            return
        if len(outbox) >= SEND_QUEUE_LIMIT:
            # The client is not reading; drop the socket, it can resume from the buffer.
            log.warning("closing a socket that stopped reading")
            self.close(1013, "slow_consumer")
            return
        outbox.append(text)
        self._poke()

    def _poke(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def close(self, code: int, reason: str) -> None:
        """Send what is queued, then close with `code` and `reason`."""
        if self.closing:
            return
        self.closing = True
        self.close_code, self.close_reason = code, reason.encode()[:120]
        self._poke()
        if self.on_close is not None:
            self.on_close()

    async def _write(self) -> None:
        outbox = self._outbox
        try:
            while True:
                while outbox:
                    if self.socket.closed:
                        return
                    # Taken off only once sent: while a frame waits for a congested socket,
                    # the outbox is not empty, so nothing is written past it.
                    await self.socket.send_str(outbox[0])
                    outbox.popleft()
                if self.closing:
                    if self.on_close is None:
                        await self.socket.close(code=self.close_code, message=self.close_reason)
                    return
                self._wake = self._loop.create_future()
                await self._wake
                self._wake = None
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            return

    async def wait_closed(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer

    def cancel(self) -> None:
        self._writer.cancel()


@dataclass(eq=False)
class Participant:
    admission: Admission
    pid: str = field(default_factory=lambda: secrets.token_hex(8))
    resume_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    seq: int = 0
    # The resume buffer: the texts of the newest frames, oldest first; their seqs run up to
    # `seq` without gaps, so only the texts are kept (plain strings, which the garbage
    # collector never has to walk).
    buffer: deque[str] = field(default_factory=deque)
    buffer_chars: int = 0
    connection: Connection | None = None
    away_since: float | None = None
    expiry: asyncio.TimerHandle | None = None
    joined_at: float = 0.0
    epoch: int = 1  # which attachment of this participant a node holds (RedisHub)

    def __post_init__(self) -> None:
        self._secret_hash = hashlib.sha256(self.resume_secret.encode()).digest()
        # Copied out of the admission (which never changes): read for every message routed.
        self.session: str = self.admission.session
        self.role: Role = self.admission.role

    @property
    def present(self) -> bool:
        return self.connection is not None

    def secret_matches(self, secret: str) -> bool:
        return hmac.compare_digest(self._secret_hash, hashlib.sha256(secret.encode()).digest())

    def deliver(self, message: dict[str, Any]) -> int:
        """Number, buffer and (if connected) send one session message."""
        return self.deliver_encoded(encode(message))

    def deliver_encoded(self, body: str) -> int:
        """`deliver` for a message already encoded (once, for every recipient of it)."""
        self.seq += 1
        text = with_seq(body, self.seq)
        buffer = self.buffer
        buffer.append(text)
        self.buffer_chars += len(text)
        while len(buffer) > RESUME_BUFFER_MESSAGES or (
            self.buffer_chars > RESUME_BUFFER_CHARS and len(buffer) > 1
        ):
            self.buffer_chars -= len(buffer.popleft())
        if self.connection is not None:
            self.connection.send(text)
        return self.seq

    def buffered(self) -> list[tuple[int, str]]:
        """The resume buffer as (seq, frame) pairs, oldest first."""
        first = self.seq - len(self.buffer) + 1
        return list(enumerate(self.buffer, start=first))

    def send_unsequenced(self, message: dict[str, Any]) -> None:
        if self.connection is not None:
            self.connection.send(encode(message))

    def missed_since(self, last_seq: int) -> list[str] | None:
        """The buffered frames after `last_seq`, or None if some were already dropped."""
        if last_seq > self.seq:
            return None
        if last_seq == self.seq:
            return []
        first = self.seq - len(self.buffer) + 1
        if not self.buffer or first > last_seq + 1:
            return None
        return list(self.buffer)[last_seq + 1 - first:]

    def describe(self) -> dict[str, Any]:
        """How peers see this participant."""
        return {
            "pid": self.pid,
            "role": self.role.value,
            "name": self.admission.display_name,
            "state": "present" if self.present else "away",
        }
