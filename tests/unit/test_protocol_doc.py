"""docs/protocol.md stays true to signaling.protocol.

Pinned: every client and server message type has its own section, the sequencing table marks
exactly the unsequenced types as unsequenced, and the error-code and quick-reply tables list
exactly the codes and ids the code knows. Adding a type, code or quick reply without
documenting it (or leaving a removed one in the doc) fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

from signaling.protocol import (
    CANNED_REPLIES,
    CLIENT_TYPES,
    SERVER_TYPES,
    UNSEQUENCED_TYPES,
    ErrorCode,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
HEADING_NAME = re.compile(r"^###\s+[\d.]+\s+`([a-z_]+)`\s*$", re.MULTILINE)
ROW_NAME = re.compile(r"^\|\s*`([a-z_]+)`\s*\|(.*)$", re.MULTILINE)


def _section(marker: str) -> str:
    """The text from the heading that starts with `marker` to the next heading of its level
    or higher."""
    text = DOC.read_text(encoding="utf-8")
    level = marker.split(" ", 1)[0]
    start = next(
        (m.start() for m in re.finditer(rf"^{re.escape(marker)}", text, re.MULTILINE)), None
    )
    assert start is not None, f"docs/protocol.md has no heading {marker!r}"
    rest = text[start + len(marker):]
    end = re.search(rf"^#{{1,{len(level)}}} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def _compare(documented: set[str], actual: set[str], what: str) -> None:
    missing = sorted(actual - documented)
    stale = sorted(documented - actual)
    assert not missing, f"{what} missing from docs/protocol.md: {missing}"
    assert not stale, f"{what} in docs/protocol.md but not in the code: {stale}"


def test_every_client_message_type_has_a_section() -> None:
    section = _section("## 6. Client → server messages")
    _compare(set(HEADING_NAME.findall(section)), set(CLIENT_TYPES), "client message types")


def test_every_server_message_type_has_a_section() -> None:
    section = _section("## 7. Server → client messages")
    _compare(set(HEADING_NAME.findall(section)), set(SERVER_TYPES), "server message types")


def test_sequencing_table_matches_the_unsequenced_types() -> None:
    section = _section("### 5.1 ")
    rows = {name: cells.split("|")[0].strip() for name, cells in ROW_NAME.findall(section)}
    _compare(set(rows), set(SERVER_TYPES), "server message types in the seq table")
    unsequenced = {name for name, seq in rows.items() if seq == "no"}
    sequenced = {name for name, seq in rows.items() if seq == "yes"}
    assert unsequenced == set(UNSEQUENCED_TYPES), rows
    assert sequenced == set(SERVER_TYPES) - UNSEQUENCED_TYPES, rows


def test_error_code_table_lists_every_error_code() -> None:
    section = _section("### 10.1 ")
    documented = {name for name, _ in ROW_NAME.findall(section)}
    _compare(documented, {code.value for code in ErrorCode}, "error codes")


def test_quick_reply_table_lists_every_canned_reply() -> None:
    section = _section("### 10.3 ")
    documented = {name for name, _ in ROW_NAME.findall(section)}
    _compare(documented, set(CANNED_REPLIES), "quick-reply ids")
