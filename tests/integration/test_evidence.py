"""Evidence on a real server: a handler's PNG snapshot and a caller's JPEG upload are stored
encrypted (no plaintext, no magic bytes on disk), their SHA-256 is on the case record, and an
auditor downloads them byte-identical; content is judged by its bytes (a text file sent as
image/jpeg is refused 415), the size limit refuses oversize bodies with 413 and nothing on
disk, a missing or wrong caller credential gets 401, and shredding the session makes its
evidence unreadable."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from server import keys
from server.accounts import StaffRole
from server.evidence_routes import EVIDENCE
from server.record import SessionShredded
from tests.support.live import LiveServer, StaffClient, start_server
from tests.support.record import backend_env, run_erv

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + os.urandom(200)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + os.urandom(300)
MAX_BYTES = 4096


async def post_raw(live: LiveServer, staff: StaffClient | None, path: str, data: bytes,
                   headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    http = staff.http if staff else live.new_http()
    if staff:
        headers = {**headers, "X-CSRF-Token": staff.csrf}
    async with http.post(f"{live.url}{path}", data=data, headers=headers) as response:
        return response.status, dict(await response.json())


async def setup(live: LiveServer) -> tuple[StaffClient, str, str]:
    """A handler's session and the caller's redeemed credential."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session_id = await handler.create_session()
    credential = await live.redeem(live.latest_token())
    return handler, session_id, str(credential["credential"])


def files(live: LiveServer, session_id: str) -> list[Path]:
    folder = live.config.data_dir / "evidence" / session_id
    return sorted(folder.iterdir()) if folder.exists() else []


async def test_snapshot_and_upload_stored_encrypted_and_downloadable(
    backend: dict[str, Any], tmp_path: Path,
) -> None:
    live = await start_server(tmp_path, evidence_max_bytes=MAX_BYTES, **backend)
    try:
        handler, session_id, credential = await setup(live)
        status, snap = await post_raw(live, handler, f"/api/sessions/{session_id}/snapshots",
                                      PNG, {"Content-Type": "image/png"})
        assert status == 201, snap
        assert snap["content_type"] == "image/png" and snap["size"] == len(PNG)
        assert snap["sha256"] == hashlib.sha256(PNG).hexdigest()
        # The caller's phone claims a generic type; the bytes decide.
        status, up = await post_raw(live, None, "/j/upload", JPEG, {
            "Authorization": f"Bearer {credential}",
            "Content-Type": "application/octet-stream"})
        assert status == 201, up
        assert up["content_type"] == "image/jpeg"
        assert up["sha256"] == hashlib.sha256(JPEG).hexdigest()

        stored = files(live, session_id)
        assert [p.name for p in stored] == sorted([f"{snap['id']}.bin", f"{up['id']}.bin"])
        for path in stored:
            blob = path.read_bytes()
            for plain, magic in ((PNG, b"\x89PNG"), (JPEG, b"\xff\xd8\xff")):
                assert plain[:64] not in blob and plain[-64:] not in blob
                assert magic not in blob

        auditor = await live.staff_client("audrey", StaffRole.AUDITOR)
        _, record = await auditor.api("GET", f"/api/sessions/{session_id}/record", expect=200)
        added = {e["body"]["evidence"]: e["body"] for e in record["events"]
                 if e["kind"] == "evidence_added"}
        assert added[snap["id"]]["sha256"] == snap["sha256"]
        assert added[snap["id"]]["kind"] == "snapshot"
        assert added[up["id"]]["sha256"] == up["sha256"]
        assert added[up["id"]]["kind"] == "upload"
        assert added[up["id"]]["role"] == "victim"
        shown = [d["label"] for e in record["events"] if e["kind"] == "evidence_added"
                 for d in e["details"]]
        assert shown and "Key" not in shown  # the file key is not displayed to readers

        other = await live.staff_client("otto", StaffRole.HANDLER)
        async with other.http.get(
            f"{live.url}/api/sessions/{session_id}/evidence/{snap['id']}"
        ) as response:
            assert response.status == 404  # another handler's session is not theirs to read

        for item, plain in ((snap, PNG), (up, JPEG)):
            async with auditor.http.get(
                f"{live.url}/api/sessions/{session_id}/evidence/{item['id']}"
            ) as response:
                assert response.status == 200
                assert response.content_type == item["content_type"]
                assert response.headers["Content-Disposition"].startswith("attachment;")
                assert await response.read() == plain

        _, record = await auditor.api("GET", f"/api/sessions/{session_id}/record", expect=200)
        reads = [e["body"].get("evidence") for e in record["events"]
                 if e["kind"] == "record_read" and e["body"].get("via") == "evidence"]
        assert reads == [snap["id"], up["id"]]
    finally:
        await live.stop()


async def test_renamed_text_file_is_refused(backend: dict[str, Any], tmp_path: Path) -> None:
    live = await start_server(tmp_path, evidence_max_bytes=MAX_BYTES, **backend)
    try:
        handler, session_id, credential = await setup(live)
        text = b"Dear diary, this is not a photo at all.\n" * 4
        status, body = await post_raw(live, None, "/j/upload", text, {
            "Authorization": f"Bearer {credential}", "Content-Type": "image/jpeg"})
        assert status == 415 and body["error"] == "unsupported_type", body
        status, body = await post_raw(live, handler, f"/api/sessions/{session_id}/snapshots",
                                      text, {"Content-Type": "image/png"})
        assert status == 415, body
        assert files(live, session_id) == []
    finally:
        await live.stop()


async def test_oversize_upload_is_refused_and_nothing_stored(
    backend: dict[str, Any], tmp_path: Path,
) -> None:
    live = await start_server(tmp_path, evidence_max_bytes=MAX_BYTES, **backend)
    try:
        handler, session_id, credential = await setup(live)
        big = JPEG + os.urandom(MAX_BYTES)
        status, body = await post_raw(live, None, "/j/upload", big, {
            "Authorization": f"Bearer {credential}", "Content-Type": "image/jpeg"})
        assert status == 413 and body["error"] == "too_large", body
        assert "too large" in body["message"]
        status, body = await post_raw(live, handler, f"/api/sessions/{session_id}/snapshots",
                                      PNG + os.urandom(MAX_BYTES), {})
        assert status == 413, body
        assert files(live, session_id) == []
        events = await live.app[keys.RECORD].read(session_id)
        assert not [e for e in events if e.header.kind == "evidence_added"]
    finally:
        await live.stop()


async def test_upload_needs_a_valid_credential(backend: dict[str, Any], tmp_path: Path) -> None:
    live = await start_server(tmp_path, evidence_max_bytes=MAX_BYTES, **backend)
    try:
        _, session_id, _ = await setup(live)
        for headers in ({}, {"Authorization": "Bearer not-a-real-credential"},
                        {"Authorization": "Basic dXNlcjpwYXNz"}):
            status, body = await post_raw(live, None, "/j/upload", JPEG, headers)
            assert status == 401 and body["error"] == "unauthorized", (headers, body)
        assert files(live, session_id) == []
    finally:
        await live.stop()


async def test_shredded_session_evidence_is_unreadable(
    backend: dict[str, Any], tmp_path: Path,
) -> None:
    live = await start_server(tmp_path, evidence_max_bytes=MAX_BYTES, **backend)
    try:
        handler, session_id, credential = await setup(live)
        status, up = await post_raw(live, None, "/j/upload", JPEG, {
            "Authorization": f"Bearer {credential}"})
        assert status == 201, up
        store = live.app[EVIDENCE]
        _, data = await store.read(session_id, up["id"])
        assert data == JPEG

        assert await live.app[keys.RECORD].shred(session_id)
        try:
            await store.read(session_id, up["id"])
        except SessionShredded:
            pass
        else:
            raise AssertionError("evidence of a shredded session was still readable")
        auditor = await live.staff_client("audrey", StaffRole.AUDITOR)
        async with auditor.http.get(
            f"{live.url}/api/sessions/{session_id}/evidence/{up['id']}"
        ) as response:
            assert response.status == 410
            assert (await response.json())["error"] == "purged"
        # Nothing in the data folder holds the key: the file alone is noise.
        assert JPEG[:64] not in files(live, session_id)[0].read_bytes()
        status, body = await post_raw(live, handler, f"/api/sessions/{session_id}/snapshots",
                                      PNG, {})
        assert status == 410, body
        assert len(files(live, session_id)) == 1
    finally:
        await live.stop()


async def test_export_carries_the_evidence_and_verifies(
    backend: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The auditor's bundle holds each evidence file decrypted, hashed in the signed manifest,
    and the file keys stay out of it."""
    live = await start_server(tmp_path, evidence_max_bytes=MAX_BYTES, **backend)
    try:
        await live.add_staff("audrey", StaffRole.AUDITOR)
        handler, session_id, credential = await setup(live)
        _, snap = await post_raw(live, handler, f"/api/sessions/{session_id}/snapshots",
                                 PNG, {"Content-Type": "image/png"})
        _, up = await post_raw(live, None, "/j/upload", JPEG,
                               {"Authorization": f"Bearer {credential}"})
    finally:
        await live.stop()
    out = tmp_path / "bundle"
    code, text = await asyncio.to_thread(
        run_erv, live.config.data_dir, monkeypatch, capsys,
        "export", session_id, "--out", str(out), "--by", "audrey", env=backend_env(backend))
    assert code == 0, text
    assert (out / f"evidence-{snap['id']}.png").read_bytes() == PNG
    assert (out / f"evidence-{up['id']}.jpg").read_bytes() == JPEG
    assert '"key"' not in (out / "events.json").read_text()
    code, text = await asyncio.to_thread(run_erv, live.config.data_dir, monkeypatch, capsys,
                                         "verify-export", str(out),
                                         env=backend_env(backend))
    assert code == 0, text
    (out / f"evidence-{up['id']}.jpg").write_bytes(JPEG[:-1] + b"\x00")
    code, text = await asyncio.to_thread(run_erv, live.config.data_dir, monkeypatch, capsys,
                                         "verify-export", str(out),
                                         env=backend_env(backend))
    assert code == 1 and f"evidence-{up['id']}.jpg" in text, text
