"""Writing a text frame to an aiohttp WebSocket at once, without a task switch.

aiohttp's `send_str` is a coroutine, so a socket's writer task has to wake for every frame;
under load that wake-up is a large part of what relaying a message costs. For an uncompressed
server socket, `send_str` does nothing asynchronous unless the transport is congested, so when
it is not, `Connection.send` can write the frame itself with the same aiohttp routine
`send_str` uses. This reaches into aiohttp's writer (`_writer`, `_write_websocket_frame`,
`protocol._paused`); if those are not there (another aiohttp version), `direct_sender` returns
None and every frame goes through the writer task as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

DirectSend = Callable[[str], bool]


def direct_sender(ws: web.WebSocketResponse) -> DirectSend | None:
    """A function that writes one text frame now and returns True, or returns False without
    writing when the frame must wait (transport congested, socket closing)."""
    writer: Any = getattr(ws, "_writer", None)
    write_frame = getattr(writer, "_write_websocket_frame", None)
    protocol = getattr(writer, "protocol", None)
    transport = getattr(writer, "transport", None)
    if write_frame is None or protocol is None or transport is None \
            or getattr(writer, "compress", True) or not hasattr(protocol, "_paused") \
            or not hasattr(writer, "_closing"):
        return None
    text_opcode = int(WSMsgType.TEXT)

    def send(text: str) -> bool:
        if protocol._paused or writer._closing or transport.is_closing():
            return False
        write_frame(text.encode(), text_opcode, 0)
        return True

    return send
