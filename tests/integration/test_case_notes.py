"""Risk assessments and referral outcomes through the JSON API, kept in the encrypted case
record, and fed back into the next contact's history so no call is treated in isolation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server import keys
from server.accounts import StaffRole
from tests.support.calls import bring_specialist, open_call
from tests.support.live import LiveServer, StaffClient, start_server
from tests.support.unit_db import database_bytes

PHONE = "07911 123456"
REASON = "Victim has moved to a refuge today and the suspect is in custody."
NOTES = "Referred to the Leeds IDVA service, code word bluebell"


def dash(yes: int) -> dict[str, str]:
    """DASH answers with the first `yes` questions answered yes, the rest no."""
    return {f"q{i}": "yes" if i <= yes else "no" for i in range(1, 25)}


async def assess(client: StaffClient, session: str, body: dict[str, Any],
                 expect: int = 201) -> dict[str, Any]:
    _, data = await client.api("POST", f"/api/sessions/{session}/risk", body, expect=expect)
    return dict(data)


THRIVE_LEVELS = {"threat_level": "high", "harm_level": "high", "risk_level": "high"}
MARAC_MADE = {"kind": "marac", "status": "made", "safe_to_call": "yes",
              "safe_times": [{"day": "tue", "start": "09:30", "end": "11:00"}],
              "notes": "MARAC on Thursday"}


async def test_forms_are_served_for_consoles(live: LiveServer) -> None:
    """GET /api/forms lists DASH (default, 24 questions, 0/10/14 bands) and THRIVE; callers
    without a console role are refused."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    _, body = await handler.api("GET", "/api/forms", expect=200)
    forms = {f["id"]: f for f in body["forms"]}
    assert body["forms"][0]["id"] == "dash" and forms["dash"]["default"] is True
    assert len(forms["dash"]["questions"]) == 24
    assert [(b["id"], b["min_score"]) for b in forms["dash"]["bands"]] == [
        ("standard", 0), ("medium", 10), ("high", 14)]
    assert forms["dash"]["questions"][0]["kind"] == "yes_no_unknown"
    assert "thrive" in forms and forms["thrive"]["scoring"] == "none"
    auditor = await live.staff_client("audrey", StaffRole.AUDITOR)
    await auditor.api("GET", "/api/forms", expect=403)


async def test_dash_score_band_marac_and_downgrade_rule(live: LiveServer) -> None:
    """14 yes is high with MARAC suggested; a lower final band without a reason is 400 and
    nothing is stored; with a reason it is stored, flagged, with the rules it broke."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session = await handler.create_session(phone=PHONE)

    high = (await assess(handler, session, {"form": "dash", "answers": dash(14)}))["assessment"]
    assert high["score"] == 14 and high["computed_band"] == "high"
    assert high["final_band"] == "high" and high["downgraded"] is False
    assert high["marac_suggested"] is True and high["marac_triggers"] == ["high_band"]

    refused = await assess(handler, session, {"answers": dash(14), "final_band": "medium"},
                           expect=409)
    assert refused["error"] == "downgrade_needs_reason"
    assert "needs a written reason" in refused["message"]
    await assess(handler, session, {"answers": dash(14), "final_band": "medium",
                                    "reason": "not really"}, expect=409)  # too short
    _, case = await handler.api("GET", f"/api/sessions/{session}/case", expect=200)
    assert case["case"]["assessments"] == 1  # the refused ones left nothing behind

    lowered = (await assess(handler, session, {"answers": dash(14), "final_band": "medium",
                                               "reason": REASON}))["assessment"]
    assert lowered["computed_band"] == "high" and lowered["final_band"] == "medium"
    # Below the score's band, and below the high this session already recorded.
    assert lowered["downgraded"] is True
    assert lowered["downgrade_rules"] == ["below_computed", "below_session"]
    assert lowered["reason"] == REASON and lowered["marac_suggested"] is False

    _, case = await handler.api("GET", f"/api/sessions/{session}/case", expect=200)
    assert case["case"]["assessments"] == 2
    latest = case["case"]["assessment"]
    assert latest["final_band"] == "medium" and latest["downgraded"] is True
    assert latest["by"] == lowered["by"] and latest["at"] >= high["at"]


async def test_bad_assessments_and_referrals_are_refused(live: LiveServer) -> None:
    """Unknown forms, questions and answers, and malformed referrals, are 400 with a reason."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    session = await handler.create_session(phone=PHONE)
    for body, code, words in (
        ({"form": "nope", "answers": {}}, "unknown_form", "dash"),
        ({"answers": {"q99": "yes"}}, "bad_assessment", "q99"),
        ({"answers": {"q1": "maybe"}}, "bad_assessment", "q1"),
        ({"answers": ["q1"]}, "bad_field", "answers"),
        ({"answers": dash(2), "final_band": "extreme"}, "bad_field", "final_band"),
        ({"answers": dash(2), "judgement_marac": "yes"}, "bad_field", "judgement_marac"),
        ({"form": "thrive", "answers": {}}, "bad_assessment", "priority must be answered"),
    ):
        refused = await assess(handler, session, body, expect=400)
        assert refused["error"] == code and words in refused["message"], (body, refused)
    for referral, words in (
        ({"kind": "marac"}, "status"),
        ({"kind": "bus", "status": "made"}, "kind"),
        ({"kind": "other_agency", "status": "made"}, "agency"),
        ({"kind": "idva", "status": "made", "safe_to_call": "no",
          "safe_times": [{"day": "mon", "start": "09:00", "end": "10:00"}]}, "safe"),
        ({"kind": "idva", "status": "made", "safe_to_call": "yes",
          "safe_times": [{"day": "mon", "start": "10:00", "end": "09:00"}]}, "end after"),
        ({"kind": "idva", "status": "made", "secret": 1}, "unknown field"),
    ):
        _, body = await handler.api("POST", f"/api/sessions/{session}/referrals", referral,
                                    expect=400)
        assert body["error"] == "bad_referral" and words in body["message"], (referral, body)
    _, case = await handler.api("GET", f"/api/sessions/{session}/case", expect=200)
    assert case["case"]["assessment"] is None and case["case"]["assessments"] == 0
    assert case["case"]["referrals"] == [] and case["case"]["history"] == []
    assert case["case"]["band"]["final_band"] is None


async def test_history_carries_band_referrals_and_marac_to_the_next_contacts(
    live: LiveServer,
) -> None:
    """A second session for the number shows last band high (with its date), the open MARAC
    referral and marac_12_months; an assessment there is checked against that band; the
    third contact suggests MARAC by count alone."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    first = await handler.create_session(phone=PHONE, ref="CAD-1")
    stored = (await assess(handler, first, {"answers": dash(15)}))["assessment"]
    _, body = await handler.api("POST", f"/api/sessions/{first}/referrals",
                                {"kind": "marac", "status": "suggested"}, expect=201)
    assert body["referral"]["status"] == "suggested"
    await handler.api("POST", f"/api/sessions/{first}/referrals", MARAC_MADE, expect=201)
    await handler.api("POST", f"/api/sessions/{first}/referrals",
                      {"kind": "idva", "status": "declined"}, expect=201)

    _, created = await handler.api("POST", "/api/sessions",
                                   {"incident_ref": "CAD-2", "phone": "+44 7911 123456"},
                                   expect=201)
    second = created["session"]["id"]
    history = created["status"]["history"]  # at once, on creation
    assert history["repeat_contact"] is True and history["contacts_12_months"] == 1
    assert history["last_band"] == "high"
    assert abs(history["last_band_at"] - stored["at"]) < 1
    assert history["marac_12_months"] is True
    # Facts only: the kind and status, not the notes or safe times (issue 11, finding 8).
    assert history["open_referrals"] == [{"kind": "marac", "status": "made"}]
    assert history["marac_repeat_contacts"] is False

    # Lower than the previous contact's band: needs a reason even though the score agrees.
    refused = await assess(handler, second, {"answers": dash(3)}, expect=409)
    assert "previous band" in refused["message"]
    lowered = (await assess(handler, second, {"answers": dash(3), "reason": REASON}))[
        "assessment"]
    assert lowered["previous_band"] == "high" and lowered["final_band"] == "standard"
    assert lowered["downgrade_rules"] == ["below_previous"]
    assert lowered["marac_suggested"] is False

    third = await handler.create_session(phone="447911123456", ref="CAD-3")
    _, body = await handler.api("GET", f"/api/sessions/{third}", expect=200)
    history = body["status"]["history"]
    assert history["contacts_12_months"] == 2 and history["last_band"] == "standard"
    assert history["marac_repeat_contacts"] is True
    by_count = (await assess(handler, third, {"answers": dash(1)}))["assessment"]
    assert by_count["final_band"] == "standard" and by_count["downgraded"] is False
    assert by_count["marac_suggested"] is True
    assert by_count["marac_triggers"] == ["repeat_contacts"]

    # Another number's history is untouched.
    other = await handler.create_session(phone="07400 123456", ref="CAD-4")
    _, body = await handler.api("GET", f"/api/sessions/{other}", expect=200)
    assert body["status"]["history"]["last_band"] is None
    assert body["status"]["history"]["open_referrals"] == []


async def test_a_shredded_earlier_session_still_counts_as_a_contact(live: LiveServer) -> None:
    """After crypto-shredding, an earlier session adds its contact but no band or referral,
    and its own case notes can no longer be written or read."""
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    first = await handler.create_session(phone=PHONE)
    await assess(handler, first, {"answers": dash(14)})
    await handler.api("POST", f"/api/sessions/{first}/referrals", MARAC_MADE, expect=201)
    assert await live.app[keys.RECORD].shred(first)
    second = await handler.create_session(phone=PHONE, ref="CAD-2")
    _, body = await handler.api("GET", f"/api/sessions/{second}", expect=200)
    history = body["status"]["history"]
    assert history["contacts_12_months"] == 1 and history["repeat_contact"] is True
    assert history["last_band"] is None and history["open_referrals"] == []
    assert history["marac_12_months"] is False
    _, gone = await handler.api("GET", f"/api/sessions/{first}/case", expect=410)
    assert gone["error"] == "shredded"
    await handler.api("POST", f"/api/sessions/{first}/referrals", MARAC_MADE, expect=410)


async def test_who_may_write_and_read_case_notes(live: LiveServer) -> None:
    """The session's handler and its invited specialist write; another handler sees nothing
    (404); a supervisor and an auditor read but may not write, and their reads are recorded."""
    call = await open_call(live, "hannah")
    session = call.session_id
    specialist, _ = await bring_specialist(live, call, "sam")
    by_specialist = (await assess(specialist, session, {"answers": dash(10)}))["assessment"]
    assert by_specialist["final_band"] == "medium" and by_specialist["by_role"] == "specialist"
    await specialist.api("POST", f"/api/sessions/{session}/referrals",
                         {"kind": "idva", "status": "made"}, expect=201)

    stranger = await live.staff_client("harry", StaffRole.HANDLER)
    _, body = await stranger.api("POST", f"/api/sessions/{session}/risk",
                                 {"answers": dash(1)}, expect=404)
    assert body["error"] == "not_found"
    await stranger.api("POST", f"/api/sessions/{session}/referrals",
                       {"kind": "idva", "status": "made"}, expect=404)
    await stranger.api("GET", f"/api/sessions/{session}/case", expect=404)
    other_specialist = await live.staff_client("sue", StaffRole.SPECIALIST)
    await other_specialist.api("GET", f"/api/sessions/{session}/case", expect=404)

    auditor = await live.staff_client("audrey", StaffRole.AUDITOR)
    supervisor = await live.staff_client("sophie", StaffRole.SUPERVISOR)
    for reader in (auditor, supervisor):
        _, body = await reader.api("GET", f"/api/sessions/{session}/case", expect=200)
        assert body["case"]["assessment"]["score"] == 10
        assert [r["kind"] for r in body["case"]["referrals"]] == ["idva"]
        await reader.api("POST", f"/api/sessions/{session}/risk", {"answers": dash(1)},
                         expect=403)
        await reader.api("POST", f"/api/sessions/{session}/referrals",
                         {"kind": "idva", "status": "closed"}, expect=403)
    _, body = await call.staff.api("GET", f"/api/sessions/{session}/case", expect=200)
    assert body["case"]["assessments"] == 1  # the refused writes stored nothing

    events = await live.app[keys.RECORD].read(session)
    reads = sorted(e.body["by"] for e in events if e.header.kind == "record_read")
    ids = sorted([(await auditor.api("GET", "/api/me"))[1]["id"],
                  (await supervisor.api("GET", "/api/me"))[1]["id"]])
    assert reads == ids  # the handler's own reads are not noted; the others' are
    assert [e.header.kind for e in events].count("risk_assessment") == 1


async def test_answers_and_notes_are_not_in_the_database_in_plaintext(
    backend: dict[str, Any], request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    """What is written in an assessment (reason, free-text answers) and a referral (notes,
    agency) is only in the encrypted record: not a byte of it in the database files (or in
    Redis's keys and append-only files)."""
    redis = request.getfixturevalue("redis_server") if backend else None
    live = await start_server(tmp_path, **backend)
    try:
        handler = await live.staff_client("hannah", StaffRole.HANDLER)
        session = await handler.create_session(phone=PHONE)
        await assess(handler, session, {"answers": dash(14), "final_band": "medium",
                                        "reason": REASON})
        threat = "Ex-partner Gary Pinkerton threatened her with a crossbow"
        thrive = (await assess(handler, session, {
            "form": "thrive", "answers": {**THRIVE_LEVELS, "threat": threat,
                                          "priority": "high"}}))["assessment"]
        assert thrive["score"] is None and thrive["computed_band"] == "high"
        agency = "Bluebell Womens Aid Kirkstall"
        await handler.api("POST", f"/api/sessions/{session}/referrals",
                          {"kind": "other_agency", "status": "made", "agency": agency,
                           "notes": NOTES}, expect=201)
        _, case = await handler.api("GET", f"/api/sessions/{session}/case", expect=200)
        assert case["case"]["assessment"]["answers"] == {**THRIVE_LEVELS, "threat": threat,
                                                         "priority": "high"}
        assert case["case"]["referrals"][0]["notes"] == NOTES
        stored = await live.persisted_bytes(redis)
    finally:
        await live.stop()
    on_disk = database_bytes(tmp_path / "data") + (redis.aof_bytes() if redis else b"")
    assert on_disk, "no database files found"
    stored += on_disk
    for secret in (REASON, threat, "Pinkerton", agency, NOTES, "bluebell", "crossbow"):
        assert secret.encode() not in stored, f"{secret!r} is in the database in the clear"
