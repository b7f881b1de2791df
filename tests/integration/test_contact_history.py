"""Never in isolation: a session for a number seen before shows its earlier contacts, linked by
a keyed hash, never by the number."""

from __future__ import annotations

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
