"""server.sessions: the video session life cycle on a real SQLite database."""

from __future__ import annotations

import asyncio

import pytest

from server.db import Database
from server.sessions import (
    ORDER,
    IllegalTransition,
    SessionInputError,
    SessionState,
    VideoSession,
    VideoSessions,
    validate_incident_ref,
)
from tests.support.unit_db import insert_staff

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


@pytest.fixture
async def sessions(db: Database) -> VideoSessions:
    return VideoSessions(db)


@pytest.fixture
async def handler_id(db: Database) -> int:
    return await insert_staff(db)


async def new_session(sessions: VideoSessions, handler_id: int) -> VideoSession:
    return await sessions.create("CAD-2024/0001", PHONE, handler_id)


def stamps(session: VideoSession) -> dict[SessionState, float | None]:
    return {state: getattr(session, column) for state, column in STAMP.items()}


async def test_create_starts_in_created_with_only_created_at(
    sessions: VideoSessions, handler_id: int
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
    sessions: VideoSessions, handler_id: int
) -> None:
    ids = {(await new_session(sessions, handler_id)).id for _ in range(5)}
    assert len(ids) == 5
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)


async def test_legal_path_sets_each_timestamp_once_in_order(
    sessions: VideoSessions, handler_id: int
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


async def walk_to(sessions: VideoSessions, session_id: str, state: SessionState) -> VideoSession:
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
    sessions: VideoSessions, handler_id: int, start: SessionState, target: SessionState
) -> None:
    session = await new_session(sessions, handler_id)
    session = await walk_to(sessions, session.id, start)
    with pytest.raises(IllegalTransition) as info:
        await sessions.advance(session.id, target)
    assert (info.value.current, info.value.target) == (start, target)
    assert await sessions.get(session.id) == session


@pytest.mark.parametrize("target", list(SessionState))
async def test_an_ended_session_goes_nowhere(
    sessions: VideoSessions, handler_id: int, target: SessionState
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
    sessions: VideoSessions, handler_id: int, state: SessionState
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
    sessions: VideoSessions, handler_id: int
) -> None:
    session = await new_session(sessions, handler_id)
    connected = await sessions.reach(session.id, S.CONNECTED)
    assert connected.state is S.CONNECTED
    assert all(getattr(connected, STAMP[step]) is not None for step in ORDER)
    assert connected.ended_at is None


async def test_reach_is_a_no_op_at_or_beyond_the_target(
    sessions: VideoSessions, handler_id: int
) -> None:
    session = await new_session(sessions, handler_id)
    joined = await sessions.reach(session.id, S.JOINED)
    assert await sessions.reach(session.id, S.JOINED) == joined
    assert await sessions.reach(session.id, S.OPENED) == joined
    assert await sessions.reach(session.id, S.CREATED) == joined
    assert await sessions.get(session.id) == joined


@pytest.mark.parametrize("target", ORDER)
async def test_reach_never_moves_an_ended_session(
    sessions: VideoSessions, handler_id: int, target: SessionState
) -> None:
    session = await new_session(sessions, handler_id)
    await sessions.advance(session.id, S.INVITED)
    ended = await sessions.advance(session.id, S.ENDED, "cancelled")
    with pytest.raises(IllegalTransition):
        await sessions.reach(session.id, target)
    assert await sessions.get(session.id) == ended


async def test_unknown_session_is_a_key_error(sessions: VideoSessions) -> None:
    with pytest.raises(KeyError):
        await sessions.advance("0123456789abcdef", S.INVITED)
    with pytest.raises(KeyError):
        await sessions.reach("0123456789abcdef", S.OPENED)
    assert await sessions.get("0123456789abcdef") is None


async def test_two_racing_moves_cannot_both_win(sessions: VideoSessions, handler_id: int) -> None:
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
    sessions: VideoSessions, handler_id: int
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
    sessions: VideoSessions, handler_id: int
) -> None:
    with pytest.raises(SessionInputError, match="incident reference"):
        await sessions.create("<b>", PHONE, handler_id)
    with pytest.raises(SessionInputError, match="Language"):
        await sessions.create("CAD-1", PHONE, handler_id, "fr")
    assert await sessions.recent() == []
