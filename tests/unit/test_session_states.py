"""The video session life cycle: one contract, run on SQLite and on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from server.redis_backend.calls import RedisVideoSessions
from server.sessions import (
    ORDER,
    IllegalTransition,
    SessionInputError,
    SessionState,
    VideoSession,
    VideoSessions,
    VideoSessionStore,
    validate_incident_ref,
)
from tests.support.call_stores import BACKENDS, CallStores, call_stores, redis_stores
from tests.support.redis_server import RedisServer

S = SessionState
PHONE = "+447911123456"

STAMP = {
    S.CREATED: "created_at",
    S.INVITED: "invited_at",
    S.OPENED: "opened_at",
    S.JOINED: "joined_at",
    S.CONNECTED: "connected_at",
    S.ENDED: "ended_at",
}


def _typed(store: VideoSessions | RedisVideoSessions) -> VideoSessionStore:
    """mypy checks that both implementations satisfy the Protocol."""
    return store


@pytest.fixture(params=BACKENDS)
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[CallStores]:
    async with call_stores(request) as built:
        yield built


@pytest.fixture
async def sessions(stores: CallStores) -> VideoSessionStore:
    return stores.sessions


@pytest.fixture
async def handler_id(stores: CallStores) -> int:
    return await stores.staff()


async def new_session(sessions: VideoSessionStore, handler_id: int) -> VideoSession:
    return await sessions.create("CAD-2024/0001", PHONE, handler_id)


def stamps(session: VideoSession) -> dict[SessionState, float | None]:
    return {state: getattr(session, column) for state, column in STAMP.items()}


async def test_create_starts_in_created_with_only_created_at(
    sessions: VideoSessionStore, handler_id: int
) -> None:
    session = await sessions.create("  CAD-1  ", PHONE, handler_id, "cy")
    assert session.state is S.CREATED
    assert not session.ended
    assert session.incident_ref == "CAD-1"
    assert (session.phone, session.handler_id, session.language) == (PHONE, handler_id, "cy")
    assert session.created_at > 0
    assert [v for k, v in stamps(session).items() if k is not S.CREATED] == [None] * 5
    assert session.end_reason is None
    assert await sessions.get(session.id) == session


async def test_session_ids_are_random_and_distinct(
    sessions: VideoSessionStore, handler_id: int
) -> None:
    ids = {(await new_session(sessions, handler_id)).id for _ in range(5)}
    assert len(ids) == 5
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)


async def test_legal_path_sets_each_timestamp_once_in_order(
    sessions: VideoSessionStore, handler_id: int
) -> None:
    session = await new_session(sessions, handler_id)
    path = [S.INVITED, S.OPENED, S.JOINED, S.CONNECTED]
    for target in path:
        before = stamps(session)
        session = await sessions.advance(session.id, target)
        assert session.state is target
        after = stamps(session)
        assert after[target] is not None
        # Nothing already stamped moves, nothing later is stamped early.
        assert {k: v for k, v in after.items() if k is not target} == {
            k: v for k, v in before.items() if k is not target
        }
    session = await sessions.advance(session.id, S.ENDED, "caller_safe")
    assert session.state is S.ENDED and session.ended
    assert session.end_reason == "caller_safe"
    times = [session.timeline()[name] for name in
             ("created", "invited", "opened", "joined", "connected", "ended")]
    assert all(t is not None for t in times)
    assert times == sorted(times)  # type: ignore[type-var]
    assert await sessions.get(session.id) == session


async def walk_to(
    sessions: VideoSessionStore, session_id: str, state: SessionState
) -> VideoSession:
    session = await sessions.reach(session_id, state)
    assert session.state is state
    return session


@pytest.mark.parametrize(
    ("start", "target"),
    [
        # skipping ahead
        (S.CREATED, S.OPENED),
        (S.CREATED, S.JOINED),
        (S.CREATED, S.CONNECTED),
        (S.INVITED, S.JOINED),
        (S.OPENED, S.CONNECTED),
        # going back
        (S.INVITED, S.CREATED),
        (S.JOINED, S.INVITED),
        (S.CONNECTED, S.OPENED),
        (S.CONNECTED, S.CREATED),
        # standing still
        (S.CREATED, S.CREATED),
        (S.JOINED, S.JOINED),
    ],
)
async def test_illegal_transitions_are_refused_and_change_nothing(
    sessions: VideoSessionStore, handler_id: int, start: SessionState, target: SessionState
) -> None:
    session = await new_session(sessions, handler_id)
    session = await walk_to(sessions, session.id, start)
    with pytest.raises(IllegalTransition) as info:
        await sessions.advance(session.id, target)
    assert (info.value.current, info.value.target) == (start, target)
    assert await sessions.get(session.id) == session


@pytest.mark.parametrize("target", list(SessionState))
async def test_an_ended_session_goes_nowhere(
    sessions: VideoSessionStore, handler_id: int, target: SessionState
) -> None:
    session = await new_session(sessions, handler_id)
    ended = await sessions.advance(session.id, S.ENDED, "first")
    with pytest.raises(IllegalTransition) as info:
        await sessions.advance(session.id, target, "second")
    assert info.value.current is S.ENDED
    assert await sessions.get(session.id) == ended
    assert ended.end_reason == "first"


@pytest.mark.parametrize("state", ORDER)
async def test_end_from_any_state(
    sessions: VideoSessionStore, handler_id: int, state: SessionState
) -> None:
    session = await new_session(sessions, handler_id)
    session = await walk_to(sessions, session.id, state)
    ended = await sessions.advance(session.id, S.ENDED, "handler_ended")
    assert ended.state is S.ENDED
    assert ended.ended_at is not None and ended.ended_at >= ended.created_at
    assert ended.end_reason == "handler_ended"
    # The stamps of the steps it went through stay; later ones stay empty.
    reached = ORDER.index(state)
    for i, step in enumerate(ORDER):
        assert (getattr(ended, STAMP[step]) is not None) == (i <= reached)


async def test_reach_walks_forward_through_every_step(
    sessions: VideoSessionStore, handler_id: int
) -> None:
    session = await new_session(sessions, handler_id)
    connected = await sessions.reach(session.id, S.CONNECTED)
    assert connected.state is S.CONNECTED
    assert all(getattr(connected, STAMP[step]) is not None for step in ORDER)
    assert connected.ended_at is None


async def test_reach_is_a_no_op_at_or_beyond_the_target(
    sessions: VideoSessionStore, handler_id: int
) -> None:
    session = await new_session(sessions, handler_id)
    joined = await sessions.reach(session.id, S.JOINED)
    assert await sessions.reach(session.id, S.JOINED) == joined
    assert await sessions.reach(session.id, S.OPENED) == joined
    assert await sessions.reach(session.id, S.CREATED) == joined
    assert await sessions.get(session.id) == joined


@pytest.mark.parametrize("target", ORDER)
async def test_reach_never_moves_an_ended_session(
    sessions: VideoSessionStore, handler_id: int, target: SessionState
) -> None:
    session = await new_session(sessions, handler_id)
    await sessions.advance(session.id, S.INVITED)
    ended = await sessions.advance(session.id, S.ENDED, "cancelled")
    with pytest.raises(IllegalTransition):
        await sessions.reach(session.id, target)
    assert await sessions.get(session.id) == ended


async def test_unknown_session_is_a_key_error(sessions: VideoSessionStore) -> None:
    with pytest.raises(KeyError):
        await sessions.advance("0123456789abcdef", S.INVITED)
    with pytest.raises(KeyError):
        await sessions.reach("0123456789abcdef", S.OPENED)
    assert await sessions.get("0123456789abcdef") is None


async def test_two_racing_moves_cannot_both_win(
    sessions: VideoSessionStore, handler_id: int
) -> None:
    session = await new_session(sessions, handler_id)
    results = await asyncio.gather(
        sessions.advance(session.id, S.INVITED),
        sessions.advance(session.id, S.INVITED),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["IllegalTransition", "VideoSession"]
    fresh = await sessions.get(session.id)
    assert fresh is not None and fresh.state is S.INVITED


async def test_racing_end_and_reach_leave_it_ended(
    sessions: VideoSessionStore, handler_id: int
) -> None:
    session = await new_session(sessions, handler_id)
    await asyncio.gather(
        sessions.reach(session.id, S.CONNECTED),
        sessions.advance(session.id, S.ENDED, "race"),
        return_exceptions=True,
    )
    fresh = await sessions.get(session.id)
    assert fresh is not None and fresh.state is S.ENDED and fresh.end_reason == "race"


# --- incident references -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("CAD-2024/0001", "CAD-2024/0001"),
        ("  inc 42.7_b  ", "inc 42.7_b"),
        ("A", "A"),
        ("9" * 40, "9" * 40),
        ("ref\n", "ref"),
    ],
)
def test_valid_incident_refs(raw: str, kept: str) -> None:
    assert validate_incident_ref(raw) == kept


@pytest.mark.parametrize(
    "raw",
    ["", "   ", "-leading-dash", "/slash", ".dot", "9" * 41, "a;drop table", "ref\nnext",
     "réf", "<script>", "a\tb", "50%"],
)
def test_invalid_incident_refs(raw: str) -> None:
    with pytest.raises(SessionInputError):
        validate_incident_ref(raw)


async def test_create_refuses_a_bad_ref_or_language_and_stores_nothing(
    sessions: VideoSessionStore, handler_id: int
) -> None:
    with pytest.raises(SessionInputError, match="incident reference"):
        await sessions.create("<b>", PHONE, handler_id)
    with pytest.raises(SessionInputError, match="Language"):
        await sessions.create("CAD-1", PHONE, handler_id, "fr")
    assert await sessions.recent() == []


# --- listings and repeat contacts --------------------------------------------------------------


async def test_listings_are_newest_first_and_limited(stores: CallStores) -> None:
    sessions = stores.sessions
    hannah, harry = await stores.staff("hannah"), await stores.staff("harry")
    hannahs = [await sessions.create(f"CAD-{i}", PHONE, hannah) for i in range(4)]
    harrys = [await sessions.create(f"CAD-H{i}", PHONE, harry) for i in range(2)]

    assert [s.id for s in await sessions.for_handler(hannah)] == [s.id for s in hannahs[::-1]]
    assert [s.id for s in await sessions.for_handler(harry)] == [s.id for s in harrys[::-1]]
    assert [s.id for s in await sessions.for_handler(hannah, limit=2)] == [
        hannahs[3].id, hannahs[2].id,
    ]
    assert await sessions.for_handler(hannah, limit=0) == []
    assert await sessions.for_handler(await stores.staff("nobody")) == []

    everything = [s.id for s in (*hannahs, *harrys)]
    everything.sort(key=lambda i: next(s.created_at for s in (*hannahs, *harrys) if s.id == i))
    assert [s.id for s in await sessions.recent()] == everything[::-1]
    assert [s.id for s in await sessions.recent(limit=3)] == everything[::-1][:3]
    # What a listing returns is the session as it is now.
    moved = await sessions.advance(hannahs[0].id, S.INVITED)
    assert (await sessions.for_handler(hannah))[-1] == moved


async def test_a_specialist_sees_the_sessions_they_were_invited_to(stores: CallStores) -> None:
    sessions = stores.sessions
    handler = await stores.staff("hannah")
    sam, sue = await stores.staff("sam", "specialist"), await stores.staff("sue", "specialist")
    first, second, third = [await sessions.create(f"CAD-{i}", PHONE, handler) for i in range(3)]
    await stores.invitations.ring(first.id, sam, handler)
    await stores.invitations.ring(third.id, sam, handler)
    await stores.invitations.ring(third.id, sam, handler)  # asked twice: listed once
    await stores.invitations.ring(second.id, sue, handler)

    assert [s.id for s in await sessions.for_specialist(sam)] == [third.id, first.id]
    assert [s.id for s in await sessions.for_specialist(sam, limit=1)] == [third.id]
    assert [s.id for s in await sessions.for_specialist(sue)] == [second.id]
    assert await sessions.for_specialist(await stores.staff("sid", "specialist")) == []


async def test_earlier_contacts_are_the_same_numbers_earlier_sessions(
    stores: CallStores,
) -> None:
    sessions = stores.sessions
    handler = await stores.staff()
    link, other = "a" * 64, "b" * 64
    first = await sessions.create("CAD-1", PHONE, handler, contact_link=link)
    await sessions.create("CAD-2", PHONE, handler, contact_link=other)
    unlinked = await sessions.create("CAD-3", PHONE, handler)
    second = await sessions.create("CAD-4", PHONE, handler, contact_link=link)
    third = await sessions.create("CAD-5", PHONE, handler, contact_link=link)

    assert [s.id for s in await sessions.earlier_contacts(third.id)] == [second.id, first.id]
    assert [s.id for s in await sessions.earlier_contacts(second.id)] == [first.id]
    assert await sessions.earlier_contacts(first.id) == []  # nothing before the first
    assert await sessions.earlier_contacts(unlinked.id) == []  # no link, no history
    assert await sessions.earlier_contacts("0123456789abcdef") == []
    ended = await sessions.advance(first.id, S.ENDED, "done")
    assert await sessions.earlier_contacts(second.id) == [ended]


async def test_forget_phone_blanks_only_the_number(
    sessions: VideoSessionStore, handler_id: int
) -> None:
    session = await sessions.advance((await new_session(sessions, handler_id)).id, S.INVITED)
    other = await new_session(sessions, handler_id)
    await sessions.forget_phone(session.id)
    fresh = await sessions.get(session.id)
    assert fresh is not None and fresh.phone == ""
    assert fresh == VideoSession(**{**vars(session), "phone": ""})
    assert await sessions.get(other.id) == other
    await sessions.forget_phone("0123456789abcdef")  # unknown: nothing happens, nothing made
    assert await sessions.get("0123456789abcdef") is None


async def test_phone_line_is_the_default_and_can_be_switched(
    sessions: VideoSessionStore, handler_id: int
) -> None:
    on_phone = await new_session(sessions, handler_id)
    assert on_phone.phone_line is True
    full_sound = await sessions.create("CAD-2", PHONE, handler_id, phone_line=False)
    assert full_sound.phone_line is False
    assert (await sessions.get(full_sound.id)) == full_sound
    await sessions.set_phone_line(on_phone.id, False)
    fresh = await sessions.get(on_phone.id)
    assert fresh is not None and fresh.phone_line is False
    assert fresh == VideoSession(**{**vars(on_phone), "phone_line": False})
    await sessions.set_phone_line("0123456789abcdef", True)  # unknown: nothing made
    assert await sessions.get("0123456789abcdef") is None


async def test_facts_merge_field_by_field_and_none_removes(
    sessions: VideoSessionStore, handler_id: int
) -> None:
    session = await new_session(sessions, handler_id)
    assert session.facts == {}
    await sessions.update_facts(session.id, {"rung": "stills", "rung_reason": "no_turn"})
    await sessions.update_facts(session.id, {"media": "frozen", "media_since": 1795907001.25})
    await sessions.update_facts(session.id, {"rung": "full", "rung_reason": None})
    fresh = await sessions.get(session.id)
    assert fresh is not None
    assert dict(fresh.facts) == {"rung": "full", "media": "frozen", "media_since": 1795907001.25}
    # The rest of the session is untouched, and the facts read back the same in a list.
    assert fresh == VideoSession(**{**vars(session), "facts": fresh.facts})
    assert [s.facts for s in await sessions.for_handler(handler_id)] == [fresh.facts]
    await sessions.update_facts("0123456789abcdef", {"rung": "full"})  # unknown: nothing made
    assert await sessions.get("0123456789abcdef") is None


async def test_racing_fact_reports_lose_nothing(
    sessions: VideoSessionStore, handler_id: int
) -> None:
    """The caller's page and the handler's page report at once: neither overwrites the other."""
    session = await new_session(sessions, handler_id)
    await asyncio.gather(*(
        sessions.update_facts(session.id, {f"capture_{k}": "ok"})
        for k in ("camera", "microphone", "location")
    ), sessions.update_facts(session.id, {"media": "flowing"}))
    fresh = await sessions.get(session.id)
    assert fresh is not None
    assert dict(fresh.facts) == {"capture_camera": "ok", "capture_microphone": "ok",
                                 "capture_location": "ok", "media": "flowing"}


# --- Redis: many nodes, restarts, no expiry ----------------------------------------------------


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[list[Redis]]:
    """Twenty separate clients (connection pools), like twenty server nodes."""
    made = [Redis.from_url(redis_url) for _ in range(20)]
    try:
        yield made
    finally:
        for client in made:
            await client.aclose()


async def test_redis_racing_advances_from_many_nodes_one_wins(clients: list[Redis]) -> None:
    nodes = [redis_stores(c).sessions for c in clients]
    session = await nodes[0].create("CAD-1", PHONE, 1)
    for target in (S.INVITED, S.ENDED):
        results = await asyncio.gather(
            *(node.advance(session.id, target, "race") for node in nodes),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, VideoSession)]
        assert len(winners) == 1, results
        losers = [r for r in results if isinstance(r, IllegalTransition)]
        assert len(losers) == len(nodes) - 1
        assert all(loser.current is target for loser in losers)
        assert await nodes[5].get(session.id) == winners[0]
        assert winners[0].state is target
    assert (await nodes[0].get(session.id)) == winners[0]
    assert winners[0].end_reason == "race"


async def test_redis_racing_reaches_from_many_nodes_stamp_each_step_once(
    clients: list[Redis],
) -> None:
    nodes = [redis_stores(c).sessions for c in clients]
    session = await nodes[0].create("CAD-1", PHONE, 1)
    results = await asyncio.gather(*(node.reach(session.id, S.CONNECTED) for node in nodes))
    final = await nodes[1].get(session.id)
    assert final is not None and final.state is S.CONNECTED
    # Every node ends up with the same session: the steps were each taken exactly once.
    assert all(r.state is S.CONNECTED for r in results)
    assert {r.timeline()["opened"] for r in results} == {final.opened_at}


async def test_redis_sessions_survive_a_restart_and_never_expire(
    redis_url: str, redis_server: RedisServer
) -> None:
    client = Redis.from_url(redis_url)
    try:
        sessions = redis_stores(client).sessions
        session = await sessions.create("CAD-1", PHONE, 7, "cy", contact_link="c" * 64)
        later = await sessions.create("CAD-2", PHONE, 7, contact_link="c" * 64)
        joined = await sessions.reach(session.id, S.JOINED)
        keys = [k async for k in client.scan_iter()]
        assert keys and [await client.ttl(k) for k in keys] == [-1] * len(keys)
    finally:
        await client.aclose()

    redis_server.stop()
    redis_server.start()
    client = Redis.from_url(redis_url)
    try:
        sessions = redis_stores(client).sessions
        assert await sessions.get(session.id) == joined
        assert [s.id for s in await sessions.for_handler(7)] == [later.id, session.id]
        assert await sessions.earlier_contacts(later.id) == [joined]
        ended = await sessions.advance(session.id, S.ENDED, "after restart")
        assert ended.joined_at == joined.joined_at and ended.end_reason == "after restart"
    finally:
        await client.aclose()


async def test_redis_keys_carry_the_prefix(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        sessions = RedisVideoSessions(client, prefix="site-b:")
        session = await sessions.create("CAD-1", PHONE, 3, contact_link="d" * 64)
        await sessions.advance(session.id, S.INVITED)
        keys = [k async for k in client.scan_iter()]
        assert len(keys) >= 4 and all(k.startswith(b"site-b:") for k in keys)
        assert await RedisVideoSessions(client).get(session.id) is None  # other prefix
    finally:
        await client.aclose()
