"""A session's risk band is never lowered without a written reason (issue 11, finding 4).

The floor is the highest band recorded in this session as well as the previous contact's;
a form with unanswered questions is incomplete, never a score of zero, and never sets or
lowers the band; a specialist who declined or let the invitation time out cannot write.
"""

from __future__ import annotations

from typing import Any

from server import keys
from server.accounts import StaffRole
from server.specialists import InvitationState
from tests.support.calls import barrier, open_call, specialist_on_call
from tests.support.live import LiveServer, StaffClient

REASON = "Victim has moved to a refuge today and the suspect is in custody."


def dash(yes: int, questions: int = 24) -> dict[str, str]:
    """The first `questions` DASH answers: the first `yes` of them yes, the rest no."""
    return {f"q{i}": "yes" if i <= yes else "no" for i in range(1, questions + 1)}


async def assess(client: StaffClient, session: str, body: dict[str, Any],
                 expect: int = 201) -> dict[str, Any]:
    _, data = await client.api("POST", f"/api/sessions/{session}/risk", body, expect=expect)
    return dict(data)


async def case(client: StaffClient, session: str) -> dict[str, Any]:
    _, body = await client.api("GET", f"/api/sessions/{session}/case", expect=200)
    return dict(body["case"])


async def test_an_empty_or_partial_form_is_incomplete_and_never_lowers_the_band(
    live: LiveServer,
) -> None:
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session = await handler.create_session()
    high = (await assess(handler, session, {"answers": dash(24)}))["assessment"]
    assert high["final_band"] == "high"

    for answers in ({}, dash(0, questions=20), {"q1": "no"}):
        stored = (await assess(handler, session, {"answers": answers}))["assessment"]
        assert stored["complete"] is False, answers
        assert stored["score"] is None and stored["final_band"] is None, stored
        assert len(stored["unanswered"]) == 24 - len(answers)
        body = await case(handler, session)
        assert body["band"]["final_band"] == "high", body["band"]
        assert body["band"]["downgraded"] is False
    # An incomplete form never sets a band either, even with a judged band.
    empty = await handler.create_session(ref="CAD-2", phone="07400 123456")
    stored = (await assess(handler, empty, {"answers": {"q1": "yes"}, "final_band": "high"}))
    assert stored["assessment"]["complete"] is False
    assert (await case(handler, empty))["band"]["final_band"] is None
    # Every question answered, with "not known" for some, is complete.
    known = {**dash(3), "q4": "not_known"}
    complete = (await assess(handler, empty, {"answers": known}))["assessment"]
    assert complete["complete"] is True and complete["score"] == 3


async def test_a_lower_band_than_this_sessions_highest_needs_a_reason_and_is_flagged(
    live: LiveServer,
) -> None:
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session = await handler.create_session()
    await assess(handler, session, {"answers": dash(24)})

    refused = await assess(handler, session, {"answers": dash(0)}, expect=409)
    assert refused["error"] == "downgrade_needs_reason", refused
    assert "this session" in refused["message"]
    # Going through a medium first does not launder the high away.
    await assess(handler, session, {"answers": dash(10), "reason": REASON})
    refused = await assess(handler, session, {"answers": dash(0)}, expect=409)
    assert refused["error"] == "downgrade_needs_reason"

    lowered = (await assess(handler, session, {"answers": dash(0), "reason": REASON}))[
        "assessment"]
    assert lowered["final_band"] == "standard" and lowered["downgraded"] is True
    assert "below_session" in lowered["downgrade_rules"]
    assert lowered["session_band"] == "high" and lowered["reason"] == REASON
    me = (await handler.api("GET", "/api/me"))[1]
    assert lowered["by"] == me["id"]

    body = await case(handler, session)
    band = body["band"]
    assert band["final_band"] == "standard" and band["downgraded"] is True
    assert band["highest_band"] == "high" and band["reason"] == REASON
    assert band["by"] == me["id"] and band["by_name"]
    # The earlier, higher assessment stays visible.
    assert [a["final_band"] for a in body["history"]] == ["high", "medium", "standard"]

    # The record view flags it too.
    supervisor = await live.staff_client("sophie", StaffRole.SUPERVISOR)
    _, record = await supervisor.api("GET", f"/api/sessions/{session}/record", expect=200)
    risks = [e for e in record["events"] if e["kind"] == "risk_assessment"]
    assert len(risks) == 3
    details = {d["label"]: d["text"] for d in risks[-1]["details"]}
    assert "below_session" in details["Downgraded (flagged)"]
    assert details["Reason given"] == REASON and details["Lowered from"] == "high"

    # The next contact's history says standard, flagged as lowered, from high, and by whom.
    _, created = await handler.api("POST", "/api/sessions",
                                   {"incident_ref": "CAD-9", "phone": "07911 123456"},
                                   expect=201)
    history = created["status"]["history"]
    assert history["last_band"] == "standard"
    assert history["last_band_downgraded"] is True
    assert history["last_band_lowered_from"] == "high"
    assert history["last_band_by"] == "Handler"
    # And its floor is the previous contact's highest: a standard there needs no reason
    # against the lowered band, but the flag carries on.
    second = created["session"]["id"]
    again = (await assess(handler, second, {"answers": dash(0)}))["assessment"]
    assert again["final_band"] == "standard"


async def test_a_specialist_who_declined_or_timed_out_cannot_write(live: LiveServer) -> None:
    call = await open_call(live, "hannah")
    session = call.session_id
    await assess(call.staff, session, {"answers": dash(24)})
    specialist, lobby = await specialist_on_call(live, "sam")
    await call.handler.send({"type": "control", "op": "invite_specialist", "username": "sam"})
    ringing = await lobby.expect("invitation", op="ringing", session=session)
    await lobby.send({"type": "control", "op": "decline", "invitation": ringing["invitation"]})
    await lobby.expect("invitation", op="declined")
    await barrier(lobby)

    for body in ({"form": "thrive", "answers": {"priority": "standard"}},
                 {"answers": dash(0), "reason": REASON}):
        refused = await assess(specialist, session, body, expect=404)
        assert refused["error"] == "not_found", refused
    await specialist.api("POST", f"/api/sessions/{session}/referrals",
                         {"kind": "idva", "status": "closed"}, expect=404)
    await specialist.api("GET", f"/api/sessions/{session}/case", expect=404)
    _, listed = await specialist.api("GET", "/api/sessions", expect=200)
    assert session not in [s["id"] for s in listed["sessions"]]
    body = await case(call.staff, session)
    assert body["band"]["final_band"] == "high" and body["assessments"] == 1

    # Timed out: the same.
    late, late_lobby = await specialist_on_call(live, "sue")
    await call.handler.send({"type": "control", "op": "invite_specialist", "username": "sue"})
    ringing = await late_lobby.expect("invitation", op="ringing", session=session)
    room = live.app[keys.ROOM]
    assert await room.invitations.finish(ringing["invitation"], InvitationState.TIMED_OUT)
    await late.api("POST", f"/api/sessions/{session}/risk",
                   {"form": "thrive", "answers": {"priority": "standard"}}, expect=404)
    assert (await case(call.staff, session))["assessments"] == 1
