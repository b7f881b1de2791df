"""Still pictures, the fallback ladder's third rung, on a real server and both stores: the
caller's page posts a camera frame (bearer credential, images only, size- and pace-limited),
it is evidence with its hash on the record, the session's staff are told at once on their
sockets (never the caller), and the staff in the call can fetch it; others cannot."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from server import keys
from server.accounts import StaffRole
from server.evidence_routes import LIVE_STILLS
from tests.support.calls import Call, barrier, bring_specialist, open_call
from tests.support.live import LiveServer, StaffClient, start_server

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + os.urandom(3000)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + os.urandom(200)
WEBM = b"\x1a\x45\xdf\xa3" + os.urandom(200)
MAX = 8192


async def post_still(live: LiveServer, credential: str | None, data: bytes,
                     kind: str = "image/jpeg") -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Content-Type": kind}
    if credential is not None:
        headers["Authorization"] = f"Bearer {credential}"
    async with live.new_http().post(f"{live.url}/j/still", data=data, headers=headers) as r:
        return r.status, dict(await r.json()), dict(r.headers)


async def fetch_still(live: LiveServer, staff: StaffClient, session_id: str,
                      evidence_id: str) -> tuple[int, bytes]:
    async with staff.http.get(f"{live.url}/api/sessions/{session_id}/stills/{evidence_id}") as r:
        return r.status, await r.read()


async def server_with(tmp_path: Path, backend: dict[str, Any]) -> LiveServer:
    # A still every 2 s: one sooner than 1 s after the last is refused.
    return await start_server(tmp_path, still_max_bytes=MAX, still_every=2, **backend)


async def test_a_still_is_evidence_shown_live_to_the_staff(
    backend: dict[str, Any], tmp_path: Path,
) -> None:
    live = await server_with(tmp_path, backend)
    try:
        call = await open_call(live, "hannah")
        _, specialist = await bring_specialist(live, call, "sam")
        status, body, _ = await post_still(live, call.credential, JPEG)
        assert status == 201, body
        assert body["sha256"] == hashlib.sha256(JPEG).hexdigest()
        assert body["content_type"] == "image/jpeg" and body["size"] == len(JPEG)
        for staff_socket in (call.handler, specialist):
            still = await staff_socket.expect("still", id=body["id"])
            assert still["sha256"] == body["sha256"] and still["size"] == len(JPEG)
            assert "seq" in still and still["ts"] > 0
        # The caller is not told (their own picture; no staff traffic on their socket).
        await barrier(call.caller)
        assert all(f["type"] != "still" for f in call.caller.received)

        # The handler fetches it, byte for byte; the first look is noted once on the record.
        for _ in range(2):
            status, data = await fetch_still(live, call.staff, call.session_id, body["id"])
            assert status == 200 and data == JPEG
        events = await live.app[keys.RECORD].read(call.session_id)
        added = [e.body for e in events if e.header.kind == "evidence_added"]
        assert [(a["kind"], a["sha256"]) for a in added] == [("still", body["sha256"])]
        reads = [e.body for e in events if e.header.kind == "record_read"
                 and e.body.get("via") == "live_stills"]
        assert len(reads) == 1
        # Nothing of it in the clear on disk.
        stored = (live.config.data_dir / "evidence" / call.session_id).iterdir()
        assert all(JPEG[:64] not in path.read_bytes() for path in stored)
    finally:
        await live.stop()


async def test_stills_from_an_older_session_are_read_from_the_store(
    backend: dict[str, Any], tmp_path: Path,
) -> None:
    """Past the newest few kept in memory (or on another node) the store has it."""
    live = await server_with(tmp_path, backend)
    try:
        call = await open_call(live, "hannah")
        _, first, _ = await post_still(live, call.credential, JPEG)
        live.app[LIVE_STILLS]._stills.clear()  # as a node that never saw it
        status, data = await fetch_still(live, call.staff, call.session_id, first["id"])
        assert status == 200 and data == JPEG
    finally:
        await live.stop()


async def test_a_still_is_refused_clearly_and_nothing_is_kept(
    backend: dict[str, Any], tmp_path: Path,
) -> None:
    live = await server_with(tmp_path, backend)
    try:
        call = await open_call(live, "hannah")
        for credential in (None, "", "not-a-credential"):
            status, body, _ = await post_still(live, credential, JPEG)
            assert status == 401 and body["error"] == "unauthorized"
        status, body, _ = await post_still(live, call.credential, b"not an image at all")
        assert status == 415 and body["error"] == "unsupported_type"
        # A video is evidence elsewhere (an upload), but not a still.
        status, body, _ = await post_still(live, call.credential, WEBM, "video/webm")
        assert status == 415
        status, body, _ = await post_still(live, call.credential, JPEG + b"x" * MAX)
        assert status == 413 and body["error"] == "too_large"
        events = await live.app[keys.RECORD].read(call.session_id)
        assert not [e for e in events if e.header.kind == "evidence_added"]
        status, body, _ = await post_still(live, call.credential, PNG, "image/png")
        assert status == 201, body
        # Faster than half the page's own pace: refused, with when to try again.
        status, body, headers = await post_still(live, call.credential, PNG, "image/png")
        assert status == 429 and body["error"] == "too_soon"
        assert int(headers["Retry-After"]) >= 1
        # An ended call takes no more.
        await call.handler.send({"type": "control", "op": "end"})
        await call.handler.expect_closed()
        status, body, _ = await post_still(live, call.credential, JPEG)
        assert status == 401
    finally:
        await live.stop()


async def test_only_the_staff_in_the_call_fetch_stills(
    backend: dict[str, Any], tmp_path: Path,
) -> None:
    live = await server_with(tmp_path, backend)
    try:
        call: Call = await open_call(live, "hannah")
        _, still, _ = await post_still(live, call.credential, JPEG)
        other = await live.staff_client("harry", StaffRole.HANDLER)
        status, _ = await fetch_still(live, other, call.session_id, still["id"])
        assert status == 404
        # A specialist who was never invited, and one rung who has not accepted.
        sam = await live.staff_client("sam", StaffRole.SPECIALIST)
        status, _ = await fetch_still(live, sam, call.session_id, still["id"])
        assert status == 404
        supervisor = await live.staff_client("sue", StaffRole.SUPERVISOR)
        status, data = await fetch_still(live, supervisor, call.session_id, still["id"])
        assert status == 200 and data == JPEG
        auditor = await live.staff_client("ada", StaffRole.AUDITOR)
        status, _ = await fetch_still(live, auditor, call.session_id, still["id"])
        assert status == 403  # auditors read evidence through the record, not the live call
        for bad in ("../../etc/passwd", "0" * 31, "z" * 32):
            status, _ = await fetch_still(live, call.staff, call.session_id, bad)
            assert status == 404
        # A snapshot is not a still.
        async with call.staff.http.post(
            f"{live.url}/api/sessions/{call.session_id}/snapshots", data=PNG,
            headers={"Content-Type": "image/png", "X-CSRF-Token": call.staff.csrf},
        ) as response:
            snapshot = await response.json()
        status, _ = await fetch_still(live, call.staff, call.session_id, snapshot["id"])
        assert status == 404
    finally:
        await live.stop()
