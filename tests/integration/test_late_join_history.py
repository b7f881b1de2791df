"""Someone joining late gets the conversation so far: the specialist sees the caller's
earlier quick replies, the advice and the last location; a caller who joins afresh gets the
chat again but never the advice."""

from __future__ import annotations

from server import keys
from tests.support.calls import barrier, bring_specialist, frames_until, open_call
from tests.support.live import LiveServer, SignalClient


async def test_a_late_specialist_gets_chat_advice_and_location(live: LiveServer) -> None:
    call = await open_call(live, "hannah")
    await call.caller.send({"type": "chat", "canned": "they_are_here"})
    await call.caller.send({"type": "location", "lat": 51.48, "lon": -3.18, "accuracy": 9,
                            "ts": 1_700_000_000_000})
    await call.handler.expect("location")  # both arrived before the advice is written
    await call.handler.send({"type": "advice", "text": "previous incidents at address"})
    await call.handler.expect("advice")

    _, specialist = await bring_specialist(live, call, "sam")
    await barrier(specialist)
    replayed = [m for m in specialist.received if m.get("replay")]
    kinds = [m["type"] for m in replayed]
    assert kinds == ["chat", "advice", "location"], kinds
    assert replayed[0]["canned"] == "they_are_here" and replayed[0]["role"] == "victim"
    assert replayed[1]["text"] == "previous incidents at address"
    assert replayed[2]["lat"] == 51.48
    assert [m["seq"] for m in specialist.received if "seq" in m] == \
        list(range(1, specialist.last_seq + 1))


async def test_a_caller_joining_afresh_never_gets_advice(live: LiveServer) -> None:
    call = await open_call(live, "hannah")
    await call.handler.send({"type": "advice", "text": "do not mention the refuge"})
    await call.handler.send({"type": "chat", "text": "are you able to talk?"})
    await call.caller.expect("chat", text="are you able to talk?")
    await call.caller.close()

    again = await SignalClient.connect(live, live.new_http())
    # The caller's own page rejoining afresh (a reload) proves its place; another device
    # would wait for the handler (tests/integration/test_caller_takeover.py).
    await again.hello(credential=call.credential, replaces={
        "pid": call.caller.pid, "secret": call.caller.welcome["resume_secret"]})
    frames = await frames_until(again, "chat", text="are you able to talk?")
    await barrier(again)
    assert all(m["type"] != "advice" for m in again.received)
    assert not any("refuge" in str(m) for m in again.received)
    assert frames[-1]["replay"] is True


async def test_history_is_gone_when_the_session_ends(live: LiveServer) -> None:
    call = await open_call(live, "hannah")
    await call.caller.send({"type": "chat", "text": "the back door"})
    await call.handler.expect("chat", text="the back door")
    await call.handler.send({"type": "control", "op": "end"})
    await call.handler.expect_closed()
    hub = live.app[keys.HUB]
    assert not await hub.has_history(call.session_id)


async def test_the_callers_consent_goes_on_the_record(live: LiveServer) -> None:
    call = await open_call(live, "hannah")
    await call.caller.send({"type": "control", "op": "consent", "camera": True,
                            "microphone": False, "location": True})
    await barrier(call.caller)
    events = await live.app[keys.RECORD].read(call.session_id)
    consent = [e.body for e in events if e.header.kind == "consent_given"]
    assert consent == [{"camera": True, "microphone": False, "location": True}]
    # Only the caller gives consent, and only in full.
    await call.handler.send({"type": "control", "op": "consent", "camera": True,
                             "microphone": True, "location": True})
    assert (await call.handler.expect("error"))["code"] == "forbidden"
    await call.caller.send({"type": "control", "op": "consent", "camera": True})
    assert (await call.caller.expect("error"))["code"] == "bad_field"
