"""Never in isolation: a session for a number seen before shows its earlier contacts, linked by
a keyed hash, never by the number."""

from __future__ import annotations

import json
from typing import Any

from server import keys
from server.accounts import StaffRole
from tests.support.live import LiveServer


async def test_repeat_contacts_are_linked_by_keyed_hash(live: LiveServer) -> None:
    handler = await live.staff_client("hannah", StaffRole.HANDLER)
    first = await handler.create_session(phone="07911 123456", ref="CAD-1")
    _, body = await handler.api("GET", f"/api/sessions/{first}", expect=200)
    assert body["status"]["history"]["total_contacts"] == 0
    assert body["status"]["history"]["repeat_contact"] is False

    # The same number written another way, twice more; and someone else in between.
    other = await handler.create_session(phone="07400 123456", ref="CAD-2")
    await handler.create_session(phone="+44 7911 123456", ref="CAD-3")
    third = await handler.create_session(phone="447911123456", ref="CAD-4")
    _, body = await handler.api("GET", f"/api/sessions/{third}", expect=200)
    history = body["status"]["history"]
    assert history["contacts_12_months"] == 2 and history["total_contacts"] == 2
    assert history["repeat_contact"] is True and history["last_contact"] is not None
    _, body = await handler.api("GET", f"/api/sessions/{other}", expect=200)
    assert body["status"]["history"]["total_contacts"] == 0

    # The page says so at once, in words.
    async with handler.http.get(f"{live.url}/console/sessions/{third}") as response:
        page = await response.text()
    assert 'data-testid="contact-history" data-repeat="true"' in page
    assert "Repeat contact" in page and "2 in the last 12 months" in page

    # The link is a keyed hash: the same for the same number, and not the number.
    links = await contact_links(live, [first, third, other])
    assert links[first] == links[third] != links[other]
    for link in links.values():
        # (Whole numbers: a short run like "7400" turns up in a random hex string now and then.)
        assert "7911123456" not in link and "7400123456" not in link and len(link) >= 32


async def contact_links(live: LiveServer, session_ids: list[str]) -> dict[str, str]:
    """Each session's stored contact link, read from whichever store the server uses."""
    stores = live.app[keys.STORES]
    if stores.redis is not None:
        prefix = live.config.redis_prefix
        return {
            sid: (await stores.redis.hget(f"{prefix}call:session:{sid}", "contact_link")).decode()
            for sid in session_ids
        }
    assert stores.db is not None
    rows = await stores.db.fetchall("SELECT id, contact_link FROM video_sessions")
    return {row["id"]: row["contact_link"] for row in rows if row["id"] in session_ids}


REFUGE = {"kind": "refuge", "status": "made", "safe_to_call": "yes",
          "agency": "Riverside refuge",
          "safe_times": [{"day": "tue", "start": "09:30", "end": "11:00"}],
          "notes": "Placed at Riverside refuge, Flat 3"}
SECRETS = ("Riverside", "Flat 3", "09:30", "safe_times", "notes", "agency")


def history_lookups(events: list[Any]) -> list[dict[str, Any]]:
    return [dict(e.body) for e in events if e.header.kind == "history_consulted"]


async def test_history_is_facts_only_never_texts_and_every_lookup_is_on_the_record(
    live: LiveServer,
) -> None:
    """Issue 11, finding 8: a handler typing a number sees counts, dates, the last band, the
    MARAC flag and the kinds of open referrals, never notes, agencies or safe call times;
    creating a session without a link texts no one; every lookup is on the record."""
    hannah = await live.staff_client("hannah", StaffRole.HANDLER)
    first = await hannah.create_session(phone="07911 123456", ref="CAD-1")
    await hannah.api("POST", f"/api/sessions/{first}/referrals", REFUGE, expect=201)

    harry = await live.staff_client("harry", StaffRole.HANDLER)
    texts = len(live.outbox())
    _, created = await harry.api("POST", "/api/sessions", {
        "incident_ref": "CAD-2", "phone": "+44 7911 123456", "send_link": False}, expect=201)
    assert len(live.outbox()) == texts  # looking the number up texted no one
    assert created["session"]["state"] == "created"
    second = created["session"]["id"]
    history = created["status"]["history"]
    assert history["total_contacts"] == 1 and history["repeat_contact"] is True
    assert history["open_referrals"] == [{"kind": "refuge", "status": "made"}]
    _, again = await harry.api("GET", f"/api/sessions/{second}", expect=200)
    async with harry.http.get(f"{live.url}/console/sessions/{second}") as response:
        page = await response.text()
    for shown in (json.dumps(created), json.dumps(again), page):
        for secret in SECRETS[:3]:
            assert secret not in shown, secret
    for secret in SECRETS:
        assert secret not in json.dumps(again["status"]["history"]), secret

    # The details are not for the handler; nor for a specialist not in the session.
    _, refused = await harry.api("GET", f"/api/sessions/{second}/history", expect=403)
    assert refused["error"] == "forbidden"
    stranger = await live.staff_client("sam", StaffRole.SPECIALIST)
    await stranger.api("GET", f"/api/sessions/{second}/history", expect=404)
    # A supervisor gets them, and that is on the record too.
    sophie = await live.staff_client("sophie", StaffRole.SUPERVISOR)
    _, details = await sophie.api("GET", f"/api/sessions/{second}/history", expect=200)
    contact = details["contacts"][0]
    assert contact["session"] == first and contact["referrals"][0]["notes"] == REFUGE["notes"]
    assert contact["referrals"][0]["safe_times"] == REFUGE["safe_times"]
    assert len(live.outbox()) == texts

    harry_id = (await harry.api("GET", "/api/me"))[1]["id"]
    sophie_id = (await sophie.api("GET", "/api/me"))[1]["id"]
    lookups = history_lookups(await live.app[keys.RECORD].read(second))
    assert [(x["by"], x["via"], x["details"]) for x in lookups] == [
        (harry_id, "api", False), (harry_id, "api", False), (harry_id, "page", False),
        (sophie_id, "api", True)]
    assert all(x["sessions"] == [first] for x in lookups)
    # The consulted session's own record says who looked at it, from which session.
    consulted = history_lookups(await live.app[keys.RECORD].read(first))
    assert [(x["by"], x["for_session"]) for x in consulted if "for_session" in x] == [
        (harry_id, second)] * 3 + [(sophie_id, second)]

    # The socket's status frames carry no history at all.
    socket = await harry.signal(second)
    assert "history" not in socket.welcome["status"]
    assert "Riverside" not in json.dumps(socket.welcome)
