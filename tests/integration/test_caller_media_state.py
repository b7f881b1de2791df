"""What the control room is told about the caller's media, over real sockets on both stores:
the caller's capture and rung reports, the handler's view of what arrives, the phone-line
mode, presence (away, left), the sessions list, and the case record of each change."""

from __future__ import annotations

from typing import Any

from server import keys
from server.caller_state import CAPTURE_STATES, MEDIA_STATES, RUNG_REASONS, RUNGS
from tests.support.calls import Call, barrier, bring_specialist, expect_error, open_call
from tests.support.live import LiveServer, SignalClient

OK = {"camera": "ok", "microphone": "not_asked", "location": "ok"}


async def status_where(client: SignalClient, **caller: Any) -> dict[str, Any]:
    """The next status whose `caller` has these fields (earlier statuses are skipped)."""
    while True:
        status = await client.expect("status")
        if all(status["caller"].get(k) == v for k, v in caller.items()):
            return status


async def record_kinds(live: LiveServer, session_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(e.header.kind, e.body) for e in await live.app[keys.RECORD].read(session_id)]


async def listed(live: LiveServer, staff: Any, session_id: str) -> dict[str, Any]:
    _, body = await staff.api("GET", "/api/sessions", expect=200)
    return next(s for s in body["sessions"] if s["id"] == session_id)


async def test_capture_and_rung_reach_the_staff_and_the_record(live: LiveServer) -> None:
    call = await open_call(live, "hannah")
    await call.caller.send({"type": "control", "op": "capture", **OK})
    status = await status_where(call.handler, capture=OK)
    assert status["caller"]["present"] is True
    await call.caller.send({"type": "control", "op": "rung", "rung": "stills", "reason": "no_turn"})
    status = await status_where(call.handler, rung="stills")
    assert status["caller"]["rung_reason"] == "no_turn"
    assert status["caller"]["state"] == "stills"
    # The same report again changes nothing: no new status, no new record entry.
    await call.caller.send({"type": "control", "op": "rung", "rung": "stills", "reason": "no_turn"})
    await call.caller.send({"type": "control", "op": "capture", **OK})
    await barrier(call.caller)
    await call.handler.send({"type": "chat", "text": "marker"})
    frames = []
    while (frame := await call.handler.next())["type"] != "chat":
        frames.append(frame)
    assert [f for f in frames if f["type"] == "status"] == []
    kinds = await record_kinds(live, call.session_id)
    assert [b for k, b in kinds if k == "rung_changed"] == [
        {"rung": "stills", "reason": "no_turn", "previous": None}]
    assert [b for k, b in kinds if k == "capture_changed"] == [OK]
    # The caller never sees status.
    await call.caller.send({"type": "control", "op": "rung", "rung": "full", "reason": "recovered"})
    await status_where(call.handler, rung="full")
    await barrier(call.caller)
    assert all(f["type"] != "status" for f in call.caller.received)


async def test_caller_reports_are_checked(live: LiveServer) -> None:
    call = await open_call(live, "hannah")
    bad: list[dict[str, Any]] = [
        {"op": "capture", "camera": "ok", "microphone": "ok"},  # location missing
        {"op": "capture", "camera": "fine", "microphone": "ok", "location": "ok"},
        {"op": "capture", "camera": True, "microphone": "ok", "location": "ok"},
        {"op": "capture", **OK, "speaker": "ok"},
        {"op": "rung", "rung": "video"},
        {"op": "rung"},
        {"op": "rung", "rung": "full", "reason": "because"},
        {"op": "rung", "rung": "full", "reason": 3},
    ]
    for args in bad:
        await call.caller.send({"type": "control", **args})
        await expect_error(call.caller, "bad_field")
    # Staff cannot speak for the caller's phone.
    for args in ({"op": "capture", **OK}, {"op": "rung", "rung": "full"}):
        await call.handler.send({"type": "control", **args})
        await expect_error(call.handler, "forbidden")
    # Nor the caller for the handler's view, nor its mode.
    for args in ({"op": "caller_media", "state": "flowing"},
                 {"op": "call_mode", "phone_line": False}):
        await call.caller.send({"type": "control", **args})
        await expect_error(call.caller, "forbidden")
    for state in ("moving", "", None, 1):
        await call.handler.send({"type": "control", "op": "caller_media", "state": state})
        await expect_error(call.handler, "bad_field")
    await call.handler.send({"type": "control", "op": "call_mode", "phone_line": "no"})
    await expect_error(call.handler, "bad_field")
    # Every documented value is accepted.
    for rung in RUNGS:
        for reason in (None, *RUNG_REASONS):
            await call.caller.send({"type": "control", "op": "rung", "rung": rung,
                                    "reason": reason})
    for state in CAPTURE_STATES:
        await call.caller.send({"type": "control", "op": "capture", "camera": state,
                                "microphone": state, "location": state})
    await barrier(call.caller)
    assert not [f for f in call.caller.received if f["type"] == "error"
                and f["code"] != "bad_field" and f["code"] != "forbidden"]


async def test_the_handlers_view_of_what_arrives_is_shown_to_all_and_listed(
    live: LiveServer,
) -> None:
    call = await open_call(live, "hannah")
    _, socket = await bring_specialist(live, call, "sam")
    for state in MEDIA_STATES:
        await call.handler.send({"type": "control", "op": "caller_media", "state": state})
        status = await status_where(socket, media=state)
        assert status["caller"]["since"] is not None
    await call.handler.send({"type": "control", "op": "caller_media", "state": "frozen"})
    await status_where(socket, media="frozen")
    row = await listed(live, call.staff, call.session_id)
    assert row["caller"]["state"] == "frozen" and row["caller"]["present"] is True
    assert row["caller"]["seconds"] >= 0
    # Only the handler's own page speaks for what the handler sees.
    await socket.send({"type": "control", "op": "caller_media", "state": "flowing"})
    await expect_error(socket, "forbidden")
    kinds = await record_kinds(live, call.session_id)
    changes = [b["state"] for k, b in kinds if k == "caller_media_changed"]
    assert changes == [*MEDIA_STATES, "frozen"]


async def test_presence_beats_old_reports_away_then_left(live: LiveServer) -> None:
    """A frozen report does not hide that the caller's socket dropped, nor that they left."""
    call = await open_call(live, "hannah")
    await call.handler.send({"type": "control", "op": "caller_media", "state": "flowing"})
    await status_where(call.handler, media="flowing")
    assert (await listed(live, call.staff, call.session_id))["caller"]["state"] == "flowing"
    await call.caller.ws.close()  # dropped: away, resumable
    await call.handler.expect("peer", op="updated", role="victim", state="away")
    assert (await listed(live, call.staff, call.session_id))["caller"]["state"] == "reconnecting"
    resumed = await SignalClient.connect(live, live.new_http())
    await resumed.hello(resume={"pid": call.caller.pid,
                                "secret": call.caller.welcome["resume_secret"], "last_seq": 0})
    await call.handler.expect("peer", op="updated", role="victim", state="present")
    assert (await listed(live, call.staff, call.session_id))["caller"]["state"] == "flowing"
    await resumed.send({"type": "control", "op": "leave"})
    await call.handler.expect("peer", op="left", role="victim")
    row = await listed(live, call.staff, call.session_id)
    assert row["caller"]["state"] == "left" and row["caller"]["present"] is False


async def test_without_a_handler_watching_media_reports_are_not_shown(live: LiveServer) -> None:
    call = await open_call(live, "hannah")
    await call.handler.send({"type": "control", "op": "caller_media", "state": "flowing"})
    await status_where(call.handler, media="flowing")
    await call.handler.send({"type": "control", "op": "leave"})
    await call.caller.expect("peer", op="left", role="handler")
    row = await listed(live, call.staff, call.session_id)
    assert row["caller"]["state"] == "joined" and row["caller"]["media"] is None


def place(call: Call) -> dict[str, str]:
    """The caller's place as its page keeps it for a reload (`hello.replaces`)."""
    return {"pid": call.caller.pid, "secret": call.caller.welcome["resume_secret"]}


async def test_a_fresh_caller_page_starts_with_no_old_reports(live: LiveServer) -> None:
    call = await open_call(live, "hannah")
    await call.caller.send({"type": "control", "op": "rung", "rung": "chat",
                            "reason": "camera_unavailable"})
    await status_where(call.handler, rung="chat")
    again = await SignalClient.connect(live, live.new_http())
    # A reload: a fresh hello that proves the page's place (section 4.3 of the protocol).
    await again.hello(credential=call.credential, replaces=place(call))
    status = await status_where(call.handler, rung=None)
    assert status["caller"]["capture"] == {"camera": None, "microphone": None, "location": None}


async def test_call_mode_tells_the_caller_and_the_record(live: LiveServer) -> None:
    call = await open_call(live, "hannah")
    assert call.caller.welcome["call"]["phone_line"] is True
    assert call.handler.welcome["status"]["call"] == {"phone_line": True}
    await call.handler.send({"type": "control", "op": "call_mode", "phone_line": False})
    mode = await call.caller.expect("call_mode")
    assert mode["phone_line"] is False and "seq" in mode
    while (await call.handler.expect("status"))["call"]["phone_line"]:
        pass
    # Unchanged: nothing happens. Over HTTP too, for a console whose socket is down.
    await call.handler.send({"type": "control", "op": "call_mode", "phone_line": False})
    _, body = await call.staff.api("POST", f"/api/sessions/{call.session_id}/call-mode",
                                   {"phone_line": True}, expect=200)
    assert body["status"]["call"] == {"phone_line": True}
    assert (await call.caller.expect("call_mode"))["phone_line"] is True
    await call.staff.api("POST", f"/api/sessions/{call.session_id}/call-mode",
                         {"phone_line": "yes"}, expect=400)
    # A resumed or rejoined caller page learns the mode from its welcome.
    rejoined = await SignalClient.connect(live, live.new_http())
    welcome = await rejoined.hello(credential=call.credential, replaces=place(call))
    assert welcome["call"]["phone_line"] is True
    kinds = await record_kinds(live, call.session_id)
    assert [b["phone_line"] for k, b in kinds if k == "call_mode_changed"] == [False, True]
    created = next(b for k, b in kinds if k == "session_created")
    assert created["phone_line"] is True


async def test_only_the_sessions_handler_sets_the_call_mode(live: LiveServer) -> None:
    call = await open_call(live, "hannah")
    other = await live.staff_client("harry", "handler")
    status, body = await other.api("POST", f"/api/sessions/{call.session_id}/call-mode",
                                   {"phone_line": False})
    assert status == 404 and body["error"] == "not_found"
    _, socket = await bring_specialist(live, call, "sam")
    await socket.send({"type": "control", "op": "call_mode", "phone_line": False})
    await expect_error(socket, "forbidden")
    await call.handler.send({"type": "control", "op": "end"})
    _, body = await call.staff.api("POST", f"/api/sessions/{call.session_id}/call-mode",
                                   {"phone_line": False})
    assert body["error"] == "ended"


async def test_a_session_can_start_with_sound_on_the_page(live: LiveServer) -> None:
    handler = await live.staff_client("hannah", "handler")
    _, body = await handler.api("POST", "/api/sessions", {
        "incident_ref": "CAD-9", "phone": "07911 123456", "phone_line": False}, expect=201)
    assert body["session"]["phone_line"] is False
    assert body["status"]["call"] == {"phone_line": False}
    status, body = await handler.api("POST", "/api/sessions", {
        "incident_ref": "CAD-9", "phone": "07911 123456", "phone_line": "false"})
    assert status == 400 and body["error"] == "bad_field"
    caller = await live.caller()
    assert caller.welcome["call"]["phone_line"] is False


async def test_the_welcome_gives_the_heartbeat(live: LiveServer) -> None:
    call = await open_call(live, "hannah")
    assert call.caller.welcome["heartbeat"] == live.config.heartbeat
    assert call.handler.welcome["heartbeat"] == live.config.heartbeat
