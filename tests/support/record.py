"""Reaching a stopped server's case record from tests: the store, and the `erv` commands."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from server.accounts import StaffRole
from server.cli import main
from server.config import Config
from server.db import Database
from server.record import SqliteCaseRecordStore
from server.record.keys import service_keyring
from tests.support.calls import open_call
from tests.support.live import start_server


@asynccontextmanager
async def open_record(data_dir: Path) -> AsyncIterator[tuple[Database, SqliteCaseRecordStore]]:
    """The database and case record in `data_dir`, with the keys the service would use."""
    config = Config(data_dir=data_dir)
    db = Database(config.db_path)
    await db.open()
    try:
        store = SqliteCaseRecordStore(db, service_keyring(config))
        await store.open()
        yield db, store
    finally:
        await db.close()


def run_erv(data_dir: Path, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str], *argv: str,
            env: dict[str, str] | None = None) -> tuple[int, str]:
    """`erv ARGV` against `data_dir`, as an operator would run it: (exit code, output)."""
    monkeypatch.setenv("ERV_DATA_DIR", str(data_dir))
    for name in ("ERV_RECORD_KEYS", "ERV_RECORD_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


async def record_a_call(tmp_path: Path, *extra_staff: tuple[str, StaffRole]) -> tuple[Path, str]:
    """Run a short whole call (join, chat, end) and stop the server: returns the data folder
    holding its case record, and the session id."""
    live = await start_server(tmp_path)
    try:
        for username, role in extra_staff:
            await live.add_staff(username, role)
        call = await open_call(live, "hannah")
        await call.caller.send({"type": "chat", "text": "he is downstairs"})
        await call.handler.expect("chat")
        await call.handler.send({"type": "control", "op": "end"})
        await call.handler.expect_closed()
    finally:
        await live.stop()
    return tmp_path / "data", call.session_id
