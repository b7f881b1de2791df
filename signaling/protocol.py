"""The wire protocol: JSON text frames over one WebSocket per participant tab.

`parse` turns one client frame into a typed message or raises ProtocolError with a stable
code. Nothing here trusts the client: every field is type-checked and bounded before the rest
of the server sees it. docs/protocol.md is the human-readable form of this module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from signaling.json_depth import MAX_JSON_DEPTH, deeper_than

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 64 * 1024
MAX_CHAT_CHARS = 2000
MAX_ADVICE_CHARS = 4000
MAX_SDP_CHARS = 60 * 1024
MAX_CANDIDATE_CHARS = 1024
MAX_ID_CHARS = 64
MAX_CID_CHARS = 32


class Role(StrEnum):
    VICTIM = "victim"
    HANDLER = "handler"
    SPECIALIST = "specialist"
    OBSERVER = "observer"

    @property
    def is_staff(self) -> bool:
        return self is not Role.VICTIM


class ErrorCode(StrEnum):
    """Stable error codes; clients switch on these, never on the message text."""

    BAD_JSON = "bad_json"
    BAD_FRAME = "bad_frame"  # binary frame
    TOO_LARGE = "too_large"
    UNKNOWN_TYPE = "unknown_type"
    UNKNOWN_OP = "unknown_op"
    BAD_FIELD = "bad_field"
    BAD_VERSION = "bad_version"
    HELLO_FIRST = "hello_first"
    ALREADY_JOINED = "already_joined"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"  # the role may not send this
    UNKNOWN_PEER = "unknown_peer"
    RATE_LIMITED = "rate_limited"
    RESUME_FAILED = "resume_failed"
    SESSION_ENDED = "session_ended"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    UNAVAILABLE = "unavailable"


class ProtocolError(Exception):
    def __init__(self, code: ErrorCode, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail  # a finer stable code from the server, e.g. "no_specialist"


# Quick replies travel as ids so every reader sees them in their own language.
CANNED_REPLIES = (
    "cant_talk",
    "they_are_here",
    "yes",
    "no",
    "safe_now",
    "send_help",
)

SDP_TYPES = frozenset({"offer", "answer", "pranswer", "rollback"})


@dataclass(frozen=True, slots=True)
class Resume:
    pid: str
    secret: str
    last_seq: int


@dataclass(frozen=True, slots=True)
class Place:
    """A caller's earlier place, proved by its resume secret: the same page after a reload."""

    pid: str
    secret: str


@dataclass(frozen=True, slots=True)
class Hello:
    v: int
    credential: str | None
    session: str | None
    resume: Resume | None
    replaces: Place | None = None


@dataclass(frozen=True, slots=True)
class Signal:
    to: str
    description: dict[str, Any] | None
    candidate: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Chat:
    text: str | None
    canned: str | None
    cid: str | None = None  # the sender's own id for it, echoed back (section 6.3)


@dataclass(frozen=True, slots=True)
class Advice:
    text: str
    cid: str | None = None


@dataclass(frozen=True, slots=True)
class Location:
    lat: float
    lon: float
    accuracy: float
    ts: float


@dataclass(frozen=True, slots=True)
class Control:
    op: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Ping:
    pass


ClientMessage = Hello | Signal | Chat | Advice | Location | Control | Ping


def _bad(field: str, why: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FIELD, f"{field}: {why}")


def _str(obj: dict[str, Any], key: str, limit: int, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise _bad(key, "is required")
        return None
    if not isinstance(value, str):
        raise _bad(key, "must be a string")
    if len(value) > limit:
        raise _bad(key, f"is longer than {limit} characters")
    return value


def _number(obj: dict[str, Any], key: str, low: float, high: float) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(key, "must be a number")
    try:
        number = float(value)
    except OverflowError:  # a JSON integer too big for a float
        number = math.inf
    if not math.isfinite(number) or not low <= number <= high:
        raise _bad(key, f"must be between {low} and {high}")
    return number


def _only(obj: dict[str, Any], allowed: set[str]) -> None:
    extra = set(obj) - allowed - {"type"}
    if extra:
        raise _bad(sorted(extra)[0], "is not a field of this message")


def decode(frame: str | bytes) -> dict[str, Any]:
    """Bytes or text off the socket -> a JSON object, or ProtocolError."""
    if isinstance(frame, bytes):
        raise ProtocolError(ErrorCode.BAD_FRAME, "frames must be JSON text, not binary")
    # A character is at most 4 bytes in UTF-8: only frames near the limit need encoding.
    if len(frame) > MAX_FRAME_BYTES or (
        len(frame) * 4 > MAX_FRAME_BYTES and len(frame.encode()) > MAX_FRAME_BYTES
    ):
        raise ProtocolError(ErrorCode.TOO_LARGE, f"frames are limited to {MAX_FRAME_BYTES} bytes")
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError:
        # orjson is stricter than JSON as browsers write it (NaN, huge integers): let the
        # standard parser decide, so such frames get the precise field error they always got.
        try:
            obj = json.loads(frame)
            # A lone surrogate ("\ud800") could never be sent on: refuse it here.
            json.dumps(obj, ensure_ascii=False).encode()
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(ErrorCode.BAD_JSON, "frame is not valid JSON") from exc
    if deeper_than(obj):
        raise ProtocolError(ErrorCode.BAD_JSON,
                            f"frame is nested more than {MAX_JSON_DEPTH} levels deep")
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_JSON, "frame must be a JSON object")
    if not isinstance(obj.get("type"), str):
        raise _bad("type", "is required")
    return obj


def parse(frame: str | bytes) -> ClientMessage:
    obj = decode(frame)
    kind = obj["type"]
    parser = _PARSERS.get(kind)
    if parser is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind[:32]!r}")
    return parser(obj)


def _hello(obj: dict[str, Any]) -> Hello:
    _only(obj, {"v", "credential", "session", "resume", "replaces"})
    v = obj.get("v")
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad("v", "must be the protocol version number")
    if v != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.BAD_VERSION, f"protocol version {PROTOCOL_VERSION} is spoken here"
        )
    credential = _str(obj, "credential", 128, required=False)
    session = _str(obj, "session", MAX_ID_CHARS, required=False)
    resume = None
    raw = obj.get("resume")
    if raw is not None:
        if not isinstance(raw, dict):
            raise _bad("resume", "must be an object")
        pid = _str(raw, "pid", MAX_ID_CHARS)
        secret = _str(raw, "secret", 128)
        last_seq = raw.get("last_seq")
        if isinstance(last_seq, bool) or not isinstance(last_seq, int) or last_seq < 0:
            raise _bad("resume.last_seq", "must be a whole number >= 0")
        assert pid is not None and secret is not None
        resume = Resume(pid, secret, last_seq)
    return Hello(v, credential, session, resume, _place(obj.get("replaces")))


def _place(raw: Any) -> Place | None:
    """`hello.replaces`: the pid and resume secret of the place this page had before."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _bad("replaces", "must be an object")
    _only(raw, {"pid", "secret"})
    pid = _str(raw, "pid", MAX_ID_CHARS)
    secret = _str(raw, "secret", 128)
    assert pid is not None and secret is not None
    return Place(pid, secret)


def _description(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _bad("description", "must be an object")
    _only(raw, {"type", "sdp"})
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in SDP_TYPES:  # a list or object is unhashable
        raise _bad("description.type", "must be offer, answer, pranswer or rollback")
    sdp = _str(raw, "sdp", MAX_SDP_CHARS, required=kind != "rollback") or ""
    return {"type": kind, "sdp": sdp}


def _candidate(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _bad("candidate", "must be an object")
    _only(raw, {"candidate", "sdpMid", "sdpMLineIndex", "usernameFragment"})
    candidate = _str(raw, "candidate", MAX_CANDIDATE_CHARS)
    mid = _str(raw, "sdpMid", MAX_ID_CHARS, required=False)
    index = raw.get("sdpMLineIndex")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int)
                              or not 0 <= index < 64):
        raise _bad("candidate.sdpMLineIndex", "must be a small whole number or null")
    ufrag = _str(raw, "usernameFragment", 256, required=False)
    return {"candidate": candidate, "sdpMid": mid, "sdpMLineIndex": index,
            "usernameFragment": ufrag}


def _signal(obj: dict[str, Any]) -> Signal:
    _only(obj, {"to", "description", "candidate"})
    to = _str(obj, "to", MAX_ID_CHARS)
    assert to is not None
    has_description = obj.get("description") is not None
    has_candidate = "candidate" in obj
    if has_description == has_candidate:
        raise _bad("signal", "carries exactly one of description or candidate")
    if has_description:
        return Signal(to, _description(obj["description"]), None)
    # A null candidate is the end-of-candidates marker; pass it on as an empty one.
    raw = obj["candidate"]
    candidate = {"candidate": "", "sdpMid": None, "sdpMLineIndex": None} if raw is None \
        else _candidate(raw)
    return Signal(to, None, candidate)


def _cid(obj: dict[str, Any]) -> str | None:
    """A client's id for its own message: it knows the message arrived when it is echoed."""
    cid = _str(obj, "cid", MAX_CID_CHARS, required=False)
    if cid is not None and not (cid.isascii() and cid.isalnum()):
        raise _bad("cid", "must be letters and digits")
    return cid


def _chat(obj: dict[str, Any]) -> Chat:
    _only(obj, {"text", "canned", "cid"})
    text = _str(obj, "text", MAX_CHAT_CHARS, required=False)
    canned = _str(obj, "canned", MAX_ID_CHARS, required=False)
    if (text is None) == (canned is None):
        raise _bad("chat", "carries exactly one of text or canned")
    if text is not None and not text.strip():
        raise _bad("text", "is empty")
    if canned is not None and canned not in CANNED_REPLIES:
        raise _bad("canned", "is not a known quick reply")
    return Chat(text, canned, _cid(obj))


def _advice(obj: dict[str, Any]) -> Advice:
    _only(obj, {"text", "cid"})
    text = _str(obj, "text", MAX_ADVICE_CHARS)
    assert text is not None
    if not text.strip():
        raise _bad("text", "is empty")
    return Advice(text, _cid(obj))


def _location(obj: dict[str, Any]) -> Location:
    _only(obj, {"lat", "lon", "accuracy", "ts"})
    return Location(
        lat=_number(obj, "lat", -90, 90),
        lon=_number(obj, "lon", -180, 180),
        accuracy=_number(obj, "accuracy", 0, 1_000_000),
        ts=_number(obj, "ts", 0, 1e13),
    )


def _control(obj: dict[str, Any]) -> Control:
    op = _str(obj, "op", 32)
    assert op is not None
    args = {k: v for k, v in obj.items() if k not in {"type", "op"}}
    if len(args) > 8:
        raise _bad("control", "has too many fields")
    return Control(op, args)


def _ping(obj: dict[str, Any]) -> Ping:
    _only(obj, set())
    return Ping()


_PARSERS: dict[str, Callable[[dict[str, Any]], ClientMessage]] = {
    "hello": _hello,
    "signal": _signal,
    "chat": _chat,
    "advice": _advice,
    "location": _location,
    "control": _control,
    "ping": _ping,
}

CLIENT_TYPES = tuple(_PARSERS)
SERVER_TYPES = (
    "welcome", "signal", "peer", "chat", "advice", "location", "status", "invitation",
    "call_mode", "still", "error", "bye", "pong", "waiting", "caller_device",
)
# Sent outside the per-participant sequence: they concern this connection, not the session.
UNSEQUENCED_TYPES = frozenset({"welcome", "error", "bye", "pong", "waiting"})


def encode(message: dict[str, Any]) -> str:
    """Compact JSON text (UTF-8, not ASCII-escaped), as every server frame is sent."""
    return orjson.dumps(message).decode()


def error_frame(code: ErrorCode, message: str, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "code": code.value, "message": message, **extra}
