"""HTTP routes for evidence: the handler's snapshots, the caller's uploads, and reading them.

`POST /api/sessions/{id}/snapshots` (the session's handler) and `POST /j/upload` (the caller,
`Authorization: Bearer <participant credential>`, cookieless so CSRF-exempt) take the raw
file as the body; both answer `{id, sha256, size, content_type}`. The body is read in chunks
and reading stops at the size limit (413, nothing stored); content that is not an accepted
kind is refused 415. `GET /api/sessions/{id}/evidence/{evidence id}` (supervisor, auditor,
the session's handler) notes a `record_read` on the record first, then sends the file.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from server import keys
from server.accounts import StaffRole
from server.auth import csrf_exempt, current_staff, require_role
from server.evidence import (
    EvidenceDamaged,
    EvidenceNotFound,
    EvidenceStore,
    EvidenceTooLarge,
    UnsupportedEvidence,
)
from server.invites import LinkRefused
from server.record import SessionShredded

log = logging.getLogger("erv.evidence")

EVIDENCE: web.AppKey[EvidenceStore] = web.AppKey("evidence", EvidenceStore)
CHUNK = 64 * 1024
READERS = (StaffRole.HANDLER, StaffRole.SUPERVISOR, StaffRole.AUDITOR)

TOO_LARGE = "This file is too large to send. Try a shorter video or a smaller photo."
UNSUPPORTED = "This kind of file cannot be sent. Photos (JPEG, PNG, WebP) and videos " \
              "(MP4, WebM) can."
NOT_SIGNED_IN = "This link is no longer active, so the file was not sent."


def _error(code: str, message: str, status: int) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to be over `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        return None
    parts: list[bytes] = []
    total = 0
    while chunk := await request.content.read(CHUNK):
        total += len(chunk)
        if total > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


async def _store(request: web.Request, session_id: str, kind: str,
                 by: dict[str, Any]) -> web.Response:
    store = request.app[EVIDENCE]
    data = await _read_limited(request, store.max_bytes)
    if data is None:
        return _error("too_large", TOO_LARGE, 413)
    try:
        evidence = await store.add(session_id, data, kind, by)
    except EvidenceTooLarge:
        return _error("too_large", TOO_LARGE, 413)
    except UnsupportedEvidence:
        return _error("unsupported_type", UNSUPPORTED, 415)
    except SessionShredded:
        return _error("purged", "This session was purged; nothing can be added.", 410)
    log.info("evidence %s (%s, %s, %d bytes) added to session %s", evidence.id, kind,
             evidence.content_type, evidence.size, session_id)
    return web.json_response(evidence.to_json(), status=201)


@require_role(StaffRole.HANDLER)
async def add_snapshot(request: web.Request) -> web.Response:
    session = current_staff(request)
    assert session is not None
    staff = session.staff
    video = await request.app[keys.ROOM].own_session(staff, request.match_info["session_id"])
    return await _store(request, video.id, "snapshot", {"by": staff.id, "role": "handler"})


@csrf_exempt  # bearer-authenticated and cookieless: no ambient credential to forge
async def add_upload(request: web.Request) -> web.Response:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _error("unauthorized", NOT_SIGNED_IN, 401)
    try:
        credential = await request.app[keys.ROOM].invites.check_credential(token.strip())
    except LinkRefused:
        return _error("unauthorized", NOT_SIGNED_IN, 401)
    return await _store(request, credential.session_id, "upload", {"role": credential.role})


@require_role(*READERS)
async def get_evidence(request: web.Request) -> web.StreamResponse:
    session = current_staff(request)
    assert session is not None
    staff = session.staff
    room = request.app[keys.ROOM]
    # Handlers see only their own sessions; supervisors and auditors see all.
    video = await room.session_for(staff, request.match_info["session_id"])
    evidence_id = request.match_info["evidence_id"]
    store = request.app[EVIDENCE]
    try:
        store.path(video.id, evidence_id)  # a malformed id is refused before the record
        await request.app[keys.RECORD].append(
            video.id, "record_read", {"by": staff.id, "via": "evidence", "evidence": evidence_id}
        )
        evidence, data = await store.read(video.id, evidence_id)
    except EvidenceNotFound:
        return _error("not_found", "No such evidence.", 404)
    except SessionShredded:
        log.info("evidence %s of session %s requested by staff %d: purged", evidence_id,
                 video.id, staff.id)
        return _error("purged", "This session was purged; its evidence can no longer be "
                      "opened.", 410)
    except EvidenceDamaged:
        log.exception("evidence %s of session %s is damaged", evidence_id, video.id)
        return _error("damaged", "This file does not match its record and cannot be shown.",
                      500)
    log.info("evidence %s of session %s read by staff %d", evidence_id, video.id, staff.id)
    return web.Response(body=data, content_type=evidence.content_type, headers={
        "Content-Disposition": f'attachment; filename="{evidence.filename}"',
        "Cache-Control": "no-store",
    })


async def _evidence_store(app: web.Application) -> AsyncIterator[None]:
    """Runs after the app's services are up (it needs the case record)."""
    config = app[keys.CONFIG]
    app[EVIDENCE] = EvidenceStore(config.data_dir, app[keys.RECORD], config.evidence_max_bytes)
    yield


def add_routes(app: web.Application) -> None:
    app.cleanup_ctx.append(_evidence_store)
    app.router.add_post("/api/sessions/{session_id}/snapshots", add_snapshot)
    app.router.add_post("/j/upload", add_upload)
    app.router.add_get("/api/sessions/{session_id}/evidence/{evidence_id}", get_evidence)
