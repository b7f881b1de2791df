"""Input that once made the server answer 500: deeply nested or undecodable JSON bodies, and
paths with NUL or control bytes, over-long names or broken percent-encoding. Each is a 400
with the usual clear error (JSON under /api/, plain text elsewhere), and the server goes on."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from yarl import URL

from server.json_body import MAX_JSON_BYTES
from signaling.json_depth import MAX_JSON_DEPTH
from tests.support.calls import chat_round_trip, expect_error, open_call
from tests.support.live import LiveServer, StaffClient

# Every route that reads a JSON body, with the role that gets as far as reading it.
JSON_ROUTES = [
    ("/api/sessions", "handler"),
    ("/api/sessions/{session}/end", "handler"),
    ("/api/sessions/{session}/call-mode", "handler"),
    ("/api/sessions/{session}/specialist", "handler"),
    ("/api/me/availability", "specialist"),
    ("/api/sessions/{session}/risk", "handler"),
    ("/api/sessions/{session}/referrals", "handler"),
]


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_in_object(depth: int) -> str:
    return '{"phone": ' + "[" * depth + "1" + "]" * depth + "}"


# (body, content type, expected status, expected error code)
BAD_BODIES = [
    pytest.param(nested(100_000), "application/json", 400, "bad_json", id="nested-100k"),
    pytest.param(nested(5_000), "application/json", 400, "bad_json", id="nested-5k"),
    pytest.param(nested_in_object(MAX_JSON_DEPTH + 1), "application/json", 400, "bad_json",
                 id="one-level-too-deep"),
    pytest.param('{"a": ' * 3000 + "1" + "}" * 3000, "application/json", 400, "bad_json",
                 id="nested-objects"),
    pytest.param(b'{"phone": "\xff\xfe"}', "application/json", 400, "bad_json",
                 id="not-utf-8"),
    pytest.param('{"phone": NaN}', "application/json", 400, "bad_json", id="nan"),
    pytest.param('{"phone": "\\ud800"}', "application/json", 400, "bad_json",
                 id="lone-surrogate"),
    pytest.param(json.dumps({"pad": "x" * MAX_JSON_BYTES}), "application/json", 413,
                 "too_large", id="over-the-size-limit"),
]


async def _clients(live: LiveServer) -> tuple[dict[str, StaffClient], str]:
    staff = {
        "handler": await live.staff_client("hannah", "handler"),
        "specialist": await live.staff_client("sasha", "specialist"),
    }
    session = await staff["handler"].create_session()
    return staff, session


async def _post(client: StaffClient, path: str, body: str | bytes,
                content_type: str) -> tuple[int, str, str]:
    async with client.http.post(
        f"{client.server.url}{path}", data=body,
        headers={"X-CSRF-Token": client.csrf, "Content-Type": content_type,
                 "Origin": client.server.url},
    ) as response:
        return response.status, response.content_type, await response.text()


@pytest.mark.parametrize(("body", "content_type", "status", "code"), BAD_BODIES)
async def test_a_bad_json_body_is_a_clear_400_on_every_json_route(
    live: LiveServer, body: str | bytes, content_type: str, status: int, code: str
) -> None:
    staff, session = await _clients(live)
    for template, role in JSON_ROUTES:
        path = template.format(session=session)
        got, kind, text = await _post(staff[role], path, body, content_type)
        assert (got, kind) == (status, "application/json"), (path, got, text[:200])
        answer = json.loads(text)
        assert answer["error"] == code and answer["message"], (path, answer)
    # Nothing was lost and the server goes on: the session is there and a good body works.
    await staff["handler"].api("POST", f"/api/sessions/{session}/call-mode",
                               {"phone_line": False}, expect=200)


@pytest.mark.parametrize("charset", ["no-such-charset", "utf-16", "latin-1"])
async def test_a_json_body_is_read_as_utf_8_whatever_charset_it_names(
    live: LiveServer, charset: str
) -> None:
    staff, _ = await _clients(live)
    body = json.dumps({"incident_ref": "CAD-7", "phone": "07911 123456"}).encode()
    status, _, text = await _post(staff["handler"], "/api/sessions", body,
                                  f"application/json; charset={charset}")
    assert status == 201, text
    assert json.loads(text)["session"]["incident_ref"] == "CAD-7"


async def test_json_nested_to_the_limit_is_still_read(live: LiveServer) -> None:
    staff, _ = await _clients(live)
    value: Any = "07911 123456"
    for _ in range(MAX_JSON_DEPTH - 1):
        value = [value]
    status, body = await staff["handler"].api("POST", "/api/sessions",
                                              {"incident_ref": "CAD-9", "phone": value})
    # Read, then refused for what it says (the phone is not a string), not for its shape.
    assert (status, body["error"]) == (400, "bad_field"), body


@pytest.mark.parametrize("body", [
    pytest.param(nested(100_000), id="nested-100k"),
    pytest.param('{"pid": ' + nested(MAX_JSON_DEPTH + 1) + "}", id="one-level-too-deep"),
    pytest.param(b'{"pid": "\xff"}', id="not-utf-8"),
])
async def test_leaving_over_http_with_a_bad_body_is_a_400(live: LiveServer,
                                                          body: str | bytes) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{live.url}/ws/leave", data=body,
                             headers={"Content-Type": "application/json"}) as response:
            assert response.status == 400, await response.text()
            assert (await response.json())["error"] in ("bad_json", "bad_field")


async def test_a_deeply_nested_frame_is_bad_json_and_the_call_goes_on(live: LiveServer) -> None:
    call = await open_call(live, "hannah")
    deep: Any = "connected"
    for _ in range(MAX_JSON_DEPTH):
        deep = [deep]
    for frame in (
        {"type": "control", "op": "media", "state": "connected", "peer": deep},
        {"type": "chat", "text": deep},
        {"type": "signal", "to": call.handler.pid, "description": deep},
    ):
        await call.caller.send(frame)
        error = await expect_error(call.caller, "bad_json")
        assert "nested" in error["message"], error
    await call.caller.ws.send_str("[" * 30_000 + "]" * 30_000)
    await expect_error(call.caller, "bad_json")
    await chat_round_trip(call.caller, call.handler, "still here")


# Paths that reach the file system (or look as if they might): each must be a 400.
BAD_PATHS = [
    pytest.param("/static/js/%00.js", id="nul"),
    pytest.param("/static/%00", id="bare-nul"),
    pytest.param("/static/js/signal.js%00.png", id="nul-before-suffix"),
    pytest.param("/static/a%01b", id="control-byte"),
    pytest.param("/static/a%1fb", id="unit-separator"),
    pytest.param("/static/a%7fb", id="delete"),
    pytest.param("/static/a%0d%0aSet-Cookie:x", id="crlf"),
    pytest.param("/static/a%c2%85b", id="c1-control"),
    pytest.param("/static/" + "a" * 300, id="over-long-name"),
    pytest.param("/static/" + "/".join(["abcdefgh"] * 300), id="over-long-path"),
    pytest.param("/static/%zz", id="bad-percent"),
    pytest.param("/static/js/%e", id="truncated-percent"),
    pytest.param("/static/%ff", id="percent-not-utf-8"),
    pytest.param("/static/%c0%ae%c0%ae/server/config.py", id="overlong-utf-8"),
    pytest.param("/api/sessions/%00/evidence/abc", id="evidence-nul"),
    pytest.param("/api/sessions/abc/stills/%zz", id="still-bad-percent"),
    pytest.param("/records/%00", id="record-nul"),
    pytest.param("/j/%00", id="link-nul"),
]


@pytest.mark.parametrize("path", BAD_PATHS)
async def test_a_hostile_path_is_a_400(live: LiveServer, path: str) -> None:
    staff = await live.staff_client("sam", "supervisor")
    async with staff.http.get(URL(f"{live.url}{path}", encoded=True),
                              headers={"Accept": "application/json"}) as response:
        text = await response.text()
        assert response.status == 400, (path, response.status, text[:200])
        if path.startswith("/api/"):
            assert (await response.json())["error"] == "bad_path"
        else:
            assert response.content_type == "text/plain" and "address" in text, text
    # Still serving, and the real file is still there.
    async with staff.http.get(f"{live.url}/static/js/signal.js") as response:
        assert response.status == 200


@pytest.mark.parametrize("value", [["offer"], {"offer": 1}], ids=["list", "object"])
async def test_a_description_type_that_is_not_a_string_is_bad_field(
    live: LiveServer, value: Any
) -> None:
    """Found by the fuzz (test_fuzz.py): a list or object as `description.type` was looked up
    in a set, raised TypeError, and the caller got `unavailable` instead of `bad_field`."""
    call = await open_call(live, "hannah")
    await call.caller.send({"type": "signal", "to": call.handler.pid,
                            "description": {"type": value, "sdp": ""}})
    await expect_error(call.caller, "bad_field")
    await chat_round_trip(call.caller, call.handler, "still here")


@pytest.mark.parametrize("content_type", [
    "multipart/form-data", "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded; charset=no-such-charset",
], ids=["no-boundary", "wrong-boundary", "unknown-charset"])
async def test_a_form_that_cannot_be_read_is_a_400(live: LiveServer, content_type: str) -> None:
    """Found by the fuzz (test_fuzz.py): aiohttp's form parser raised ValueError or
    LookupError, in the CSRF check and on every form route: a 500."""
    staff = await live.staff_client("hannah", "handler")
    session = await staff.create_session()
    body = b"csrf_token=x&username=a&password=b\xff"
    anonymous = live.new_http()
    for http, path in ((anonymous, "/login"), (staff.http, "/console/sessions"),
                       (staff.http, f"/api/sessions/{session}/end"),
                       (anonymous, "/j/" + "a" * 43)):
        async with http.post(f"{live.url}{path}", data=body, allow_redirects=False,
                             headers={"Content-Type": content_type}) as response:
            text = await response.text()
            assert response.status in (400, 404), (path, response.status, text[:200])
            if path.startswith("/api/"):
                assert (await response.json())["error"] == "bad_request"
    await staff.api("POST", f"/api/sessions/{session}/call-mode", {"phone_line": False},
                    expect=200)
