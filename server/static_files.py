"""Static files (/static/), gzip-compressed once and kept in memory.

The caller may be on a weak mobile network, so every byte of the caller page counts: its
scripts and styles are about 60 KB as written and about 20 KB gzipped. Only these files are
compressed, never pages: pages carry tokens, and compressing secrets next to reflected input
invites BREACH-style guessing.
"""

from __future__ import annotations

import gzip
import mimetypes
from pathlib import Path

from aiohttp import web

from server.path_guard import MESSAGE

TYPES = {".js": "text/javascript", ".css": "text/css", ".json": "application/json",
         ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}
COMPRESSIBLE = frozenset({".js", ".css", ".json", ".svg"})


class StaticFiles:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._cache: dict[Path, tuple[float, bytes, bytes]] = {}

    def _load(self, path: Path) -> tuple[bytes, bytes]:
        mtime = path.stat().st_mtime
        cached = self._cache.get(path)
        if cached is None or cached[0] != mtime:
            raw = path.read_bytes()
            packed = gzip.compress(raw, 9, mtime=0) if path.suffix in COMPRESSIBLE else raw
            cached = (mtime, raw, packed)
            self._cache[path] = cached
        return cached[1], cached[2]

    async def handle(self, request: web.Request) -> web.Response:
        relative = request.match_info["path"]
        try:
            path = (self.root / relative).resolve()
            found = self.root in path.parents and path.is_file()
        except (ValueError, OSError) as exc:
            # A NUL byte, a name too long: server/path_guard.py refuses these before this
            # route; should one get here, it is still the client's mistake, never a 500.
            raise web.HTTPBadRequest(text=MESSAGE) from exc
        if not found:
            raise web.HTTPNotFound()
        raw, packed = self._load(path)
        content_type = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] \
            or "application/octet-stream"
        headers = {"Vary": "Accept-Encoding"}
        body = raw
        if packed is not raw and "gzip" in request.headers.get("Accept-Encoding", ""):
            headers["Content-Encoding"] = "gzip"
            body = packed
        return web.Response(body=body, content_type=content_type, headers=headers)
