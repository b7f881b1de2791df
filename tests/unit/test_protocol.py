"""signaling.protocol.parse: every client message, valid and invalid, with stable error codes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from signaling.protocol import (
    CANNED_REPLIES,
    CLIENT_TYPES,
    MAX_ADVICE_CHARS,
    MAX_CANDIDATE_CHARS,
    MAX_CHAT_CHARS,
    MAX_FRAME_BYTES,
    MAX_SDP_CHARS,
    PROTOCOL_VERSION,
    Advice,
    Chat,
    Control,
    ErrorCode,
    Hello,
    Location,
    Ping,
    ProtocolError,
    Resume,
    Signal,
    error_frame,
    parse,
)


def frame(**fields: Any) -> str:
    return json.dumps(fields)


def refused(raw: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse(raw)
    return info.value


# --- stable codes ------------------------------------------------------------------------------


def test_error_codes_have_stable_wire_values() -> None:
    """Clients switch on these strings; renaming one is a protocol break."""
    assert {code.name: code.value for code in ErrorCode}.items() >= {
        "BAD_JSON": "bad_json",
        "BAD_FRAME": "bad_frame",
        "TOO_LARGE": "too_large",
        "UNKNOWN_TYPE": "unknown_type",
        "BAD_FIELD": "bad_field",
        "BAD_VERSION": "bad_version",
    }.items()
    assert PROTOCOL_VERSION == 1
    assert set(CLIENT_TYPES) == {"hello", "signal", "chat", "advice", "location", "control",
                                 "ping"}


def test_error_frame_shape() -> None:
    assert error_frame(ErrorCode.BAD_FIELD, "lat: must be a number", ref=3) == {
        "type": "error", "code": "bad_field", "message": "lat: must be a number", "ref": 3,
    }


# --- valid messages ----------------------------------------------------------------------------


def test_hello_minimal() -> None:
    assert parse(frame(type="hello", v=1)) == Hello(1, None, None, None)


def test_hello_with_credential_and_session() -> None:
    message = parse(frame(type="hello", v=1, credential="c" * 128, session="s" * 64))
    assert message == Hello(1, "c" * 128, "s" * 64, None)


def test_hello_with_resume() -> None:
    message = parse(frame(type="hello", v=1, resume={"pid": "p1", "secret": "x", "last_seq": 7}))
    assert message == Hello(1, None, None, Resume("p1", "x", 7))


def test_hello_resume_from_zero() -> None:
    message = parse(frame(type="hello", v=1, resume={"pid": "p", "secret": "s", "last_seq": 0}))
    assert isinstance(message, Hello) and message.resume == Resume("p", "s", 0)


@pytest.mark.parametrize("kind", ["offer", "answer", "pranswer"])
def test_signal_description(kind: str) -> None:
    message = parse(frame(type="signal", to="peer1", description={"type": kind, "sdp": "v=0"}))
    assert message == Signal("peer1", {"type": kind, "sdp": "v=0"}, None)


def test_signal_rollback_needs_no_sdp() -> None:
    message = parse(frame(type="signal", to="p", description={"type": "rollback"}))
    assert message == Signal("p", {"type": "rollback", "sdp": ""}, None)


def test_signal_sdp_at_its_limit() -> None:
    sdp = "a" * MAX_SDP_CHARS
    message = parse(frame(type="signal", to="p", description={"type": "offer", "sdp": sdp}))
    assert isinstance(message, Signal) and message.description == {"type": "offer", "sdp": sdp}


def test_signal_candidate() -> None:
    candidate = {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0",
                 "sdpMLineIndex": 0, "usernameFragment": "abcd"}
    message = parse(frame(type="signal", to="p", candidate=candidate))
    assert message == Signal("p", None, candidate)


def test_signal_candidate_optional_fields_default_to_none() -> None:
    message = parse(frame(type="signal", to="p", candidate={"candidate": "c"}))
    assert message == Signal(
        "p", None,
        {"candidate": "c", "sdpMid": None, "sdpMLineIndex": None, "usernameFragment": None},
    )


def test_signal_null_candidate_is_end_of_candidates() -> None:
    """A null candidate is passed on as the empty end-of-candidates marker."""
    message = parse(frame(type="signal", to="p", candidate=None))
    assert message == Signal("p", None, {"candidate": "", "sdpMid": None, "sdpMLineIndex": None})


def test_signal_null_description_beside_a_candidate_counts_as_absent() -> None:
    message = parse(frame(type="signal", to="p", description=None, candidate={"candidate": "c"}))
    assert isinstance(message, Signal)
    assert message.description is None and message.candidate is not None


def test_chat_text() -> None:
    assert parse(frame(type="chat", text="help")) == Chat("help", None)


def test_chat_text_at_its_limit() -> None:
    assert parse(frame(type="chat", text="x" * MAX_CHAT_CHARS)) == Chat("x" * MAX_CHAT_CHARS, None)


@pytest.mark.parametrize("canned", CANNED_REPLIES)
def test_chat_every_canned_reply(canned: str) -> None:
    assert parse(frame(type="chat", canned=canned)) == Chat(None, canned)


def test_chat_and_advice_carry_the_senders_cid() -> None:
    assert parse(frame(type="chat", text="help", cid="a1B2")) == Chat("help", None, "a1B2")
    assert parse(frame(type="chat", canned="yes", cid="9" * 32)) == Chat(None, "yes", "9" * 32)
    assert parse(frame(type="advice", text="ok", cid="c0ffee")) == Advice("ok", "c0ffee")


def test_advice() -> None:
    assert parse(frame(type="advice", text="Stay on the line")) == Advice("Stay on the line")
    assert parse(frame(type="advice", text="a" * MAX_ADVICE_CHARS)) == Advice(
        "a" * MAX_ADVICE_CHARS
    )


def test_location() -> None:
    message = parse(frame(type="location", lat=51.5, lon=-0.12, accuracy=12.5, ts=1.7e12))
    assert message == Location(51.5, -0.12, 12.5, 1.7e12)


def test_location_bounds_are_inclusive_and_ints_become_floats() -> None:
    message = parse(frame(type="location", lat=-90, lon=180, accuracy=0, ts=0))
    assert message == Location(-90.0, 180.0, 0.0, 0.0)
    assert isinstance(message, Location) and isinstance(message.lat, float)
    assert parse(frame(type="location", lat=90, lon=-180, accuracy=1, ts=1)) == Location(
        90.0, -180.0, 1.0, 1.0
    )


def test_control_keeps_its_arguments() -> None:
    message = parse(frame(type="control", op="invite_specialist", specialist=4, note="x"))
    assert message == Control("invite_specialist", {"specialist": 4, "note": "x"})


def test_control_with_eight_arguments() -> None:
    args = {f"a{i}": i for i in range(8)}
    assert parse(frame(type="control", op="end", **args)) == Control("end", args)


def test_ping() -> None:
    assert parse(frame(type="ping")) == Ping()


def test_whitespace_and_key_order_do_not_matter() -> None:
    assert parse('  {"v": 1,\n "type": "hello"}  ') == Hello(1, None, None, None)


# --- framing errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["", "not json", "{", '{"type": "ping"', "{'type': 'ping'}", "[" * 60_000],
    ids=["empty", "words", "open-brace", "unclosed", "single-quotes", "deep-nesting"],
)
def test_non_json_is_bad_json(raw: str) -> None:
    assert refused(raw).code.value == "bad_json"


@pytest.mark.parametrize("raw", ["[]", '[{"type": "ping"}]', '"ping"', "42", "null", "true"])
def test_non_object_is_bad_json(raw: str) -> None:
    assert refused(raw).code.value == "bad_json"


@pytest.mark.parametrize("raw", [b'{"type": "ping"}', b"", bytearray(b"{}")])
def test_binary_frame_is_bad_frame(raw: bytes) -> None:
    assert refused(bytes(raw)).code.value == "bad_frame"


def _padded_ping(total_bytes: int) -> str:
    base = '{"type":"ping"}'
    return base + " " * (total_bytes - len(base))


def test_frame_of_exactly_64_kib_is_accepted() -> None:
    raw = _padded_ping(MAX_FRAME_BYTES)
    assert MAX_FRAME_BYTES == 64 * 1024 and len(raw.encode()) == MAX_FRAME_BYTES
    assert parse(raw) == Ping()


def test_frame_just_under_64_kib_is_accepted() -> None:
    assert parse(_padded_ping(MAX_FRAME_BYTES - 1)) == Ping()


def test_frame_one_byte_over_64_kib_is_too_large() -> None:
    assert refused(_padded_ping(MAX_FRAME_BYTES + 1)).code.value == "too_large"


def test_frame_limit_counts_utf8_bytes_not_characters() -> None:
    raw = '{"type": "ping", "pad": "' + "é" * 40_000 + '"}'  # ~40k characters, ~80k bytes
    assert len(raw) < MAX_FRAME_BYTES < len(raw.encode())
    assert refused(raw).code.value == "too_large"


def test_too_large_is_checked_before_json() -> None:
    assert refused("x" * (MAX_FRAME_BYTES + 1)).code.value == "too_large"


# --- type errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["nope", "welcome", "error", "HELLO", "", "x" * 500])
def test_unknown_type(kind: str) -> None:
    error = refused(frame(type=kind))
    assert error.code.value == "unknown_type"
    assert len(error.message) < 100  # the echoed type is cut short


@pytest.mark.parametrize("raw", ["{}", frame(v=1), frame(type=1), frame(type=None),
                                 frame(type=["hello"])])
def test_missing_or_non_string_type_is_bad_field(raw: str) -> None:
    error = refused(raw)
    assert error.code.value == "bad_field"
    assert error.message.startswith("type")


# --- hello -------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", [0, 2, 99, -1])
def test_hello_other_version_is_bad_version(v: int) -> None:
    assert refused(frame(type="hello", v=v)).code.value == "bad_version"


BAD_FIELDS: list[tuple[str, dict[str, Any], str]] = [
    # hello
    ("hello-no-v", {"type": "hello"}, "v"),
    ("hello-v-string", {"type": "hello", "v": "1"}, "v"),
    ("hello-v-bool", {"type": "hello", "v": True}, "v"),
    ("hello-v-float", {"type": "hello", "v": 1.0}, "v"),
    ("hello-extra", {"type": "hello", "v": 1, "admin": True}, "admin"),
    ("hello-credential-number", {"type": "hello", "v": 1, "credential": 5}, "credential"),
    ("hello-credential-long", {"type": "hello", "v": 1, "credential": "c" * 129}, "credential"),
    ("hello-session-long", {"type": "hello", "v": 1, "session": "s" * 65}, "session"),
    ("hello-resume-string", {"type": "hello", "v": 1, "resume": "p1"}, "resume"),
    ("hello-resume-no-pid",
     {"type": "hello", "v": 1, "resume": {"secret": "s", "last_seq": 0}}, "pid"),
    ("hello-resume-no-secret",
     {"type": "hello", "v": 1, "resume": {"pid": "p", "last_seq": 0}}, "secret"),
    ("hello-resume-no-seq",
     {"type": "hello", "v": 1, "resume": {"pid": "p", "secret": "s"}}, "resume.last_seq"),
    ("hello-resume-negative-seq",
     {"type": "hello", "v": 1, "resume": {"pid": "p", "secret": "s", "last_seq": -1}},
     "resume.last_seq"),
    ("hello-resume-bool-seq",
     {"type": "hello", "v": 1, "resume": {"pid": "p", "secret": "s", "last_seq": True}},
     "resume.last_seq"),
    ("hello-resume-float-seq",
     {"type": "hello", "v": 1, "resume": {"pid": "p", "secret": "s", "last_seq": 1.5}},
     "resume.last_seq"),
    # signal
    ("signal-neither", {"type": "signal", "to": "p"}, "signal"),
    ("signal-null-description-only", {"type": "signal", "to": "p", "description": None},
     "signal"),
    ("signal-both",
     {"type": "signal", "to": "p", "description": {"type": "offer", "sdp": "v=0"},
      "candidate": {"candidate": "c"}}, "signal"),
    ("signal-both-null-candidate",
     {"type": "signal", "to": "p", "description": {"type": "offer", "sdp": "v=0"},
      "candidate": None}, "signal"),
    ("signal-no-to", {"type": "signal", "candidate": None}, "to"),
    ("signal-to-number", {"type": "signal", "to": 3, "candidate": None}, "to"),
    ("signal-to-long", {"type": "signal", "to": "p" * 65, "candidate": None}, "to"),
    ("signal-extra", {"type": "signal", "to": "p", "candidate": None, "from": "x"}, "from"),
    ("signal-description-string", {"type": "signal", "to": "p", "description": "v=0"},
     "description"),
    ("signal-description-bad-type",
     {"type": "signal", "to": "p", "description": {"type": "bogus", "sdp": "v=0"}},
     "description.type"),
    ("signal-description-no-type", {"type": "signal", "to": "p", "description": {"sdp": "v"}},
     "description.type"),
    ("signal-offer-without-sdp", {"type": "signal", "to": "p", "description": {"type": "offer"}},
     "sdp"),
    ("signal-sdp-number",
     {"type": "signal", "to": "p", "description": {"type": "answer", "sdp": 1}}, "sdp"),
    ("signal-sdp-too-long",
     {"type": "signal", "to": "p", "description": {"type": "offer", "sdp": "a" * (MAX_SDP_CHARS
                                                                                  + 1)}}, "sdp"),
    ("signal-description-extra",
     {"type": "signal", "to": "p", "description": {"type": "offer", "sdp": "v", "x": 1}}, "x"),
    ("signal-candidate-string", {"type": "signal", "to": "p", "candidate": "candidate:1"},
     "candidate"),
    ("signal-candidate-empty-object", {"type": "signal", "to": "p", "candidate": {}},
     "candidate"),
    ("signal-candidate-too-long",
     {"type": "signal", "to": "p", "candidate": {"candidate": "c" * (MAX_CANDIDATE_CHARS + 1)}},
     "candidate"),
    ("signal-candidate-index-64",
     {"type": "signal", "to": "p", "candidate": {"candidate": "c", "sdpMLineIndex": 64}},
     "candidate.sdpMLineIndex"),
    ("signal-candidate-index-negative",
     {"type": "signal", "to": "p", "candidate": {"candidate": "c", "sdpMLineIndex": -1}},
     "candidate.sdpMLineIndex"),
    ("signal-candidate-index-bool",
     {"type": "signal", "to": "p", "candidate": {"candidate": "c", "sdpMLineIndex": False}},
     "candidate.sdpMLineIndex"),
    ("signal-candidate-index-string",
     {"type": "signal", "to": "p", "candidate": {"candidate": "c", "sdpMLineIndex": "0"}},
     "candidate.sdpMLineIndex"),
    ("signal-candidate-mid-number",
     {"type": "signal", "to": "p", "candidate": {"candidate": "c", "sdpMid": 0}}, "sdpMid"),
    ("signal-candidate-extra",
     {"type": "signal", "to": "p", "candidate": {"candidate": "c", "foundation": "1"}},
     "foundation"),
    # chat
    ("chat-neither", {"type": "chat"}, "chat"),
    ("chat-both-null", {"type": "chat", "text": None, "canned": None}, "chat"),
    ("chat-both", {"type": "chat", "text": "hi", "canned": "yes"}, "chat"),
    ("chat-unknown-canned", {"type": "chat", "canned": "call_me_back"}, "canned"),
    ("chat-canned-number", {"type": "chat", "canned": 1}, "canned"),
    ("chat-empty-text", {"type": "chat", "text": ""}, "text"),
    ("chat-blank-text", {"type": "chat", "text": " \n\t "}, "text"),
    ("chat-text-too-long", {"type": "chat", "text": "x" * (MAX_CHAT_CHARS + 1)}, "text"),
    ("chat-text-list", {"type": "chat", "text": ["hi"]}, "text"),
    ("chat-extra", {"type": "chat", "text": "hi", "to": "p"}, "to"),
    ("chat-cid-long", {"type": "chat", "text": "hi", "cid": "a" * 33}, "cid"),
    ("chat-cid-punct", {"type": "chat", "text": "hi", "cid": "a-b"}, "cid"),
    ("chat-cid-unicode", {"type": "chat", "text": "hi", "cid": "ab\u0661"}, "cid"),
    ("chat-cid-empty", {"type": "chat", "text": "hi", "cid": ""}, "cid"),
    ("chat-cid-number", {"type": "chat", "text": "hi", "cid": 7}, "cid"),
    ("advice-cid-bad", {"type": "advice", "text": "ok", "cid": "<b>"}, "cid"),
    # advice
    ("advice-no-text", {"type": "advice"}, "text"),
    ("advice-blank", {"type": "advice", "text": "   "}, "text"),
    ("advice-too-long", {"type": "advice", "text": "a" * (MAX_ADVICE_CHARS + 1)}, "text"),
    ("advice-number", {"type": "advice", "text": 42}, "text"),
    ("advice-extra", {"type": "advice", "text": "ok", "to": "victim"}, "to"),
    # location
    ("location-missing-ts", {"type": "location", "lat": 1, "lon": 1, "accuracy": 1}, "ts"),
    ("location-lat-string",
     {"type": "location", "lat": "51.5", "lon": 0, "accuracy": 1, "ts": 1}, "lat"),
    ("location-lat-bool", {"type": "location", "lat": True, "lon": 0, "accuracy": 1, "ts": 1},
     "lat"),
    ("location-lat-null", {"type": "location", "lat": None, "lon": 0, "accuracy": 1, "ts": 1},
     "lat"),
    ("location-lat-high", {"type": "location", "lat": 90.0001, "lon": 0, "accuracy": 1, "ts": 1},
     "lat"),
    ("location-lat-low", {"type": "location", "lat": -91, "lon": 0, "accuracy": 1, "ts": 1},
     "lat"),
    ("location-lon-high", {"type": "location", "lat": 0, "lon": 180.5, "accuracy": 1, "ts": 1},
     "lon"),
    ("location-lon-low", {"type": "location", "lat": 0, "lon": -181, "accuracy": 1, "ts": 1},
     "lon"),
    ("location-accuracy-negative",
     {"type": "location", "lat": 0, "lon": 0, "accuracy": -1, "ts": 1}, "accuracy"),
    ("location-accuracy-huge",
     {"type": "location", "lat": 0, "lon": 0, "accuracy": 1e7, "ts": 1}, "accuracy"),
    ("location-ts-negative", {"type": "location", "lat": 0, "lon": 0, "accuracy": 1, "ts": -1},
     "ts"),
    ("location-extra",
     {"type": "location", "lat": 0, "lon": 0, "accuracy": 1, "ts": 1, "alt": 3}, "alt"),
    # control
    ("control-no-op", {"type": "control"}, "op"),
    ("control-op-number", {"type": "control", "op": 1}, "op"),
    ("control-op-long", {"type": "control", "op": "o" * 33}, "op"),
    ("control-nine-args", {"type": "control", "op": "end", **{f"a{i}": i for i in range(9)}},
     "control"),
    # ping
    ("ping-extra", {"type": "ping", "ts": 1}, "ts"),
]


@pytest.mark.parametrize(
    ("fields", "named"), [(f, n) for _, f, n in BAD_FIELDS], ids=[i for i, _, _ in BAD_FIELDS]
)
def test_bad_field(fields: dict[str, Any], named: str) -> None:
    """Wrong types, missing or extra fields: bad_field, and the message names the field."""
    error = refused(json.dumps(fields))
    assert error.code.value == "bad_field"
    assert error.message.startswith(f"{named}:"), error.message


@pytest.mark.parametrize("field", ["lat", "lon", "accuracy", "ts"])
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_location_non_finite_numbers_are_bad_field(field: str, value: str) -> None:
    """Python's json accepts NaN and Infinity literals; the parser must not."""
    fields = {"lat": "1", "lon": "1", "accuracy": "1", "ts": "1", field: value}
    raw = '{"type": "location", ' + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"
    error = refused(raw)
    assert error.code.value == "bad_field"
    assert error.message.startswith(f"{field}:")


def test_huge_integer_lat_is_bad_field() -> None:
    error = refused('{"type": "location", "lat": ' + "9" * 400 + ', "lon": 0, "accuracy": 1,'
                    ' "ts": 1}')
    assert error.code.value == "bad_field"


def test_a_lone_surrogate_is_bad_json() -> None:
    """Valid JSON text that names half a UTF-16 pair could never be sent on to a peer."""
    with pytest.raises(ProtocolError) as caught:
        parse('{"type":"chat","text":"\\ud800"}')
    assert caught.value.code is ErrorCode.BAD_JSON
