"""Hypothesis strategies for the fuzz tests: socket frames and HTTP bodies, from well-formed
to hostile.

Frames mix every client message type (and unknown ones) with fields that are right, wrong in
type, out of range, huge, deeply nested or extra; raw JSON of every other shape; truncated
frames, arbitrary text and binary frames; frames at and over the size limits. Bodies mix
plausible JSON objects for the routes with every other kind of JSON, broken JSON, undecodable
bytes, deep nesting and sizes around the limit, under assorted content types.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from signaling.json_depth import MAX_JSON_DEPTH
from signaling.protocol import CANNED_REPLIES, CLIENT_TYPES, MAX_FRAME_BYTES, SDP_TYPES

SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63)
           | st.floats() | st.text(max_size=40))
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=8,
)
# Words the server knows somewhere, so the fuzz reaches past the first lookup.
CONTROL_OPS = ("media", "consent", "capture", "rung", "end", "invite_specialist",
               "cancel_specialist", "resend_link", "revoke_link", "call_mode", "caller_media",
               "accept", "decline", "available", "leave", "admit_device", "refuse_device",
               "keep_caller", "")
CONTROL_ARGS = ("reason", "username", "phone_line", "state", "peer", "value", "invitation",
                "camera", "microphone", "location", "rung", "device", "admit", "keep_caller")
STATES = ("connected", "disconnected", "failed", "ok", "off", "denied", "busy", "flowing",
          "frozen", "full", "reduced", "stills", "chat", "weak_network", "recovered")


LIFECYCLE = (
    {"type": "control", "op": "end"}, {"type": "control", "op": "revoke_link"},
    {"type": "control", "op": "resend_link"}, {"type": "control", "op": "leave"},
    {"type": "control", "op": "invite_specialist", "username": "sofia"},
    {"type": "control", "op": "available", "value": True},
    {"type": "control", "op": "call_mode", "phone_line": False},
    {"type": "chat", "canned": "safe_now"},
)


def nested_text(depth: int, kind: str = "[") -> str:
    close = {"[": "]", "{": "}"}[kind]
    if kind == "{":
        return '{"a":' * depth + "1" + "}" * depth
    return kind * depth + close * depth


def deep_value(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


DEEP = st.integers(min_value=MAX_JSON_DEPTH - 2, max_value=400).map(deep_value)


def loose(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value, sometimes anything JSON can hold, now and then too deep."""
    return st.one_of(*[plausible] * 8, JSON_VALUES, JSON_VALUES, DEEP)


CIDS = st.from_regex(r"[A-Za-z0-9]{1,34}", fullmatch=True) | st.text(max_size=40)


def _texts(limit: int) -> st.SearchStrategy[str]:
    words = st.from_regex(r"[A-Za-z][A-Za-z ]{0,30}", fullmatch=True)
    return st.one_of(words, st.text(max_size=60),
                     st.integers(limit - 2, limit + 2).map(lambda n: "é" * n))


def frames(pids: Sequence[str], credentials: Sequence[str]) -> st.SearchStrategy[str | bytes]:
    """One client frame. `pids` are peers to address (this session's and others'),
    `credentials` real credentials the fuzz may present in a hello."""
    pid = st.sampled_from(list(pids)) | st.text(max_size=70)
    fields: dict[str, dict[str, st.SearchStrategy[Any]]] = {
        "hello": {
            "v": st.sampled_from([1, 1, 0, 2, "1", True]),
            "credential": st.sampled_from(list(credentials)) | st.text(max_size=140),
            "session": st.text(max_size=70),
            "resume": st.fixed_dictionaries({"pid": loose(pid), "secret": loose(st.text()),
                                             "last_seq": loose(st.integers())}),
            "replaces": st.fixed_dictionaries({"pid": loose(pid), "secret": loose(st.text())}),
        },
        "signal": {
            "to": pid,
            "description": st.fixed_dictionaries({
                "type": loose(st.sampled_from(sorted(SDP_TYPES))),
                "sdp": loose(st.text(max_size=200) | _texts(60 * 1024))}),
            "candidate": st.none() | st.fixed_dictionaries({
                "candidate": loose(st.text(max_size=120)), "sdpMid": loose(st.text(max_size=4)),
                "sdpMLineIndex": loose(st.integers(-2, 70))}),
        },
        "chat": {"text": _texts(2000), "canned": st.sampled_from(list(CANNED_REPLIES)),
                 "cid": CIDS},
        "advice": {"text": _texts(4000), "cid": CIDS},
        "location": {"lat": st.floats(-95, 95) | st.floats(), "lon": st.floats(-185, 185),
                     "accuracy": st.floats(0, 2e6) | st.floats(),
                     "ts": st.floats(0, 2e13) | st.integers()},
        "control": {"op": st.sampled_from(CONTROL_OPS) | st.text(max_size=40),
                    **{name: st.sampled_from(STATES) | st.booleans() | pid
                       for name in CONTROL_ARGS}},
        "ping": {},
    }

    @st.composite
    def shaped(draw: st.DrawFn) -> dict[str, Any]:
        kind = draw(st.sampled_from([*CLIENT_TYPES, *CLIENT_TYPES, "shout", "welcome", ""]))
        known = fields.get(kind, {})
        chosen = draw(st.lists(st.sampled_from(sorted(known)), unique=True, max_size=5)) \
            if known else []
        # Half the messages are careful (every field plausible), half sloppy.
        sloppy = draw(st.booleans())
        message: dict[str, Any] = {"type": draw(loose(st.just(kind))) if sloppy else kind}
        for name in chosen:
            message[name] = draw(loose(known[name]) if sloppy else known[name])
        if sloppy and draw(st.integers(0, 4)) == 0:
            message[draw(st.text(max_size=12))] = draw(JSON_VALUES)
        return message

    def as_text(message: Any) -> str:
        return json.dumps(message, ensure_ascii=False)

    shaped_text = shaped().map(as_text)
    others = st.one_of(
        # What changes the call itself: the fuzz must carry on after each.
        st.sampled_from(LIFECYCLE).map(as_text),
        # JSON of every other shape, and JSON only Python writes (NaN).
        JSON_VALUES.map(as_text),
        # Cut short, or with junk around it.
        st.tuples(shaped_text, st.integers(0, 200)).map(lambda t: t[0][: t[1]]),
        st.tuples(st.text(max_size=8), shaped_text).map(lambda t: t[0] + t[1]),
        st.text(max_size=200),
        st.binary(max_size=200),
        # Deep nesting, bare and inside a message.
        st.integers(MAX_JSON_DEPTH - 1, 30_000).map(nested_text),
        st.integers(MAX_JSON_DEPTH - 1, 3_000).map(lambda n: nested_text(n, "{")),
        st.integers(MAX_JSON_DEPTH - 2, 2_000).map(
            lambda n: '{"type":"chat","text":' + nested_text(n) + "}"),
        # Around the 64 KiB frame limit, in characters and in bytes.
        st.sampled_from(["a", "é", "€"]).flatmap(lambda c: st.integers(
            MAX_FRAME_BYTES // len(c.encode()) - 40, MAX_FRAME_BYTES // len(c.encode()) + 10,
        ).map(lambda n: json.dumps({"type": "chat", "text": c * n}, ensure_ascii=False))),
    )
    return weighted(shaped_text, others, 70)


def weighted(first: st.SearchStrategy[Any], second: st.SearchStrategy[Any],
             percent: int) -> st.SearchStrategy[Any]:
    """`first` about `percent` times in a hundred, else `second` (one_of is not uniform)."""
    return st.integers(0, 99).flatmap(lambda n: first if n < percent else second)


# -- HTTP bodies --------------------------------------------------------------------------

BODY_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "incident_ref": st.text(max_size=50) | st.from_regex(r"CAD-[0-9]{1,6}", fullmatch=True),
    "phone": st.sampled_from(["07911 123456", "+447911123456", "999", ""]) | st.text(),
    "language": st.sampled_from(["en", "cy", "pl", "xx"]) | st.text(max_size=10),
    "phone_line": st.booleans(),
    "reason": st.text(max_size=50),
    "username": st.sampled_from(["sofia", "nobody"]) | st.text(max_size=20),
    "available": st.booleans(),
    "form": st.sampled_from(["dash", "thrive", "nope"]),
    "answers": st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=6),
    "reason_for_change": st.text(max_size=100),
    "agency": st.text(max_size=220),
    "notes": st.text(max_size=100) | st.integers(1990, 2010).map(lambda n: "n" * n),
    "safe_windows": JSON_VALUES,
    "pid": st.text(max_size=70),
    "secret": st.text(max_size=130),
    "keep_caller": st.booleans(),
}
CONTENT_TYPES = (
    "application/json", "application/json", "application/json",
    "application/json; charset=utf-8", "application/json; charset=latin-1",
    "application/json; charset=no-such-charset", "text/plain", "",
    "application/x-www-form-urlencoded", "multipart/form-data",
    "multipart/form-data; boundary=x", "application/octet-stream",
)


@st.composite
def _plausible_body(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(sorted(BODY_FIELDS)), unique=True, max_size=5))
    sloppy = draw(st.booleans())
    return {name: draw(loose(BODY_FIELDS[name]) if sloppy else BODY_FIELDS[name])
            for name in names}


def body_values() -> st.SearchStrategy[Any]:
    return weighted(_plausible_body(), JSON_VALUES, 75)


def bodies() -> st.SearchStrategy[bytes]:
    """A request body as bytes."""
    encoded = body_values().map(lambda v: json.dumps(v, ensure_ascii=False).encode(
        "utf-8", "surrogatepass"))
    return st.one_of(
        encoded, encoded, encoded, encoded,
        st.tuples(encoded, st.integers(0, 100)).map(lambda t: t[0][: t[1]]),
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.integers(MAX_JSON_DEPTH - 1, 100_000).map(lambda n: nested_text(n).encode()),
        st.integers(MAX_JSON_DEPTH - 2, 5_000).map(
            lambda n: ('{"phone":' + nested_text(n) + "}").encode()),
        st.integers(256 * 1024 - 30, 256 * 1024 + 30).map(
            lambda n: json.dumps({"notes": "x" * n}).encode()),
        st.just(b""),
    )
