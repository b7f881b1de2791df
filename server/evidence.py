"""Evidence: handler snapshots of the live video, and photos or short videos the caller uploads.

Each file is checked by its content (magic bytes), never by its name or the client's
Content-Type, and stored at `<data_dir>/evidence/<session>/<evidence id>.bin` encrypted with
AES-256-GCM under a fresh key of its own. That key is written only into the session's
encrypted case record (event `evidence_added`, with the plaintext's SHA-256), so
crypto-shredding the session makes its evidence unreadable too. Files are written on a
thread to a temporary name, fsynced and renamed: a crash never leaves half a file under the
final name. Reading decrypts and checks the SHA-256 against the record.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.private_files import write_private_atomic
from server.record import CaseRecordStore
from server.record.crypto import NONCE_BYTES, DecryptionFailed, generate_key, seal, unseal

ADDED_KIND = "evidence_added"
# Fields of a record body that are key material: they stay in the encrypted record and are
# read only by the server itself (to open the file); no answer, page or export carries them.
SECRET_FIELDS = frozenset({"key"})
KINDS = ("snapshot", "upload", "still")
EVIDENCE_ID = re.compile(r"[0-9a-f]{32}")
_AAD_LABEL = b"erv.evidence\x00"

EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "video/mp4": "mp4",
    "video/webm": "webm",
}


class EvidenceError(Exception):
    """Base of the evidence store's refusals."""


class EvidenceTooLarge(EvidenceError):
    """The file is over the configured size limit; nothing was stored."""


class UnsupportedEvidence(EvidenceError):
    """The content is not a JPEG, PNG, WebP, MP4 or WebM file; nothing was stored."""


class EvidenceNotFound(EvidenceError):
    """The session's record names no such evidence, or its file is gone."""


class EvidenceDamaged(EvidenceError):
    """The file does not decrypt, or its SHA-256 differs from the one in the record."""


def sniff(data: bytes) -> str | None:
    """The content type the bytes themselves show, or None if not an accepted kind."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if len(data) >= 8 and data[4:8] == b"ftyp":
        return "video/mp4"
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    return None


@dataclass(frozen=True)
class Evidence:
    """What the record says about one stored file."""

    id: str
    session_id: str
    kind: str
    content_type: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "sha256": self.sha256, "size": self.size,
                "content_type": self.content_type}

    @property
    def filename(self) -> str:
        return f"evidence-{self.id}.{EXTENSIONS.get(self.content_type, 'bin')}"


def readable_body(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """A record body as anything outside the server may see it: without key material."""
    if kind != ADDED_KIND:
        return body
    return {name: value for name, value in body.items() if name not in SECRET_FIELDS}


def _aad(session_id: str, evidence_id: str) -> bytes:
    # Bound to its session and id: a file moved or renamed on disk does not decrypt.
    return _AAD_LABEL + session_id.encode() + b"\x00" + evidence_id.encode()



class EvidenceStore:
    """Encrypted evidence files in the data folder; their keys and digests in the record."""

    def __init__(self, data_dir: Path, record: CaseRecordStore, max_bytes: int) -> None:
        self.root = data_dir / "evidence"
        self.record = record
        self.max_bytes = max_bytes

    def path(self, session_id: str, evidence_id: str) -> Path:
        if not EVIDENCE_ID.fullmatch(evidence_id) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}",
                                                                       session_id):
            raise EvidenceNotFound("no such evidence")
        return self.root / session_id / f"{evidence_id}.bin"

    def check(self, data: bytes, max_bytes: int | None = None) -> str:
        """The content type of `data`, or a refusal (too large, or not an accepted kind)."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        if len(data) > limit:
            raise EvidenceTooLarge(f"over the {limit} byte limit")
        content_type = sniff(data)
        if content_type is None:
            raise UnsupportedEvidence("not a JPEG, PNG, WebP, MP4 or WebM file")
        return content_type

    async def add(self, session_id: str, data: bytes, kind: str,
                  by: dict[str, Any], max_bytes: int | None = None) -> Evidence:
        """Store `data` encrypted, then note it (with its key) on the session's record.

        The file goes first: a crash in between leaves a file nobody can decrypt, never a
        record entry without its file. If the record refuses (a purged session), the file
        is removed again.
        """
        if kind not in KINDS:
            raise ValueError(f"bad evidence kind {kind!r}")
        content_type = self.check(data, max_bytes)
        evidence = Evidence(
            id=secrets.token_hex(16), session_id=session_id, kind=kind,
            content_type=content_type, size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        key = generate_key()
        nonce, ciphertext = seal(key, data, _aad(session_id, evidence.id))
        path = self.path(session_id, evidence.id)
        await asyncio.to_thread(write_private_atomic, path, nonce + ciphertext)
        try:
            await self.record.append(session_id, ADDED_KIND, {
                "evidence": evidence.id, "kind": kind, "content_type": content_type,
                "size": evidence.size, "sha256": evidence.sha256,
                "key": base64.b64encode(key).decode(), **by,
            })
        except BaseException:
            await asyncio.to_thread(path.unlink, True)
            raise
        return evidence

    async def read(self, session_id: str, evidence_id: str) -> tuple[Evidence, bytes]:
        """The decrypted file, checked against its SHA-256 in the record.

        A purged session raises `SessionShredded` (from the record): its keys are gone.
        """
        path = self.path(session_id, evidence_id)
        entry: dict[str, Any] | None = None
        for event in await self.record.read(session_id):
            if event.header.kind == ADDED_KIND and event.body.get("evidence") == evidence_id:
                entry = event.body
        if entry is None:
            raise EvidenceNotFound("no such evidence")
        try:
            blob = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise EvidenceNotFound(f"evidence {evidence_id} has no file") from None
        try:
            key = base64.b64decode(str(entry["key"]), validate=True)
            data = unseal(key, blob[:NONCE_BYTES], blob[NONCE_BYTES:],
                          _aad(session_id, evidence_id))
        except (KeyError, binascii.Error, ValueError, DecryptionFailed) as exc:
            raise EvidenceDamaged(f"evidence {evidence_id} does not decrypt: {exc}") from None
        evidence = Evidence(
            id=evidence_id, session_id=session_id, kind=str(entry.get("kind")),
            content_type=str(entry.get("content_type")), size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        if evidence.sha256 != entry.get("sha256") or evidence.size != entry.get("size"):
            raise EvidenceDamaged(f"evidence {evidence_id} differs from its record")
        return evidence, data
