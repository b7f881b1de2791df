"""`erv verify-record` on a real call's case record, on each backend: intact passes; a flipped
ciphertext byte, a deleted record and two swapped records each fail and name the place."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.record import RecordRig, backend_env, record_a_call, record_rig, run_erv

Stopped = tuple[Path, dict[str, Any]]  # a stopped server's data folder, and its backend
Tamper = Callable[[RecordRig], Awaitable[str]]  # changes the store, returns what must be named


async def flip_byte(rig: RecordRig) -> str:
    await rig.flip_ciphertext(3)
    return "3"


async def delete_record(rig: RecordRig) -> str:
    await rig.delete(4)
    return "4"


async def swap_records(rig: RecordRig) -> str:
    await rig.swap(2, 3)
    return "2"


@pytest.fixture
async def recorded_call(backend: dict[str, Any], tmp_path: Path) -> Stopped:
    """A data folder (and Redis) holding the case record of a whole (short) call, server
    stopped."""
    data_dir, _ = await record_a_call(tmp_path, **backend)
    return data_dir, backend


def verify(stopped: Stopped, monkeypatch: pytest.MonkeyPatch,
           capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    data_dir, backend = stopped
    return run_erv(data_dir, monkeypatch, capsys, "verify-record", env=backend_env(backend))


def test_untouched_record_verifies(recorded_call: Stopped, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out = verify(recorded_call, monkeypatch, capsys)
    assert code == 0, out
    assert "chain intact" in out
    count = int(out.split(":")[1].split()[0])
    assert count >= 5  # created, texted, redeemed, joined, ended


@pytest.mark.parametrize("tamper", [flip_byte, delete_record, swap_records],
                         ids=["flipped-byte", "deleted", "swapped"])
def test_tampering_is_found_and_named(tamper: Tamper, recorded_call: Stopped,
                                      request: pytest.FixtureRequest,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    data_dir, backend = recorded_call
    redis = request.getfixturevalue("redis_server") if backend else None

    async def change() -> str:
        async with record_rig("redis" if backend else "sqlite", data_dir, redis) as rig:
            return await tamper(rig)

    place = asyncio.run(change())
    code, out = verify(recorded_call, monkeypatch, capsys)
    assert code == 1, out
    assert "BROKEN" in out and f"{place}" in out.split("BROKEN", 1)[1], out


def test_rotating_the_key_keeps_the_record_readable(recorded_call: Stopped,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    data_dir, backend = recorded_call
    keys = data_dir / "record-keys.json"
    before = keys.read_text()
    code, out = run_erv(data_dir, monkeypatch, capsys, "rotate-key", env=backend_env(backend))
    assert code == 0 and "new master key" in out
    assert len(json.loads(keys.read_text())) == len(json.loads(before)) + 1
    code, out = verify(recorded_call, monkeypatch, capsys)
    assert code == 0 and "chain intact" in out
