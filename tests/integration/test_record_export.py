"""`erv export` / `erv verify-export` on a real call's record: a fresh bundle verifies; a flipped
byte in events.json, an edited manifest, a deleted file and a wrong public key each fail and
name what failed; only an auditor may export, and every export is written to the record."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.accounts import StaffRole
from tests.support.record import backend_env, record_a_call, run_erv, stopped_stores


@dataclass(frozen=True)
class Recorded:
    """A stopped server's data folder (and Redis), holding a whole call's record."""

    data_dir: Path
    session_id: str
    backend: dict[str, Any]


@pytest.fixture
async def recorded_call(backend: dict[str, Any], tmp_path: Path) -> Recorded:
    data_dir, session_id = await record_a_call(tmp_path, ("audrey", StaffRole.AUDITOR),
                                               ("sam", StaffRole.SUPERVISOR), **backend)
    return Recorded(data_dir, session_id, backend)


def erv(recorded: Recorded, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    return run_erv(recorded.data_dir, monkeypatch, capsys, *argv,
                   env=backend_env(recorded.backend))


async def record_of(recorded: Recorded) -> list[tuple[str, dict[str, object]]]:
    async with stopped_stores(recorded.data_dir, recorded.backend) as stores:
        return [(e.header.kind, e.body) for e in await stores.record.read(recorded.session_id)]


def export(recorded: Recorded, out: Path, monkeypatch: pytest.MonkeyPatch,
           capsys: pytest.CaptureFixture[str]) -> str:
    code, text = erv(recorded, monkeypatch, capsys, "export", recorded.session_id,
                     "--out", str(out), "--by", "audrey")
    assert code == 0, text
    return text


def test_export_of_a_real_call_verifies(recorded_call: Recorded, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    data_dir, session_id = recorded_call.data_dir, recorded_call.session_id
    out = tmp_path / "bundle"
    text = export(recorded_call, out, monkeypatch, capsys)
    assert "BEGIN PUBLIC KEY" in text
    assert sorted(p.name for p in out.iterdir()) == [
        "events.json", "manifest.json", "manifest.sig", "signer.pub"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE((out / "events.json").stat().st_mode) == 0o600
    key_file = data_dir / "export-signing-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    events = json.loads((out / "events.json").read_text())
    kinds = [e["header"]["kind"] for e in events["events"]]
    assert kinds[0] == "session_created" and "session_ended" in kinds
    assert any(e["body"].get("text") == "he is downstairs" for e in events["events"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["session"] == session_id and manifest["exported_by"] == "audrey"
    assert manifest["record_head_seq"] >= len(kinds)
    assert set(manifest["files"]) == {"events.json", "signer.pub"}

    code, text = erv(recorded_call, monkeypatch, capsys, "verify-export", str(out))
    assert code == 0 and "export intact" in text, text
    code, text = erv(recorded_call, monkeypatch, capsys, "verify-export", str(out),
                     "--public-key", str(out / "signer.pub"))
    assert code == 0 and "export intact" in text, text

    # The export is itself in the record: who, but no content.
    exported = [body for kind, body in asyncio.run(record_of(recorded_call))
                if kind == "record_exported"]
    assert len(exported) == 1 and exported[0]["by"] == "audrey"
    assert "he is downstairs" not in json.dumps(exported[0])
    # The same key signs the next export.
    text2 = export(recorded_call, tmp_path / "second", monkeypatch, capsys)
    assert manifest["signer"] in text2
    code, _ = erv(recorded_call, monkeypatch, capsys, "verify-record")
    assert code == 0


def flip_events_byte(bundle: Path, tmp_path: Path) -> tuple[list[str], str]:
    path = bundle / "events.json"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return [], "events.json: SHA-256 does not match"


def edit_manifest(bundle: Path, tmp_path: Path) -> tuple[list[str], str]:
    path = bundle / "manifest.json"
    path.write_text(path.read_text().replace('"audrey"', '"mallory"'))
    return [], "manifest.sig: signature does not match"


def delete_events(bundle: Path, tmp_path: Path) -> tuple[list[str], str]:
    (bundle / "events.json").unlink()
    return [], "events.json: listed in the manifest but missing"


def wrong_public_key(bundle: Path, tmp_path: Path) -> tuple[list[str], str]:
    other = tmp_path / "other.pub"
    other.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return ["--public-key", str(other)], "manifest.sig: signature does not match"


def swap_signer(bundle: Path, tmp_path: Path) -> tuple[list[str], str]:
    """A forger re-signs with their own key and ships its signer.pub: the trusted key says no."""
    trusted = tmp_path / "trusted.pub"
    shutil.copy(bundle / "signer.pub", trusted)
    forger = Ed25519PrivateKey.generate()
    forged_pub = forger.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (bundle / "signer.pub").write_bytes(forged_pub)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["signer.pub"] = hashlib.sha256(forged_pub).hexdigest()
    forged = json.dumps(manifest).encode()
    (bundle / "manifest.json").write_bytes(forged)
    (bundle / "manifest.sig").write_bytes(base64.b64encode(forger.sign(forged)))
    return ["--public-key", str(trusted)], "manifest.sig: signature does not match"


Tamper = Callable[[Path, Path], tuple[list[str], str]]


@pytest.mark.parametrize("tamper", [flip_events_byte, edit_manifest, delete_events,
                                    wrong_public_key, swap_signer],
                         ids=["flipped-byte", "edited-manifest", "deleted-file",
                              "wrong-public-key", "swapped-signer"])
def test_a_changed_bundle_fails_naming_what(tamper: Tamper, recorded_call: Recorded,
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bundle"
    export(recorded_call, out, monkeypatch, capsys)
    extra, reason = tamper(out, tmp_path)
    code, text = erv(recorded_call, monkeypatch, capsys, "verify-export", str(out), *extra)
    assert code == 1, text
    assert "export BROKEN" in text and reason in text, text


def test_an_added_file_is_named(recorded_call: Recorded, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bundle"
    export(recorded_call, out, monkeypatch, capsys)
    (out / "note.txt").write_text("planted")
    code, text = erv(recorded_call, monkeypatch, capsys, "verify-export", str(out))
    assert code == 1 and "note.txt: not listed in the manifest" in text, text


@pytest.mark.parametrize("by", ["sam", "hannah", "nobody"],
                         ids=["supervisor", "handler", "unknown"])
def test_only_an_auditor_may_export(by: str, recorded_call: Recorded,
                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bundle"
    code, text = erv(recorded_call, monkeypatch, capsys, "export", recorded_call.session_id,
                     "--out", str(out), "--by", by)
    assert code == 2 and "not an active auditor" in text, text
    assert not out.exists()
    kinds = [kind for kind, _ in asyncio.run(record_of(recorded_call))]
    assert "record_exported" not in kinds
