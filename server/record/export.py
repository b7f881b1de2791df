"""Signed export bundles of one session's case record, and their verification.

`erv export SESSION --out DIR --by AUDITOR` writes a folder:

    events.json    the session's decrypted events, each with its record header
    signer.pub     the Ed25519 public key that signed the manifest (PEM)
    manifest.json  session, time, exporter, record head seq, and the SHA-256 of every file
    manifest.sig   the Ed25519 signature of the exact bytes of manifest.json
    evidence-<id>.<ext>  each evidence file of the session, decrypted (listed in the manifest)

The signing key is an Ed25519 private key kept next to the record's master keys
(`export-signing-key.pem`, created 0600 on first use). `verify_export` checks the signature
(against a public key the verifier trusts, or the bundle's own signer.pub) and every hash.
Each export is itself written to the session's record as `record_exported` (who, how many
events; no content).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from server.accounts import Staff, StaffRole
from server.config import Config
from server.evidence import ADDED_KIND, EXTENSIONS, EvidenceStore, readable_body
from server.record.signing import (
    fingerprint,
    load_or_create_signing_key,
    public_pem,
    signing_key_path,
)
from server.record.store import CaseRecordStore, SessionShredded

log = logging.getLogger("erv.record")

FORMAT = "erv-export/1"
EVENTS_FILE = "events.json"
SIGNER_FILE = "signer.pub"
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
EXPORTED_KIND = "record_exported"


class ExportError(Exception):
    """An export is refused or cannot be made; the message says why."""


class StaffDirectory(Protocol):
    """What an export needs of the staff accounts (SQLite or Redis): who the exporter is."""

    async def by_username(self, username: str) -> Staff | None: ...


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, sort_keys=True, indent=2) + "\n").encode()


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"{out_dir} already exists and is not an empty folder")


def _write_bundle(out_dir: Path, files: dict[str, bytes]) -> None:
    """Decrypted content: the folder is 0700 and every file 0600, never overwritten."""
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name, data in files.items():
        fd = os.open(out_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    events: int
    head_seq: int
    public_key_pem: str
    fingerprint: str


async def export_session(
    record: CaseRecordStore, accounts: StaffDirectory, config: Config, session_id: str, by: str,
    out_dir: Path, now: float | None = None,
) -> ExportResult:
    """Write the signed bundle of `session_id` to `out_dir` on behalf of auditor `by`.

    `record` and `accounts` are open stores of either backend; `config` gives the signing
    key's place and the evidence folder.
    """
    _check_out_dir(out_dir)
    signing_key = load_or_create_signing_key(signing_key_path(config))
    auditor = await accounts.by_username(by)
    if auditor is None or auditor.role is not StaffRole.AUDITOR:
        log.warning("export of session %s refused: %r is not an auditor account", session_id,
                    by)
        raise ExportError(f"export refused: {by!r} is not an active auditor account")
    try:
        events = await record.read(session_id)
    except SessionShredded:
        msg = f"session {session_id} was purged: its record is unreadable"
        raise ExportError(msg) from None
    if not events:
        raise ExportError(f"no case record for session {session_id}")
    # Evidence files go into the bundle decrypted; their keys then stay out of it.
    evidence = EvidenceStore(config.data_dir, record, config.evidence_max_bytes)
    evidence_files: dict[str, bytes] = {}
    for event in events:
        if event.header.kind == ADDED_KIND:
            item, data = await evidence.read(session_id, str(event.body["evidence"]))
            extension = EXTENSIONS.get(item.content_type, "bin")
            evidence_files[f"evidence-{item.id}.{extension}"] = data
    head = await record.head()
    head_seq = head.seq if head else 0
    exported_at = time.time() if now is None else now
    events_bytes = _json_bytes({
        "session": session_id,
        "events": [
            {
                "header": {
                    "seq": e.header.seq, "at": e.header.at, "session": e.header.session_ref,
                    "kind": e.header.kind, "key_id": e.header.key_id,
                },
                "body": readable_body(e.header.kind, e.body),
            }
            for e in events
        ],
    })
    public = signing_key.public_key()
    signer_bytes = public_pem(public)
    manifest_bytes = _json_bytes({
        "format": FORMAT,
        "session": session_id,
        "exported_at": exported_at,
        "exported_by": auditor.username,
        "record_head_seq": head_seq,
        "events": len(events),
        "signer": fingerprint(public),
        "files": {EVENTS_FILE: _sha256(events_bytes), SIGNER_FILE: _sha256(signer_bytes),
                  **{name: _sha256(data) for name, data in evidence_files.items()}},
    })
    signature = signing_key.sign(manifest_bytes)
    # Written to the record before the files: an export is never missing from the record.
    await record.append(session_id, EXPORTED_KIND, {
        "by": auditor.username, "staff_id": auditor.id, "events": len(events),
        "record_head_seq": head_seq, "manifest_sha256": _sha256(manifest_bytes),
    })
    _write_bundle(out_dir, {
        EVENTS_FILE: events_bytes, SIGNER_FILE: signer_bytes, MANIFEST_FILE: manifest_bytes,
        SIGNATURE_FILE: base64.b64encode(signature) + b"\n", **evidence_files,
    })
    log.info("session %s exported by %s (%d events)", session_id, auditor.username, len(events))
    return ExportResult(out_dir, len(events), head_seq, signer_bytes.decode(), fingerprint(public))


@dataclass
class ExportCheck:
    """The outcome of checking a bundle: `ok` only if the signature and every hash hold."""

    problems: list[str] = field(default_factory=list)
    signer: str = ""  # fingerprint of the key the signature was checked against
    session: str = ""
    files: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        if self.ok:
            return (f"export intact: session {self.session}, {self.files} files, "
                    f"signed by {self.signer}")
        return "export BROKEN: " + "; ".join(self.problems)


def _load_public_key(pem: bytes, where: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise ExportError(f"{where} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ExportError(f"{where} is not an Ed25519 public key")
    return key


def verify_export(bundle: Path, public_key_pem: bytes | None = None) -> ExportCheck:
    """Check `bundle`'s manifest signature and every file's SHA-256; names each failure.

    Without `public_key_pem` the bundle's own signer.pub is used, which proves the bundle was
    not changed since signing but not who signed it: compare the printed fingerprint.
    """
    check = ExportCheck()
    if not bundle.is_dir():
        check.problems.append(f"{bundle}: no such folder")
        return check
    try:
        manifest_bytes = (bundle / MANIFEST_FILE).read_bytes()
    except FileNotFoundError:
        check.problems.append(f"{MANIFEST_FILE}: missing")
        return check
    try:
        signature = base64.b64decode((bundle / SIGNATURE_FILE).read_bytes().strip(), validate=True)
    except FileNotFoundError:
        check.problems.append(f"{SIGNATURE_FILE}: missing")
        return check
    except ValueError:
        check.problems.append(f"{SIGNATURE_FILE}: not base64")
        return check
    try:
        if public_key_pem is not None:
            public = _load_public_key(public_key_pem, "the given public key")
        else:
            public = _load_public_key((bundle / SIGNER_FILE).read_bytes(), SIGNER_FILE)
    except FileNotFoundError:
        check.problems.append(f"{SIGNER_FILE}: missing, and no --public-key given")
        return check
    except ExportError as exc:
        check.problems.append(str(exc))
        return check
    check.signer = fingerprint(public)
    try:
        public.verify(signature, manifest_bytes)
    except InvalidSignature:
        check.problems.append(
            f"{SIGNATURE_FILE}: signature does not match {MANIFEST_FILE} under key "
            f"{check.signer} (manifest edited, or signed by another key)"
        )
        return check  # an unsigned manifest's hashes prove nothing
    try:
        manifest = json.loads(manifest_bytes)
        files = manifest["files"]
        check.session = str(manifest["session"])
        if not isinstance(files, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        check.problems.append(f"{MANIFEST_FILE}: not a manifest of this format")
        return check
    for name, expected in sorted(files.items()):
        path = bundle / name
        if Path(name).name != name or name in (MANIFEST_FILE, SIGNATURE_FILE):
            check.problems.append(f"{MANIFEST_FILE}: bad file name {name!r}")
        elif not path.is_file():
            check.problems.append(f"{name}: listed in the manifest but missing")
        elif _sha256(path.read_bytes()) != expected:
            check.problems.append(f"{name}: SHA-256 does not match the manifest (file changed)")
        else:
            check.files += 1
    listed = set(files) | {MANIFEST_FILE, SIGNATURE_FILE}
    for extra in sorted(p.name for p in bundle.iterdir() if p.name not in listed):
        check.problems.append(f"{extra}: not listed in the manifest")
    return check
