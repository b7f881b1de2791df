"""Evidence keys never leave the server (issue 11, finding 10).

Each evidence file's AES key lives only in the session's encrypted case record. Every answer
a reader can get about the session (the record as JSON and as a page, the session, its case
notes, the sessions list) is walked for key material: no field named like a key, and none of
the session's actual file keys in any encoding, anywhere in the answer.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from server import keys
from server.accounts import StaffRole
from server.evidence import ADDED_KIND
from tests.integration.test_evidence import JPEG, PNG, post_raw, setup
from tests.support.live import LiveServer, start_server

KEY_FIELDS = {"key", "data_key", "file_key", "evidence_key", "wrapped_key", "secret"}


def key_fields(value: Any, path: str = "$") -> list[str]:
    """Every place in a JSON value where a field is named like key material."""
    found: list[str] = []
    if isinstance(value, dict):
        for name, inner in value.items():
            if str(name).lower() in KEY_FIELDS:
                found.append(f"{path}.{name}")
            found += key_fields(inner, f"{path}.{name}")
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += key_fields(inner, f"{path}[{index}]")
    return found


def encodings(key: bytes) -> list[str]:
    """The ways a key could be written into text."""
    return [base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode().rstrip("="),
            base64.b64encode(key).decode().rstrip("="), key.hex()]


async def file_keys(live: LiveServer, session_id: str) -> list[bytes]:
    events = await live.app[keys.RECORD].read(session_id)
    return [base64.b64decode(e.body["key"]) for e in events if e.header.kind == ADDED_KIND]


async def test_no_answer_about_a_session_carries_an_evidence_key(
    backend: dict[str, Any], tmp_path: Path,
) -> None:
    live = await start_server(tmp_path, **backend)
    try:
        handler, session_id, credential = await setup(live)
        status, _ = await post_raw(live, handler, f"/api/sessions/{session_id}/snapshots",
                                   PNG, {"Content-Type": "image/png"})
        assert status == 201
        status, _ = await post_raw(live, None, "/j/upload", JPEG,
                                   {"Authorization": f"Bearer {credential}"})
        assert status == 201
        secrets = [text for key in await file_keys(live, session_id) for text in encodings(key)]
        assert len(secrets) == 8

        supervisor = await live.staff_client("sue", StaffRole.SUPERVISOR)
        auditor = await live.staff_client("audrey", StaffRole.AUDITOR)
        json_routes = [f"/api/sessions/{session_id}/record", f"/api/sessions/{session_id}",
                       f"/api/sessions/{session_id}/case", "/api/sessions"]
        answers: list[tuple[str, str, bool]] = []
        for reader in (handler, supervisor, auditor):
            for path in json_routes:
                async with reader.http.get(f"{live.url}{path}") as response:
                    answers.append((path, await response.text(), response.status == 200))
            async with reader.http.get(f"{live.url}/records/{session_id}") as response:
                answers.append((f"/records/{session_id}", await response.text(), False))
        assert any(ok and "/record" in path for path, _, ok in answers)
        for path, text, is_json in answers:
            for secret in secrets:
                assert secret not in text, f"{path} carries an evidence key"
            if is_json:
                assert key_fields(json.loads(text)) == [], path
    finally:
        await live.stop()
