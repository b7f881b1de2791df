"""After a whole call, no phone number, chat text, advice, location, link token or credential
is anywhere in the store (the SQLite files, or Redis's keys and append-only files) or the
logs: only in the encrypted case record."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from server import keys
from tests.support.calls import bring_specialist, open_call
from tests.support.live import start_server
from tests.support.unit_db import database_bytes

SECRETS = ("he has a knife", "refuge in Leeds", "51.50136", "-0.14189")


async def test_a_call_leaves_no_plaintext_in_the_database_or_logs(
    backend: dict[str, Any], request: pytest.FixtureRequest, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    redis = request.getfixturevalue("redis_server") if backend else None
    live = await start_server(tmp_path, **backend)
    try:
        call = await open_call(live, "hannah")
        token = live.latest_token()
        _, specialist = await bring_specialist(live, call, "sam")
        await call.caller.send({"type": "chat", "text": SECRETS[0]})
        await call.caller.send({"type": "location", "lat": 51.501364, "lon": -0.141890,
                                "accuracy": 8, "ts": 1_764_000_000_000})
        await call.handler.send({"type": "advice", "text": SECRETS[1]})
        await specialist.expect("advice")
        await call.handler.expect("chat", text=SECRETS[0])
        await call.handler.send({"type": "control", "op": "end"})
        await call.handler.expect_closed()
        # The record has it all, encrypted: decrypting gives the words back.
        events = await live.app[keys.RECORD].read(call.session_id)
        kinds = [e.header.kind for e in events]
        for kind in ("session_created", "chat", "location", "advice", "session_ended"):
            assert kind in kinds
        assert any(e.body.get("text") == SECRETS[0] for e in events)
        held = await live.stored_bytes()  # every Redis key and value, or the SQLite files
    finally:
        await live.stop()

    # What is on disk once the server has stopped.
    stored = held + database_bytes(tmp_path / "data")
    assert stored, "nothing stored was found"
    aof = redis.aof_bytes() if redis else b""
    assert aof or not redis, "no append-only file was found"
    logs = caplog.text
    numbers = ("+447911123456", "7911123456", "07911 123456", "911123456")
    for secret in (*SECRETS, *numbers, token, call.credential):
        assert secret.encode() not in stored, f"{secret!r} is in the store in the clear"
        assert secret not in logs, f"{secret!r} is in the logs"
    # Live messages pass through Redis sealed under the session's live key: nothing said in
    # the call is in Redis's files in the clear, not even while the call runs.
    for secret in (*SECRETS, *numbers, token, call.credential):
        assert secret.encode() not in aof, f"{secret!r} is in Redis's files in the clear"
