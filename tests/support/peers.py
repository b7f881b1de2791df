"""Real aiortc peers that signal through the server's /ws, as the browsers do.

aiortc gathers all its ICE candidates before it finishes setLocalDescription and puts them in
the SDP. To exercise candidate relay the way a browser trickles, these peers strip the
candidate lines from the description and send each one as its own `signal` message, then an
end-of-candidates marker.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
from dataclasses import dataclass, field
from typing import Any

import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import AudioStreamTrack
from aiortc.sdp import candidate_from_sdp, candidate_to_sdp

from tests.support.live import SignalClient

VIDEO_WIDTH = 320
VIDEO_HEIGHT = 240


class TestPatternTrack(VideoStreamTrack):
    """A camera stand-in: frames of a known size whose brightness changes over time."""

    def __init__(self, width: int = VIDEO_WIDTH, height: int = VIDEO_HEIGHT) -> None:
        super().__init__()
        self.width = width
        self.height = height
        self.count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        shade = (self.count * 7) % 256
        for index, plane in enumerate(frame.planes):
            plane.update(bytes([shade if index == 0 else 128]) * plane.buffer_size)
        frame.pts = pts
        frame.time_base = time_base if time_base else fractions.Fraction(1, 90000)
        self.count += 1
        return frame


@dataclass
class FrameCounter:
    """Counts decoded video frames of a given size arriving on a remote track."""

    width: int
    height: int
    frames: int = 0
    other_sizes: int = 0
    enough: asyncio.Event = field(default_factory=asyncio.Event)
    wanted: int = 30

    async def consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(Exception):
            while True:
                frame = await track.recv()
                if frame.width == self.width and frame.height == self.height:
                    self.frames += 1
                    if self.frames >= self.wanted:
                        self.enough.set()
                else:
                    self.other_sizes += 1


def strip_candidates(sdp: str) -> tuple[str, list[dict[str, Any]]]:
    """The SDP without its candidate lines, and those candidates as RTCIceCandidateInit."""
    lines = sdp.split("\r\n")
    kept: list[str] = []
    candidates: list[dict[str, Any]] = []
    mid: str | None = None
    index = -1
    for line in lines:
        if line.startswith("m="):
            index += 1
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:"):]
        if line.startswith("a=candidate:"):
            candidates.append({"candidate": line[2:], "sdpMid": mid, "sdpMLineIndex": index})
            continue
        if line == "a=end-of-candidates":
            continue
        kept.append(line)
    return "\r\n".join(kept), candidates


class MediaPeer:
    """One side of one peer connection, signalling through a SignalClient."""

    def __init__(self, socket: SignalClient, remote_pid: str, ice_servers: list[dict[str, Any]],
                 send_video: bool = False) -> None:
        self.socket = socket
        self.remote = remote_pid
        servers = [RTCIceServer(urls=s["urls"], username=s.get("username"),
                                credential=s.get("credential")) for s in ice_servers]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self.counter = FrameCounter(VIDEO_WIDTH, VIDEO_HEIGHT)
        self.candidates_sent = 0
        self.candidates_received = 0
        self._consumers: list[asyncio.Task[None]] = []
        if send_video:
            self.pc.addTrack(TestPatternTrack())
            self.pc.addTrack(AudioStreamTrack())

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                self._consumers.append(asyncio.ensure_future(self.counter.consume(track)))

    async def _send_local(self) -> None:
        description = self.pc.localDescription
        sdp, candidates = strip_candidates(description.sdp)
        await self.socket.send({"type": "signal", "to": self.remote,
                                "description": {"type": description.type, "sdp": sdp}})
        for candidate in candidates:
            await self.socket.send({"type": "signal", "to": self.remote, "candidate": candidate})
            self.candidates_sent += 1
        await self.socket.send({"type": "signal", "to": self.remote, "candidate": None})

    async def offer(self) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self._send_local()

    async def on_signal(self, message: dict[str, Any]) -> None:
        if "description" in message:
            description = message["description"]
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=description["sdp"], type=description["type"])
            )
            if description["type"] == "offer":
                await self.pc.setLocalDescription(await self.pc.createAnswer())
                await self._send_local()
            return
        candidate = message["candidate"]
        if not candidate or not candidate.get("candidate"):
            await self.pc.addIceCandidate(None)
            return
        parsed = candidate_from_sdp(candidate["candidate"].split(":", 1)[1])
        parsed.sdpMid = candidate["sdpMid"]
        parsed.sdpMLineIndex = candidate["sdpMLineIndex"]
        assert candidate_to_sdp(parsed)  # round-trips: it is a real candidate line
        await self.pc.addIceCandidate(parsed)
        self.candidates_received += 1

    async def close(self) -> None:
        for task in self._consumers:
            task.cancel()
        await self.pc.close()


class Pump:
    """Reads one socket: `signal` frames go to the MediaPeer for their sender, the rest queue."""

    def __init__(self, socket: SignalClient, send_video: bool = False) -> None:
        self.socket = socket
        self.send_video = send_video
        self.peers: dict[str, MediaPeer] = {}
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.task = asyncio.ensure_future(self._run())

    def peer(self, remote: str) -> MediaPeer:
        if remote not in self.peers:
            self.peers[remote] = MediaPeer(self.socket, remote,
                                           self.socket.welcome.get("ice_servers", []),
                                           send_video=self.send_video)
        return self.peers[remote]

    async def _run(self) -> None:
        try:
            while True:
                message = await self.socket.next(timeout=60)
                if message["type"] == "signal":
                    await self.peer(message["from"]).on_signal(message)
                else:
                    if message["type"] == "bye":
                        self.close_reason = message["reason"]
                    await self.inbox.put(message)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self.closed.set()

    async def expect(self, kind: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                message = await self.inbox.get()
                if message["type"] == kind and all(message.get(k) == v
                                                   for k, v in match.items()):
                    return message

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        for peer in self.peers.values():
            await peer.close()
