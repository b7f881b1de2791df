"""HTTP routes for evidence: the handler's snapshots, the caller's uploads, and reading them.

`POST /api/sessions/{id}/snapshots` (the session's handler) and `POST /j/upload` (the caller,
`Authorization: Bearer <participant credential>`, cookieless so CSRF-exempt) take the raw
file as the body; both answer `{id, sha256, size, content_type}`. The body is sealed a chunk
at a time as it arrives and reading stops at the size limit (413 `too_large`, nothing
stored) or the session's quota (413 `quota_exceeded`); content that is not an accepted kind
is refused 415. One sender (a caller's credential, a staff member) has at most
`uploads_per_sender` uploads and stills arriving at once on a node; more get 429 `busy`.
`GET /api/sessions/{id}/evidence/{evidence id}` (supervisor, auditor, the session's handler)
notes a `record_read` on the record first, then sends the file, decrypted a chunk at a time.

Still pictures are the fallback ladder's third rung: when no video path connects (or the
browser has no WebRTC) the caller's page sends a camera frame every `still_every` seconds to
`POST /j/still` (bearer credential, images only, `still_max_bytes`). Each is evidence like a
snapshot, and the session's staff are told at once (a `still` message on their sockets); the
staff in the call fetch it from `GET /api/sessions/{id}/stills/{evidence id}`, whose first
use by each staff member in each session is noted on the record as a read.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from server import keys
from server.accounts import StaffRole
from server.auth import csrf_exempt, current_staff, require_role
from server.evidence import (
    Evidence,
    EvidenceDamaged,
    EvidenceNotFound,
    EvidenceStore,
    EvidenceTooLarge,
    Quota,
    QuotaExceeded,
    UnsupportedEvidence,
)
from server.invites import Credential, LinkRefused, secret_digest
from server.record import SessionShredded
from signaling.protocol import Role

log = logging.getLogger("erv.evidence")

EVIDENCE: web.AppKey[EvidenceStore] = web.AppKey("evidence", EvidenceStore)
CHUNK = 64 * 1024
READERS = (StaffRole.HANDLER, StaffRole.SUPERVISOR, StaffRole.AUDITOR)
STILL_WATCHERS = (StaffRole.HANDLER, StaffRole.SPECIALIST, StaffRole.SUPERVISOR)
STAFF_IN_CALL = (Role.HANDLER, Role.SPECIALIST, Role.OBSERVER)
STILL_TYPES = ("image/jpeg", "image/png", "image/webp")

TOO_LARGE = "This file is too large to send. Try a shorter video or a smaller photo."
UNSUPPORTED = "This kind of file cannot be sent. Photos (JPEG, PNG, WebP) and videos " \
              "(MP4, WebM) can."
NOT_SIGNED_IN = "This link is no longer active, so the file was not sent."
QUOTA = "This call has reached its limit for photos and videos, so this file was not sent. " \
        "The files sent before it are safe."
BUSY = "Another file is still being sent. Wait for it to finish, then send this one."


def _error(code: str, message: str, status: int) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to be over `limit` bytes (stills only: they
    are small, and kept whole for the staff watching)."""
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


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    """The body as it arrives, a chunk at a time: an upload is never held whole."""
    while chunk := await request.content.read(CHUNK):
        yield chunk


class UploadGate:
    """How many uploads each sender (a caller's credential, a staff member) has arriving at
    this node at once; over the limit is refused 429, so one sender cannot fill the node's
    memory, disk bandwidth or sockets with parallel uploads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def enter(self, sender: str) -> bool:
        if self._open.get(sender, 0) >= self.limit:
            return False
        self._open[sender] = self._open.get(sender, 0) + 1
        return True

    def leave(self, sender: str) -> None:
        left = self._open.get(sender, 0) - 1
        if left > 0:
            self._open[sender] = left
        else:
            self._open.pop(sender, None)

    def open_for(self, sender: str) -> int:
        return self._open.get(sender, 0)


UPLOAD_GATE: web.AppKey[UploadGate] = web.AppKey("upload_gate", UploadGate)


def _busy() -> web.Response:
    response = _error("busy", BUSY, 429)
    response.headers["Retry-After"] = "2"
    return response


def caller_sender(credential: Credential) -> str:
    """The gate's name for a caller: a digest of the credential, never the secret itself."""
    return f"caller:{secret_digest(credential.token)}"


async def _store(request: web.Request, session_id: str, kind: str,
                 by: dict[str, Any], sender: str) -> web.Response:
    store = request.app[EVIDENCE]
    gate = request.app[UPLOAD_GATE]
    if not gate.enter(sender):
        return _busy()
    try:
        evidence = await store.add_stream(session_id, _body(request), kind, by,
                                          expected=request.content_length)
    except EvidenceTooLarge:
        return _error("too_large", TOO_LARGE, 413)
    except QuotaExceeded as exc:
        log.info("evidence for session %s refused: %s", session_id, exc)
        return _error("quota_exceeded", QUOTA, 413)
    except UnsupportedEvidence:
        return _error("unsupported_type", UNSUPPORTED, 415)
    except SessionShredded:
        return _error("purged", "This session was purged; nothing can be added.", 410)
    finally:
        gate.leave(sender)
    log.info("evidence %s (%s, %s, %d bytes) added to session %s", evidence.id, kind,
             evidence.content_type, evidence.size, session_id)
    return web.json_response(evidence.to_json(), status=201)


@require_role(StaffRole.HANDLER)
async def add_snapshot(request: web.Request) -> web.Response:
    session = current_staff(request)
    assert session is not None
    staff = session.staff
    video = await request.app[keys.ROOM].own_session(staff, request.match_info["session_id"])
    return await _store(request, video.id, "snapshot", {"by": staff.id, "role": "handler"},
                        f"staff:{staff.id}")


async def _caller(request: web.Request) -> Credential | None:
    """The caller's credential from `Authorization: Bearer`, if it is live."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    try:
        return await request.app[keys.ROOM].invites.check_credential(token.strip())
    except LinkRefused:
        return None


@csrf_exempt  # bearer-authenticated and cookieless: no ambient credential to forge
async def add_upload(request: web.Request) -> web.Response:
    credential = await _caller(request)
    if credential is None:
        return _error("unauthorized", NOT_SIGNED_IN, 401)
    return await _store(request, credential.session_id, "upload", {"role": credential.role},
                        caller_sender(credential))


class LiveStills:
    """The newest stills of each live session, kept in this process so that staff watching
    the call get each one without decrypting the record again, and the pace each caller
    sends at. Bounded: the least recently active sessions are forgotten first."""

    SESSIONS = 256
    PER_SESSION = 3

    def __init__(self) -> None:
        self._stills: OrderedDict[str, deque[tuple[Evidence, bytes]]] = OrderedDict()
        self._last: dict[str, float] = {}
        self._seen: set[tuple[int, str]] = set()

    def too_soon(self, session_id: str, gap: float, now: float) -> float:
        """Seconds the caller must still wait (0 if a still may be taken now)."""
        return max(0.0, self._last.get(session_id, 0.0) + gap - now)

    def keep(self, evidence: Evidence, data: bytes, now: float) -> None:
        held = self._stills.pop(evidence.session_id, None) or deque(maxlen=self.PER_SESSION)
        held.append((evidence, data))
        self._stills[evidence.session_id] = held
        self._last[evidence.session_id] = now
        while len(self._stills) > self.SESSIONS:
            gone, _ = self._stills.popitem(last=False)
            self._last.pop(gone, None)
            self._seen = {seen for seen in self._seen if seen[1] != gone}

    def get(self, session_id: str, evidence_id: str) -> tuple[Evidence, bytes] | None:
        for evidence, data in self._stills.get(session_id, ()):
            if evidence.id == evidence_id:
                return evidence, data
        return None

    def first_look(self, staff_id: int, session_id: str) -> bool:
        """True the first time this staff member looks at this session's stills."""
        if (staff_id, session_id) in self._seen:
            return False
        self._seen.add((staff_id, session_id))
        return True


LIVE_STILLS: web.AppKey[LiveStills] = web.AppKey("live_stills", LiveStills)


@csrf_exempt  # bearer-authenticated and cookieless, like /j/upload
async def add_still(request: web.Request) -> web.Response:
    """One still picture from the caller's camera: evidence, shown live to the staff."""
    credential = await _caller(request)
    if credential is None:
        return _error("unauthorized", NOT_SIGNED_IN, 401)
    config = request.app[keys.CONFIG]
    stills = request.app[LIVE_STILLS]
    now = time.monotonic()
    # Half the page's own pace: a page that sends faster is broken or hostile.
    wait = stills.too_soon(credential.session_id, config.still_every / 2, now)
    if wait > 0:
        response = _error("too_soon", "Still pictures are sent every few seconds.", 429)
        response.headers["Retry-After"] = str(max(1, round(wait)))
        return response
    gate = request.app[UPLOAD_GATE]
    sender = caller_sender(credential)
    if not gate.enter(sender):
        return _busy()
    try:
        data = await _read_limited(request, config.still_max_bytes)
        if data is None:
            return _error("too_large", TOO_LARGE, 413)
        store = request.app[EVIDENCE]
        if store.check(data, config.still_max_bytes) not in STILL_TYPES:
            return _error("unsupported_type", "Still pictures are JPEG, PNG or WebP.", 415)
        evidence = await store.add(credential.session_id, data, "still",
                                   {"role": credential.role}, config.still_max_bytes)
    except EvidenceTooLarge:
        return _error("too_large", TOO_LARGE, 413)
    except QuotaExceeded as exc:
        log.info("still for session %s refused: %s", credential.session_id, exc)
        return _error("quota_exceeded", QUOTA, 413)
    except UnsupportedEvidence:
        return _error("unsupported_type", "Still pictures are JPEG, PNG or WebP.", 415)
    except SessionShredded:
        return _error("purged", "This session was purged; nothing can be added.", 410)
    finally:
        gate.leave(sender)
    stills.keep(evidence, data, now)
    await request.app[keys.ROOM].hub.broadcast(credential.session_id, {
        "type": "still", "id": evidence.id, "ts": time.time(), "size": evidence.size,
        "sha256": evidence.sha256, "content_type": evidence.content_type,
    }, roles=STAFF_IN_CALL)
    return web.json_response(evidence.to_json(), status=201)


@require_role(*STILL_WATCHERS)
async def get_still(request: web.Request) -> web.StreamResponse:
    """A still of a live call, for the staff in it (the handler, an accepted specialist, a
    supervisor); auditors read stills like any evidence, through the evidence route."""
    session = current_staff(request)
    assert session is not None
    staff = session.staff
    room = request.app[keys.ROOM]
    video = await room.session_for(staff, request.match_info["session_id"])
    if staff.role is StaffRole.SPECIALIST:
        await room.participant_role(staff, video)  # refuses a specialist who never accepted
    evidence_id = request.match_info["evidence_id"]
    store = request.app[EVIDENCE]
    stills = request.app[LIVE_STILLS]
    try:
        store.path(video.id, evidence_id)
        if stills.first_look(staff.id, video.id):
            await request.app[keys.RECORD].append(
                video.id, "record_read", {"by": staff.id, "via": "live_stills"}
            )
        found = stills.get(video.id, evidence_id) or await store.read(video.id, evidence_id)
    except EvidenceNotFound:
        return _error("not_found", "No such still picture.", 404)
    except SessionShredded:
        return _error("purged", "This session was purged.", 410)
    except EvidenceDamaged:
        log.exception("still %s of session %s is damaged", evidence_id, video.id)
        return _error("damaged", "This file does not match its record.", 500)
    evidence, data = found
    if evidence.kind != "still":
        return _error("not_found", "No such still picture.", 404)
    return web.Response(body=data, content_type=evidence.content_type,
                        headers={"Cache-Control": "no-store"})


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
        evidence, pieces = await store.stream(video.id, evidence_id)
        first = await anext(pieces, b"")  # a file damaged from its start is refused cleanly
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
    response = web.StreamResponse(headers={
        "Content-Type": evidence.content_type,
        "Content-Disposition": f'attachment; filename="{evidence.filename}"',
        "Cache-Control": "no-store",
    })
    response.content_length = evidence.size
    await response.prepare(request)
    try:
        await response.write(first)
        async for piece in pieces:  # decrypted a chunk at a time, never the whole file
            await response.write(piece)
    except EvidenceDamaged:
        # Part was sent: cut the connection, so the reader gets a short file, never a
        # complete-looking wrong one.
        log.exception("evidence %s of session %s is damaged", evidence_id, video.id)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    log.info("evidence %s of session %s read by staff %d", evidence_id, video.id, staff.id)
    return response


async def _evidence_store(app: web.Application) -> AsyncIterator[None]:
    """Runs after the app's services are up (it needs the case record)."""
    config = app[keys.CONFIG]
    app[EVIDENCE] = EvidenceStore(
        config.data_dir, app[keys.RECORD], config.evidence_max_bytes,
        Quota(files=config.evidence_session_files, bytes=config.evidence_session_bytes))
    yield


def add_routes(app: web.Application) -> None:
    app.cleanup_ctx.append(_evidence_store)
    app[LIVE_STILLS] = LiveStills()
    app[UPLOAD_GATE] = UploadGate(app[keys.CONFIG].uploads_per_sender)
    app.router.add_post("/api/sessions/{session_id}/snapshots", add_snapshot)
    app.router.add_post("/j/upload", add_upload)
    app.router.add_post("/j/still", add_still)
    app.router.add_get("/api/sessions/{session_id}/evidence/{evidence_id}", get_evidence)
    app.router.add_get("/api/sessions/{session_id}/stills/{evidence_id}", get_still)
