"""The Python floor: a minimal aiohttp relay that only forwards.

    python -m bench.floor_relay PORT [--fast]

A client connects to /ws?id=ID and gets {"type":"welcome","pid":ID}. A frame
{"type":"signal","to":PEER,"description":{...}} is parsed, re-addressed and sent to PEER as
{"type":"signal","from":ID,"description":{...}}. Nothing else: no auth, no validation, no
sequence numbers, no resume buffer. With --fast it runs on uvloop with orjson.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

Loads = Callable[[str | bytes], Any]
Dumps = Callable[[Any], str]


def make_app(loads: Loads, dumps: Dumps) -> web.Application:
    sockets: dict[str, web.WebSocketResponse] = {}

    async def relay(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=256 * 1024, compress=False)
        await ws.prepare(request)
        own = request.query.get("id", "")
        if not own:
            await ws.close(code=1008, message=b"id missing")
            return ws
        sockets[own] = ws
        await ws.send_str(dumps({"type": "welcome", "pid": own}))
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                message = loads(msg.data)
                target = sockets.get(message.get("to", ""))
                if message.get("type") != "signal" or target is None:
                    continue
                await target.send_str(dumps({"type": "signal", "from": own,
                                             "description": message.get("description")}))
        finally:
            if sockets.get(own) is ws:
                del sockets[own]
        return ws

    app = web.Application()
    app.router.add_get("/ws", relay)
    app.router.add_get("/", index)
    return app


async def index(request: web.Request) -> web.Response:
    return web.Response(text="floor relay")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--fast", action="store_true", help="uvloop and orjson")
    args = parser.parse_args()
    loads: Loads = json.loads

    def dumps(obj: Any) -> str:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)

    fast_dumps: Dumps = dumps
    if args.fast:
        import orjson
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        loads = orjson.loads

        def fast_dumps(obj: Any) -> str:
            return orjson.dumps(obj).decode()

    web.run_app(make_app(loads, fast_dumps), host="127.0.0.1", port=args.port, print=None,
                access_log=None)


if __name__ == "__main__":
    main()
