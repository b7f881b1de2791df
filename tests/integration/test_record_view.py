"""Reading a session's decrypted case record: the auditor's page and JSON show what happened
in a real call (chat, location, staff-only advice, the end), every read is written to the
record first (with the reader's staff id), other roles are refused, unknown sessions are not
found, and a purged session shows a calm message instead of content."""

from __future__ import annotations

import re

import aiohttp
import pytest

from server import keys
from server.accounts import StaffRole
from tests.support.calls import Call, barrier, open_call
from tests.support.live import LiveServer, StaffClient

CHAT = "He has gone out, I can talk for a minute"
ADVICE = "Ask about the children before the call drops"
LAT, LON, ACCURACY = 51.50135, -0.14189, 12.0
INLINE = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=", re.I)


async def finished_call(live: LiveServer) -> Call:
    """A real call: caller chats, shares a location, handler advises, then ends it."""
    call = await open_call(live, "hannah")
    await call.caller.send({"type": "chat", "text": CHAT})
    await call.handler.expect("chat", text=CHAT)
    await call.caller.send({"type": "chat", "canned": "cant_talk"})
    await call.handler.expect("chat", canned="cant_talk")
    await call.caller.send({"type": "location", "lat": LAT, "lon": LON, "accuracy": ACCURACY,
                            "ts": 1_700_000_000_000})
    await call.handler.expect("location")
    await barrier(call.caller)
    await call.handler.send({"type": "advice", "text": ADVICE})
    await call.handler.expect("advice", text=ADVICE)
    await call.handler.send({"type": "control", "op": "end", "reason": "caller_safe"})
    assert await call.handler.expect_closed() == (1000, "session_ended")
    return call


async def page(staff: StaffClient, path: str) -> tuple[int, str]:
    async with staff.http.get(f"{staff.server.url}{path}") as response:
        return response.status, await response.text()


async def reads(live: LiveServer, session_id: str) -> list[dict[str, object]]:
    events = await live.app[keys.RECORD].read(session_id)
    return [e.body for e in events if e.header.kind == "record_read"]


@pytest.fixture
async def auditor(live: LiveServer) -> StaffClient:
    return await live.staff_client("audrey", StaffRole.AUDITOR)


async def test_auditor_page_shows_the_call_and_the_read_is_recorded_first(
        live: LiveServer, auditor: StaffClient) -> None:
    call = await finished_call(live)
    status, text = await page(auditor, f"/records/{call.session_id}")
    assert status == 200, text
    assert CHAT in text
    assert "I can&#39;t talk" in text or "I can't talk" in text  # canned reply, in English
    assert f"{LAT}, {LON}" in text and "± 12.0 m" in text
    advice_row = re.search(r'<tr data-testid="record-event" data-kind="advice"[^>]*>(.*?)</tr>',
                           text, re.S)
    assert advice_row and ADVICE in advice_row.group(1)
    assert 'data-staff-only="true"' in advice_row.group(0)
    assert "Staff only" in advice_row.group(1)
    assert 'data-kind="session_ended"' in text and "Caller is safe" in text
    assert "Handler / Hannah" in text  # who: role and display name
    assert "+447911123456" not in text  # the number stays masked
    # The read is on the record, and shows in the very page it produced (the newest row).
    kinds = re.findall(r'data-testid="record-event" data-kind="([a-z_]+)"', text)
    assert kinds[-1] == "record_read"
    assert "Auditor / Audrey" in text
    assert not INLINE.search(text), INLINE.search(text)


async def test_each_read_appends_one_record_read_with_the_readers_id(
        live: LiveServer, auditor: StaffClient) -> None:
    call = await finished_call(live)
    audrey = await live.app[keys.ACCOUNTS].by_username("audrey")
    assert audrey is not None
    assert await reads(live, call.session_id) == []
    await page(auditor, f"/records/{call.session_id}")
    assert await reads(live, call.session_id) == [{"by": audrey.id, "via": "page"}]
    await auditor.api("GET", f"/api/sessions/{call.session_id}/record", expect=200)
    assert await reads(live, call.session_id) == [{"by": audrey.id, "via": "page"},
                                                  {"by": audrey.id, "via": "api"}]
    supervisor = await live.staff_client("sam", StaffRole.SUPERVISOR)
    status, _ = await page(supervisor, f"/records/{call.session_id}")
    assert status == 200
    sam = await live.app[keys.ACCOUNTS].by_username("sam")
    assert sam is not None
    assert [r["by"] for r in await reads(live, call.session_id)] == [audrey.id, audrey.id, sam.id]


async def test_json_matches_the_record(live: LiveServer, auditor: StaffClient) -> None:
    call = await finished_call(live)
    _, body = await auditor.api("GET", f"/api/sessions/{call.session_id}/record", expect=200)
    assert body["purged"] is False
    assert body["session"]["id"] == call.session_id
    assert body["session"]["end_reason"] == "Caller is safe"
    stored = await live.app[keys.RECORD].read(call.session_id)
    # Everything that was on the record when it was read, the read itself included.
    assert [e["seq"] for e in body["events"]] == [e.header.seq for e in stored]
    assert [e["kind"] for e in body["events"]] == [e.header.kind for e in stored]
    by_kind = {e["kind"]: e for e in body["events"]}
    assert by_kind["session_created"]["body"]["phone"] != "+447911123456"
    chats = [e for e in body["events"] if e["kind"] == "chat"]
    assert chats[0]["body"]["text"] == CHAT and chats[0]["who"] == "Caller"
    assert chats[1]["details"] == [{"label": "Quick reply", "text": "I can't talk"}]
    location = by_kind["location"]
    assert (location["body"]["lat"], location["body"]["lon"]) == (LAT, LON)
    assert {"label": "Accuracy", "text": "± 12.0 m"} in location["details"]
    advice = by_kind["advice"]
    assert advice["staff_only"] is True and advice["body"]["text"] == ADVICE
    assert advice["who"] == "Handler / Hannah"
    assert not any(e["staff_only"] for e in body["events"] if e["kind"] != "advice")
    assert by_kind["session_ended"]["body"]["reason"] == "caller_safe"
    assert body["events"][-1]["kind"] == "record_read"
    assert body["events"][-1]["body"]["via"] == "api"


async def test_handler_and_specialist_are_refused(live: LiveServer) -> None:
    call = await finished_call(live)
    specialist = await live.staff_client("sasha", StaffRole.SPECIALIST)
    for staff in (call.staff, specialist):
        status, _ = await page(staff, f"/records/{call.session_id}")
        assert status == 403
        status, body = await staff.api("GET", f"/api/sessions/{call.session_id}/record")
        assert status == 403 and body["error"] == "forbidden"
    assert await reads(live, call.session_id) == []
    status, text = await page(call.staff, "/console")
    assert status == 200 and "/records/" not in text  # no record link for handlers


async def test_unknown_session_is_not_found_and_nothing_is_written(
        live: LiveServer, auditor: StaffClient) -> None:
    status, _ = await page(auditor, "/records/no-such-session")
    assert status == 404
    status, body = await auditor.api("GET", "/api/sessions/no-such-session/record")
    assert status == 404 and body["error"] == "not_found"
    async for record in live.app[keys.RECORD].iterate_raw():
        assert record.header.session_ref != "no-such-session"


async def test_signed_out_reader_is_sent_to_sign_in(live: LiveServer) -> None:
    call = await finished_call(live)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{live.url}/records/{call.session_id}",
                            allow_redirects=False) as response:
            assert response.status == 303
    assert await reads(live, call.session_id) == []


async def test_purged_session_shows_a_calm_message(live: LiveServer,
                                                   auditor: StaffClient) -> None:
    call = await finished_call(live)
    assert await live.app[keys.RECORD].shred(call.session_id)
    status, text = await page(auditor, f"/records/{call.session_id}")
    assert status == 200, text
    assert "purged under the retention policy" in text
    assert CHAT not in text and ADVICE not in text
    assert 'data-testid="record-event"' not in text
    _, body = await auditor.api("GET", f"/api/sessions/{call.session_id}/record", expect=200)
    assert body["purged"] is True and body["events"] == []
    assert not INLINE.search(text)


async def test_supervisor_list_links_to_the_record(live: LiveServer,
                                                   auditor: StaffClient) -> None:
    call = await finished_call(live)
    status, text = await page(auditor, "/supervisor")
    assert status == 200
    assert f'href="/records/{call.session_id}"' in text
