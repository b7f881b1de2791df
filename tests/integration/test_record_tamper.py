"""`erv verify-record` on a real call's case record: intact passes; a flipped ciphertext byte,
a deleted record and two swapped records each fail and name the place."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.record import record_a_call, run_erv

Tamper = Callable[[sqlite3.Connection], str]  # changes the db, returns what must be named


def flip_byte(conn: sqlite3.Connection) -> str:
    blob = bytearray(conn.execute("SELECT ciphertext FROM case_records WHERE seq = 3")
                     .fetchone()[0])
    blob[len(blob) // 2] ^= 0x01
    conn.execute("UPDATE case_records SET ciphertext = ? WHERE seq = 3", (bytes(blob),))
    return "3"


def delete_record(conn: sqlite3.Connection) -> str:
    conn.execute("DELETE FROM case_records WHERE seq = 4")
    return "4"


def swap_records(conn: sqlite3.Connection) -> str:
    columns = [row[1] for row in conn.execute("PRAGMA table_info(case_records)")
               if row[1] != "position"]
    rows = {seq: conn.execute(f"SELECT {', '.join(columns)} FROM case_records WHERE seq = ?",
                              (seq,)).fetchone() for seq in (2, 3)}
    positions = {seq: conn.execute("SELECT position FROM case_records WHERE seq = ?",
                                   (seq,)).fetchone()[0] for seq in (2, 3)}
    assignments = ", ".join(f"{c} = ?" for c in columns)
    for target, source in ((2, 3), (3, 2)):
        conn.execute(f"UPDATE case_records SET {assignments} WHERE position = ?",
                     (*rows[source], positions[target]))
    return "2"


@pytest.fixture
async def recorded_call(tmp_path: Path) -> Path:
    """A data folder holding the case record of a whole (short) call, server stopped."""
    data_dir, _ = await record_a_call(tmp_path)
    return data_dir


def verify(data_dir: Path, monkeypatch: pytest.MonkeyPatch,
           capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    return run_erv(data_dir, monkeypatch, capsys, "verify-record")


def test_untouched_record_verifies(recorded_call: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, out = verify(recorded_call, monkeypatch, capsys)
    assert code == 0, out
    assert "chain intact" in out
    count = int(out.split(":")[1].split()[0])
    assert count >= 5  # created, texted, redeemed, joined, ended


@pytest.mark.parametrize("tamper", [flip_byte, delete_record, swap_records],
                         ids=["flipped-byte", "deleted", "swapped"])
def test_tampering_is_found_and_named(tamper: Tamper, recorded_call: Path,
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "tampered"
    shutil.copytree(recorded_call, copy)
    conn = sqlite3.connect(copy / "erv.sqlite3", isolation_level=None)
    place = tamper(conn)
    conn.close()
    code, out = verify(copy, monkeypatch, capsys)
    assert code == 1, out
    assert "BROKEN" in out and f"{place}" in out.split("BROKEN", 1)[1], out


def test_rotating_the_key_keeps_the_record_readable(recorded_call: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    keys = recorded_call / "record-keys.json"
    before = keys.read_text()
    code, out = run_erv(recorded_call, monkeypatch, capsys, "rotate-key")
    assert code == 0 and "new master key" in out
    assert len(json.loads(keys.read_text())) == len(json.loads(before)) + 1
    code, out = verify(recorded_call, monkeypatch, capsys)
    assert code == 0 and "chain intact" in out
