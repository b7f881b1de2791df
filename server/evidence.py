"""Evidence: handler snapshots of the live video, and photos or short videos the caller uploads.

Each file is checked by its content (magic bytes), never by its name or the client's
Content-Type, and stored at `<data_dir>/evidence/<session>/<evidence id>.bin` encrypted with
AES-256-GCM under a fresh key of its own, sealed in 64 KiB chunks as the body arrives
(server/sealed_stream.py; `sealed` on the record names the format), so an upload of any size
holds about one chunk in memory; the SHA-256 of the plaintext is computed on the way. The key
is written only into the session's encrypted case record (event `evidence_added`), so
crypto-shredding the session makes its evidence unreadable too, and no answer outside the
server carries it (`readable_body`). Files are written to a temporary name, fsynced and
renamed: a crash never leaves half a file under the final name. A session holds at most its
`Quota` of files and bytes. Reading decrypts a chunk at a time and checks the size and
SHA-256 against the record; files from before chunking (one AES-GCM blob) still open.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.private_files import PrivateFileWriter
from server.record import CaseRecordStore
from server.record.crypto import NONCE_BYTES, DecryptionFailed, generate_key, unseal
from server.sealed_stream import FORMAT, HEADER, Sealer, open_chunks

ADDED_KIND = "evidence_added"
# Fields of a record body that are key material: they stay in the encrypted record and are
# read only by the server itself (to open the file); no answer, page or export carries them.
SECRET_FIELDS = frozenset({"key"})
KINDS = ("snapshot", "upload", "still")
COUNTED_KINDS = ("snapshot", "upload")  # the quota's file count; stills are paced instead
SNIFF_BYTES = 12  # enough of the start of a file to know its kind
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


class QuotaExceeded(EvidenceError):
    """The session holds as many files or bytes as it may; nothing more was stored."""


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



@dataclass(frozen=True)
class Quota:
    """What one session may hold: files (snapshots and uploads; stills are paced instead)
    and bytes (every kind, stills included)."""

    files: int = 30
    bytes: int = 200 * 1024 * 1024


@dataclass
class Usage:
    files: int = 0
    bytes: int = 0


class EvidenceStore:
    """Encrypted evidence files in the data folder; their keys and digests in the record.

    Files are sealed in 64 KiB chunks as they arrive (server/sealed_stream.py), so an upload
    holds one chunk in memory, never the whole file. What a session already holds comes from
    its record (shared by every node); uploads still streaming on this node count too.
    """

    def __init__(self, data_dir: Path, record: CaseRecordStore, max_bytes: int,
                 quota: Quota | None = None) -> None:
        self.root = data_dir / "evidence"
        self.record = record
        self.max_bytes = max_bytes
        self.quota = quota or Quota()
        self._streaming: dict[str, Usage] = {}  # bytes and files arriving now, by session
        self._commit = asyncio.Lock()

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

    async def usage(self, session_id: str) -> Usage:
        """What the session's record says it holds (files counted as the quota counts)."""
        used = Usage()
        for event in await self.record.read(session_id):
            if event.header.kind == ADDED_KIND:
                used.files += event.body.get("kind") in COUNTED_KINDS
                size = event.body.get("size")
                used.bytes += size if isinstance(size, int) else 0
        return used

    async def add(self, session_id: str, data: bytes, kind: str,
                  by: dict[str, Any], max_bytes: int | None = None) -> Evidence:
        """Store `data` (already in memory: a still) as a streamed upload is stored."""
        async def once() -> AsyncIterator[bytes]:
            yield data
        return await self.add_stream(session_id, once(), kind, by, max_bytes, len(data))

    async def add_stream(self, session_id: str, chunks: AsyncIterator[bytes], kind: str,
                         by: dict[str, Any], max_bytes: int | None = None,
                         expected: int | None = None) -> Evidence:
        """Seal `chunks` into a file as they come, then note it (with its key) on the record.

        Refused with nothing kept: too large (`EvidenceTooLarge`, as soon as the limit is
        passed), not an accepted kind (`UnsupportedEvidence`, judged by the first bytes),
        over the session's quota (`QuotaExceeded`: before the body is read when the record
        and `expected`, the declared length, already say so; else as soon as it is passed).
        The file goes first: a crash in between leaves a file nobody can decrypt, never a
        record entry without its file. If the record refuses (a purged session), the file
        is removed again.
        """
        if kind not in KINDS:
            raise ValueError(f"bad evidence kind {kind!r}")
        limit = self.max_bytes if max_bytes is None else max_bytes
        if expected is not None and expected > limit:
            raise EvidenceTooLarge(f"over the {limit} byte limit")
        counted = kind in COUNTED_KINDS
        used = await self.usage(session_id)
        mine = Usage(files=int(counted))
        streaming = self._streaming.setdefault(session_id, Usage())
        streaming.files += mine.files
        try:
            self._within_quota(used, streaming, counted, expected or 0)
            return await self._seal_stream(session_id, chunks, kind, by, limit, used, mine,
                                           streaming)
        finally:
            streaming.files -= mine.files
            streaming.bytes -= mine.bytes
            if not streaming.files and not streaming.bytes:
                self._streaming.pop(session_id, None)

    def _within_quota(self, used: Usage, adding: Usage, counted: bool, extra: int = 0) -> None:
        """Refuse what would take the session over its quota: what it holds, plus `adding`
        (what is arriving on this node, this upload included) and `extra` bytes more."""
        if counted and used.files + adding.files > self.quota.files:
            raise QuotaExceeded(f"the session holds {used.files} files already")
        if used.bytes + adding.bytes + extra > self.quota.bytes:
            raise QuotaExceeded(f"the session may hold {self.quota.bytes} bytes")

    async def _seal_stream(self, session_id: str, chunks: AsyncIterator[bytes], kind: str,
                           by: dict[str, Any], limit: int, used: Usage, mine: Usage,
                           streaming: Usage) -> Evidence:
        evidence_id = secrets.token_hex(16)
        key = generate_key()
        sealer = Sealer(key, _aad(session_id, evidence_id))
        digest = hashlib.sha256()
        head = b""
        content_type: str | None = None
        counted = bool(mine.files)
        path = self.path(session_id, evidence_id)
        writer = await asyncio.to_thread(PrivateFileWriter, path)
        try:
            await asyncio.to_thread(writer.write, HEADER)
            async for chunk in chunks:
                mine.bytes += len(chunk)
                streaming.bytes += len(chunk)
                if mine.bytes > limit:
                    raise EvidenceTooLarge(f"over the {limit} byte limit")
                self._within_quota(used, streaming, counted)
                if content_type is None and len(head) < SNIFF_BYTES:
                    head += chunk[:SNIFF_BYTES - len(head)]
                    if len(head) == SNIFF_BYTES:
                        content_type = self._sniffed(head)
                digest.update(chunk)
                if sealed := sealer.update(chunk):
                    await asyncio.to_thread(writer.write, sealed)
            content_type = content_type or self._sniffed(head)
            await asyncio.to_thread(writer.write, sealer.finish())
            async with self._commit:  # one final check and note at a time on this node
                self._within_quota(await self.usage(session_id), mine, counted)
                await asyncio.to_thread(writer.commit)
                evidence = Evidence(id=evidence_id, session_id=session_id, kind=kind,
                                    content_type=content_type, size=mine.bytes,
                                    sha256=digest.hexdigest())
                try:
                    await self.record.append(session_id, ADDED_KIND, {
                        "evidence": evidence.id, "kind": kind, "content_type": content_type,
                        "size": evidence.size, "sha256": evidence.sha256, "sealed": FORMAT,
                        "key": base64.b64encode(key).decode(), **by,
                    })
                except BaseException:
                    await asyncio.to_thread(path.unlink, True)
                    raise
        except BaseException:
            await asyncio.to_thread(writer.abort)
            raise
        return evidence

    @staticmethod
    def _sniffed(head: bytes) -> str:
        content_type = sniff(head)
        if content_type is None:
            raise UnsupportedEvidence("not a JPEG, PNG, WebP, MP4 or WebM file")
        return content_type

    async def _entry(self, session_id: str, evidence_id: str) -> dict[str, Any]:
        path = self.path(session_id, evidence_id)
        entry: dict[str, Any] | None = None
        for event in await self.record.read(session_id):
            if event.header.kind == ADDED_KIND and event.body.get("evidence") == evidence_id:
                entry = event.body
        if entry is None:
            raise EvidenceNotFound("no such evidence")
        if not path.exists():
            raise EvidenceNotFound(f"evidence {evidence_id} has no file")
        return entry

    async def stream(self, session_id: str, evidence_id: str) -> tuple[Evidence,
                                                                        AsyncIterator[bytes]]:
        """The evidence as its record describes it, and its plaintext chunk by chunk.

        Each chunk is authenticated as it is opened; the iterator raises `EvidenceDamaged`
        at the first one that does not open, or at the end if the size or SHA-256 differ
        from the record. A purged session raises `SessionShredded` (its keys are gone).
        """
        entry = await self._entry(session_id, evidence_id)
        try:
            key = base64.b64decode(str(entry["key"]), validate=True)
            size, sha256 = int(entry["size"]), str(entry["sha256"])
        except (KeyError, binascii.Error, ValueError, TypeError) as exc:
            raise EvidenceDamaged(f"evidence {evidence_id} has a bad record: {exc}") from None
        evidence = Evidence(id=evidence_id, session_id=session_id, kind=str(entry.get("kind")),
                            content_type=str(entry.get("content_type")), size=size,
                            sha256=sha256)
        aad = _aad(session_id, evidence_id)
        path = self.path(session_id, evidence_id)
        chunked = entry.get("sealed") == FORMAT
        return evidence, self._plaintext(path, key, aad, chunked, evidence)

    async def _plaintext(self, path: Path, key: bytes, aad: bytes, chunked: bool,
                         evidence: Evidence) -> AsyncIterator[bytes]:
        digest = hashlib.sha256()
        size = 0
        try:
            if chunked:
                file = await asyncio.to_thread(path.open, "rb")
                try:
                    pieces = open_chunks(key, aad, file)
                    while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
                        digest.update(piece)
                        size += len(piece)
                        yield piece
                finally:
                    file.close()
            else:  # a file from before chunking: one AES-GCM blob, small enough to hold
                blob = await asyncio.to_thread(path.read_bytes)
                data = unseal(key, blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
                digest.update(data)
                size = len(data)
                yield data
        except (OSError, DecryptionFailed) as exc:
            raise EvidenceDamaged(f"evidence {evidence.id} does not decrypt: {exc}") from None
        if digest.hexdigest() != evidence.sha256 or size != evidence.size:
            raise EvidenceDamaged(f"evidence {evidence.id} differs from its record")

    async def read(self, session_id: str, evidence_id: str) -> tuple[Evidence, bytes]:
        """The whole decrypted file (for stills and exports), checked against its record."""
        evidence, pieces = await self.stream(session_id, evidence_id)
        return evidence, b"".join([piece async for piece in pieces])
