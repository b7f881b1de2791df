"""Issue 11, finding 1: an old link's credential must not take the call over.

A new or revoked link ends every credential redeemed from earlier links (and their sockets),
unless the handler keeps the caller who is in the call; a second device joining as the caller
waits for the handler's choice; only the participant's own secret continues without notice.
"""

from __future__ import annotations

from typing import Any

import pytest

from server import keys
from tests.support.calls import Call, barrier, chat_round_trip, expect_error, open_call, raw_socket
from tests.support.live import LiveServer, SignalClient


async def record_kinds(live: LiveServer, session_id: str) -> list[tuple[str, dict[str, Any]]]:
    record = live.app[keys.ROOM].record
    assert record is not None
    return [(e.header.kind, e.body) for e in await record.read(session_id)]


async def knock(live: LiveServer, credential: str, **extra: Any) -> SignalClient:
    """A new socket that says hello as the caller and is told to wait."""
    device = await raw_socket(live)
    await device.send({"type": "hello", "v": 1, "credential": credential, **extra})
    waiting = await device.next()
    assert waiting["type"] == "waiting", waiting
    assert waiting["reason"] == "caller_in_call" and "seq" not in waiting
    return device


async def new_link(call: Call, **body: Any) -> str:
    await call.staff.api("POST", f"/api/sessions/{call.session_id}/link", body or None,
                         expect=200)
    return call.staff.server.latest_token()


@pytest.mark.parametrize("how", ["revoke_then_send", "send"])
async def test_an_old_links_credential_cannot_take_the_call_over(live: LiveServer,
                                                                 how: str) -> None:
    """The issue's scenario: link 1 redeemed (by someone who read the texts), the handler
    revokes it and/or sends link 2, the real caller joins with link 2; a hello with link 1's
    credential is refused and the real caller stays in the call, with nothing replayed."""
    call = await open_call(live, "hannah", join_caller=False)
    await call.caller.close()  # link 1 was redeemed by the abuser, who has not joined yet
    stolen = call.credential
    if how == "revoke_then_send":
        await call.staff.api("POST", f"/api/sessions/{call.session_id}/link/revoke",
                             expect=200)
    await call.staff.api("POST", f"/api/sessions/{call.session_id}/link", expect=200)
    caller = await live.caller()  # the real caller, with link 2
    await call.handler.expect("peer", op="joined", role="victim")
    await chat_round_trip(caller, call.handler, "I'm hiding upstairs")

    abuser = await raw_socket(live)
    await abuser.send({"type": "hello", "v": 1, "credential": stolen})
    error = await expect_error(abuser, "unauthorized")
    assert "chat" not in [m["type"] for m in abuser.received]
    await chat_round_trip(call.handler, caller, "still here?")
    await barrier(caller)
    assert all(m["type"] != "bye" for m in caller.received), caller.received
    assert error["message"] == "this credential is no longer valid"
    kinds = [k for k, _ in await record_kinds(live, call.session_id)]
    assert "credentials_ended" in kinds


async def test_revoking_ends_the_credential_in_use_and_closes_its_socket(
    live: LiveServer,
) -> None:
    """Revoking (or sending a new link) without keeping the caller ends the caller's
    credential too: their socket gets `bye credential_ended`, and it resumes no more."""
    call = await open_call(live, "hannah")
    secret = call.caller.welcome["resume_secret"]
    pid = call.caller.pid
    await call.staff.api("POST", f"/api/sessions/{call.session_id}/link/revoke", expect=200)
    code, reason = await call.caller.expect_closed()
    assert (code, reason) == (1000, "credential_ended")
    await call.handler.expect("peer", op="left", role="victim", reason="credential_ended")

    again = await raw_socket(live)
    await again.send({"type": "hello", "v": 1,
                      "resume": {"pid": pid, "secret": secret, "last_seq": 0}})
    await expect_error(again, "resume_failed")
    await again.send({"type": "hello", "v": 1, "credential": call.credential})
    await expect_error(again, "unauthorized")
    ended = [b for k, b in await record_kinds(live, call.session_id) if k == "credentials_ended"]
    assert ended and ended[-1]["count"] == 1 and ended[-1]["kept"] is False


@pytest.mark.parametrize("via", ["api", "socket"])
async def test_the_handler_can_keep_the_caller_in_the_call(live: LiveServer, via: str) -> None:
    """With keep_caller the caller in the call stays (same credential, same socket); a
    credential redeemed from an earlier link by anyone else is still ended."""
    call = await open_call(live, "hannah")
    stray = (await live.redeem(await new_link(call, keep_caller=True)))["credential"]
    if via == "api":
        await call.staff.api("POST", f"/api/sessions/{call.session_id}/link",
                             {"keep_caller": True}, expect=200)
    else:
        await call.handler.send({"type": "control", "op": "resend_link", "keep_caller": True})
        await call.handler.expect("status")
        await barrier(call.handler)
    await chat_round_trip(call.caller, call.handler, "still with you")
    assert all(m["type"] != "bye" for m in call.caller.received)

    other = await raw_socket(live)
    await other.send({"type": "hello", "v": 1, "credential": stray})
    await expect_error(other, "unauthorized")
    await call.staff.api("POST", f"/api/sessions/{call.session_id}/link/revoke",
                         {"keep_caller": True}, expect=200)
    await chat_round_trip(call.handler, call.caller, "and still")


async def test_a_second_device_waits_and_the_handler_admits_it(live: LiveServer) -> None:
    """A fresh hello with a valid caller credential while the caller is in the call never
    replaces them silently: it waits (no welcome, no history), only the handler is told,
    and only when the handler admits it does the old device get `bye replaced`."""
    call = await open_call(live, "hannah")
    await chat_round_trip(call.caller, call.handler, "they are downstairs")
    device = await knock(live, call.credential)
    prompt = await call.handler.expect("caller_device", op="waiting")
    assert prompt["reason"] == "caller_in_call" and prompt["device"]

    await chat_round_trip(call.handler, call.caller, "stay where you are")
    await barrier(device)
    assert [m["type"] for m in device.received] == ["waiting", "pong"], device.received
    assert all(m["type"] != "bye" for m in call.caller.received)

    await call.handler.send({"type": "control", "op": "admit_device",
                             "device": prompt["device"]})
    code, reason = await call.caller.expect_closed()
    assert (code, reason) == (1000, "replaced")
    welcome = await device.expect("welcome")
    assert welcome["role"] == "victim" and welcome["resumed"] is False
    replayed = await device.expect("chat", text="they are downstairs")
    assert replayed["replay"] is True
    await call.handler.expect("caller_device", op="admitted", device=prompt["device"])
    kinds = [k for k, _ in await record_kinds(live, call.session_id)]
    assert "caller_device_waiting" in kinds and "caller_device_admitted" in kinds


async def test_a_refused_device_is_closed_and_its_credential_ended(live: LiveServer) -> None:
    """Refused: the waiting device gets `bye refused`, its credential ends, the caller in
    the call is untouched."""
    call = await open_call(live, "hannah")
    other = (await live.redeem(await new_link(call, keep_caller=True)))["credential"]
    device = await knock(live, other)
    prompt = await call.handler.expect("caller_device", op="waiting")
    _, body = await call.staff.api(
        "POST", f"/api/sessions/{call.session_id}/caller-device",
        {"device": prompt["device"], "decision": "refuse"}, expect=200)
    assert body["decision"] == "refuse"
    code, reason = await device.expect_closed()
    assert (code, reason) == (1000, "refused")
    await call.handler.expect("caller_device", op="refused", device=prompt["device"])
    await chat_round_trip(call.caller, call.handler, "thank you")

    again = await raw_socket(live)
    await again.send({"type": "hello", "v": 1, "credential": other})
    await expect_error(again, "unauthorized")
    status, gone = await call.staff.api(
        "POST", f"/api/sessions/{call.session_id}/caller-device",
        {"device": prompt["device"], "decision": "admit"})
    assert status == 404 and gone["error"] == "not_found"
    status, bad = await call.staff.api(
        "POST", f"/api/sessions/{call.session_id}/caller-device",
        {"device": prompt["device"], "decision": "maybe"})
    assert status == 400 and bad["error"] == "bad_field"
    kinds = [k for k, _ in await record_kinds(live, call.session_id)]
    assert "caller_device_refused" in kinds


async def test_a_waiting_device_that_goes_away_withdraws_its_prompt(live: LiveServer) -> None:
    call = await open_call(live, "hannah")
    device = await knock(live, call.credential)
    prompt = await call.handler.expect("caller_device", op="waiting")
    await device.close()
    await call.handler.expect("caller_device", op="withdrawn", device=prompt["device"])
    await call.handler.send({"type": "control", "op": "refuse_device",
                             "device": prompt["device"]})
    await expect_error(call.handler, "not_found")


async def test_a_reload_proves_its_place_and_needs_no_prompt(live: LiveServer) -> None:
    """The caller's page after a reload says hello with its credential and the place it
    had (`replaces`: its pid and resume secret): it rejoins at once, as before. A wrong
    secret is a different device."""
    call = await open_call(live, "hannah")
    await call.handler.send({"type": "chat", "text": "hello again"})
    await call.caller.expect("chat", text="hello again")
    wrong = await knock(live, call.credential,
                        replaces={"pid": call.caller.pid, "secret": "not-the-secret"})
    await call.handler.expect("caller_device", op="waiting")
    await wrong.close()
    await call.handler.expect("caller_device", op="withdrawn")

    seen = len(call.handler.received)
    reloaded = await raw_socket(live)
    welcome = await reloaded.hello(
        credential=call.credential,
        replaces={"pid": call.caller.pid, "secret": call.caller.welcome["resume_secret"]})
    assert welcome["role"] == "victim"
    await reloaded.expect("chat", text="hello again")
    await call.handler.expect("peer", op="joined", role="victim")
    await barrier(call.handler)
    assert not [m for m in call.handler.received[seen:] if m["type"] == "caller_device"]


async def test_a_resume_with_the_own_secret_continues_without_notice(live: LiveServer) -> None:
    call = await open_call(live, "hannah")
    await call.caller.close()
    await call.handler.expect("peer", op="updated", pid=call.caller.pid, state="away")
    back = await raw_socket(live)
    back.last_seq = call.caller.last_seq
    welcome = await back.hello(resume={"pid": call.caller.pid,
                                       "secret": call.caller.welcome["resume_secret"],
                                       "last_seq": call.caller.last_seq})
    assert welcome["resumed"] is True
    await call.handler.expect("peer", op="updated", pid=call.caller.pid, state="present")
    await barrier(call.handler)
    assert not [m for m in call.handler.received if m["type"] == "caller_device"]


async def test_an_away_caller_is_not_replaced_by_a_new_device(live: LiveServer) -> None:
    """While the caller's place is resumable (socket dropped), a new device still waits."""
    call = await open_call(live, "hannah")
    await call.caller.close()
    await call.handler.expect("peer", op="updated", pid=call.caller.pid, state="away")
    await knock(live, call.credential)
    await call.handler.expect("caller_device", op="waiting")


async def test_ending_the_session_sends_a_waiting_device_away(live: LiveServer) -> None:
    call = await open_call(live, "hannah")
    device = await knock(live, call.credential)
    await call.handler.expect("caller_device", op="waiting")
    await call.handler.send({"type": "control", "op": "end"})
    assert await device.expect_closed() == (1000, "session_ended")


async def test_only_the_handler_decides_and_a_waiting_device_gets_nothing_else(
    live: LiveServer,
) -> None:
    """A waiting device cannot chat or say hello again; the caller cannot admit it."""
    call = await open_call(live, "hannah")
    device = await knock(live, call.credential)
    prompt = await call.handler.expect("caller_device", op="waiting")
    await device.send({"type": "chat", "text": "let me in"})
    await expect_error(device, "forbidden")
    await device.send({"type": "hello", "v": 1, "credential": call.credential})
    await expect_error(device, "forbidden")
    await call.caller.send({"type": "control", "op": "admit_device", "device": prompt["device"]})
    await expect_error(call.caller, "forbidden")
    await call.handler.send({"type": "control", "op": "admit_device", "device": 7})
    await expect_error(call.handler, "bad_field")
    await barrier(call.handler)
    assert not [m for m in call.handler.received if m["type"] == "chat"]


async def test_refusing_a_copy_of_the_callers_credential_leaves_the_caller_able_to_reload(
    live: LiveServer,
) -> None:
    """A device refused with a copy of the caller's own credential ends that credential for
    everyone else, but the caller in the call, who proves their place with its own secret,
    can still reload their page."""
    call = await open_call(live, "hannah")
    device = await knock(live, call.credential)
    prompt = await call.handler.expect("caller_device", op="waiting")
    await call.handler.send({"type": "control", "op": "refuse_device",
                             "device": prompt["device"]})
    assert await device.expect_closed() == (1000, "refused")

    copy = await raw_socket(live)
    await copy.send({"type": "hello", "v": 1, "credential": call.credential})
    await expect_error(copy, "unauthorized")
    forged = await raw_socket(live)
    await forged.send({"type": "hello", "v": 1, "credential": call.credential,
                       "replaces": {"pid": call.caller.pid, "secret": "guessed"}})
    await expect_error(forged, "unauthorized")
    reloaded = await raw_socket(live)
    welcome = await reloaded.hello(
        credential=call.credential,
        replaces={"pid": call.caller.pid, "secret": call.caller.welcome["resume_secret"]})
    assert welcome["role"] == "victim"
    assert await call.caller.expect_closed() == (1000, "replaced")
