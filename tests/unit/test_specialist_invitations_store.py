"""Specialist invitations: one contract, run on SQLite and on a real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from server.redis_backend.invitations import RedisSpecialistInvitations
from server.specialists import (
    InvitationState,
    InvitationStore,
    SpecialistInvitation,
    SpecialistInvitations,
)
from tests.support.call_stores import (
    BACKENDS,
    PREFIX,
    RING_SECONDS,
    CallStores,
    call_stores,
    redis_stores,
)
from tests.support.redis_server import RedisServer

I = InvitationState  # noqa: E741


def _typed(store: SpecialistInvitations | RedisSpecialistInvitations) -> InvitationStore:
    """mypy checks that both implementations satisfy the Protocol."""
    return store


@pytest.fixture(params=BACKENDS)
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[CallStores]:
    async with call_stores(request) as built:
        yield built


@pytest.fixture
def invitations(stores: CallStores) -> InvitationStore:
    return stores.invitations


class Cast:
    """A session with its handler and two specialists."""

    def __init__(self, session: str, handler: int, sam: int, sue: int) -> None:
        self.session, self.handler, self.sam, self.sue = session, handler, sam, sue


@pytest.fixture
async def cast(stores: CallStores) -> Cast:
    session = await stores.new_session()
    sam = await stores.staff("sam", "specialist")
    sue = await stores.staff("sue", "specialist")
    return Cast(session, await stores.handler(), sam, sue)


async def test_ring_starts_ringing_for_the_ring_time(
    invitations: InvitationStore, cast: Cast
) -> None:
    before = time.time()
    invitation = await invitations.ring(cast.session, cast.sam, cast.handler)
    assert (invitation.session_id, invitation.specialist_id, invitation.invited_by) == (
        cast.session, cast.sam, cast.handler
    )
    assert invitation.state is I.RINGING and invitation.answered_at is None
    assert before <= invitation.created_at <= time.time()
    assert invitation.expires_at == pytest.approx(invitation.created_at + RING_SECONDS)
    assert len(invitation.id) == 16 and int(invitation.id, 16) >= 0
    assert await invitations.get(invitation.id) == invitation
    assert await invitations.latest(cast.session) == invitation
    assert await invitations.ringing_for(cast.sam) == [invitation]
    assert await invitations.ringing_for(cast.sue) == []
    assert await invitations.get("0123456789abcdef") is None


async def test_a_new_ring_cancels_the_one_still_ringing(
    invitations: InvitationStore, cast: Cast
) -> None:
    first = await invitations.ring(cast.session, cast.sam, cast.handler)
    second = await invitations.ring(cast.session, cast.sue, cast.handler)
    cancelled = await invitations.get(first.id)
    assert cancelled is not None and cancelled.state is I.CANCELLED
    assert cancelled.answered_at is not None and cancelled.answered_at >= first.created_at
    assert await invitations.ringing_for(cast.sam) == []
    assert await invitations.ringing_for(cast.sue) == [second]
    assert await invitations.latest(cast.session) == second
    assert await invitations.tried(cast.session) == {cast.sam, cast.sue}
    # A cancelled invitation can no longer be accepted.
    assert await invitations.answer(first.id, cast.sam, I.ACCEPTED) is None


async def test_ringing_in_one_session_leaves_another_alone(
    stores: CallStores, cast: Cast
) -> None:
    invitations = stores.invitations
    other = await stores.new_session()
    mine = await invitations.ring(cast.session, cast.sam, cast.handler)
    theirs = await invitations.ring(other, cast.sam, cast.handler)
    assert await invitations.ringing_for(cast.sam) == [mine, theirs]  # oldest first
    assert await invitations.tried(other) == {cast.sam}
    assert await invitations.tried(await stores.new_session()) == set()


async def test_accept_while_ringing(invitations: InvitationStore, cast: Cast) -> None:
    invitation = await invitations.ring(cast.session, cast.sam, cast.handler)
    assert not await invitations.has_accepted(cast.session, cast.sam)
    assert await invitations.was_invited(cast.session, cast.sam)
    assert not await invitations.was_invited(cast.session, cast.sue)

    now = invitation.created_at + 3
    accepted = await invitations.answer(invitation.id, cast.sam, I.ACCEPTED, now=now)
    assert accepted is not None and accepted.state is I.ACCEPTED
    assert accepted.answered_at == now
    assert await invitations.has_accepted(cast.session, cast.sam)
    assert not await invitations.has_accepted(cast.session, cast.sue)
    assert await invitations.ringing_for(cast.sam) == []
    # Answered once: a second answer, a time-out or a cancel change nothing.
    assert await invitations.answer(invitation.id, cast.sam, I.DECLINED) is None
    assert not await invitations.finish(invitation.id, I.TIMED_OUT)
    assert await invitations.cancel_session(cast.session) == []
    assert await invitations.get(invitation.id) == accepted


async def test_decline_is_not_acceptance(invitations: InvitationStore, cast: Cast) -> None:
    invitation = await invitations.ring(cast.session, cast.sam, cast.handler)
    declined = await invitations.answer(invitation.id, cast.sam, I.DECLINED)
    assert declined is not None and declined.state is I.DECLINED
    assert not await invitations.has_accepted(cast.session, cast.sam)
    assert await invitations.was_invited(cast.session, cast.sam)  # still sees the session


async def test_only_the_invited_specialist_may_answer(
    invitations: InvitationStore, cast: Cast
) -> None:
    invitation = await invitations.ring(cast.session, cast.sam, cast.handler)
    assert await invitations.answer(invitation.id, cast.sue, I.ACCEPTED) is None
    assert not await invitations.has_accepted(cast.session, cast.sue)
    assert await invitations.get(invitation.id) == invitation
    assert await invitations.answer("0123456789abcdef", cast.sam, I.ACCEPTED) is None


async def test_a_late_answer_loses(invitations: InvitationStore, cast: Cast) -> None:
    invitation = await invitations.ring(cast.session, cast.sam, cast.handler)
    assert await invitations.answer(
        invitation.id, cast.sam, I.ACCEPTED, now=invitation.expires_at
    ) is None
    assert await invitations.get(invitation.id) == invitation  # still ringing, till timed out
    assert await invitations.finish(invitation.id, I.TIMED_OUT)
    timed_out = await invitations.get(invitation.id)
    assert timed_out is not None and timed_out.state is I.TIMED_OUT
    assert timed_out.answered_at is not None
    assert await invitations.answer(invitation.id, cast.sam, I.ACCEPTED) is None
    assert not await invitations.finish(invitation.id, I.CANCELLED)
    assert not await invitations.finish("0123456789abcdef", I.CANCELLED)


async def test_expire_stale_times_out_only_what_passed(
    stores: CallStores, cast: Cast
) -> None:
    invitations = stores.invitations
    other = await stores.new_session()
    first = await invitations.ring(cast.session, cast.sam, cast.handler)
    second = await invitations.ring(other, cast.sue, cast.handler)
    assert await invitations.expire_stale(now=first.expires_at - 1) == 0
    assert await invitations.expire_stale(now=first.expires_at) == 1
    stale = await invitations.get(first.id)
    assert stale is not None and stale.state is I.TIMED_OUT
    assert stale.answered_at == first.expires_at  # when it stopped ringing, not now
    assert await invitations.get(second.id) == second
    assert await invitations.expire_stale(now=second.expires_at + 1) == 1
    assert await invitations.expire_stale(now=second.expires_at + 2) == 0
    assert await invitations.ringing_for(cast.sam) == []
    assert await invitations.ringing_for(cast.sue) == []


def ringing_for_seconds(stores: CallStores, seconds: int) -> InvitationStore:
    """The same backend's invitations with another ring time."""
    if stores.db is not None:
        return SpecialistInvitations(stores.db, seconds)
    assert stores.redis is not None
    return RedisSpecialistInvitations(stores.redis, seconds, prefix=PREFIX)


async def test_ringing_for_skips_what_has_run_out(stores: CallStores, cast: Cast) -> None:
    """ringing_for goes by the clock, even before anything marks an invitation timed out."""
    short = ringing_for_seconds(stores, 0)
    gone = await short.ring(cast.session, cast.sam, cast.handler)
    assert await short.ringing_for(cast.sam) == []
    assert await short.get(gone.id) == gone and gone.state is I.RINGING
    assert await short.answer(gone.id, cast.sam, I.ACCEPTED) is None
    other = await stores.new_session()
    live = await stores.invitations.ring(other, cast.sam, cast.handler)
    assert await stores.invitations.ringing_for(cast.sam) == [live]
    assert await short.expire_stale() == 1
    timed_out = await short.get(gone.id)
    assert timed_out is not None and timed_out.state is I.TIMED_OUT
    assert timed_out.answered_at == gone.expires_at


async def test_cancel_session_returns_what_was_ringing(
    stores: CallStores, cast: Cast
) -> None:
    invitations = stores.invitations
    other = await stores.new_session()
    answered = await invitations.ring(cast.session, cast.sue, cast.handler)
    await invitations.answer(answered.id, cast.sue, I.DECLINED)
    ringing = await invitations.ring(cast.session, cast.sam, cast.handler)
    elsewhere = await invitations.ring(other, cast.sam, cast.handler)

    cancelled = await invitations.cancel_session(cast.session)
    assert cancelled == [ringing]  # as it was when found ringing
    fresh = await invitations.get(ringing.id)
    assert fresh is not None and fresh.state is I.CANCELLED and fresh.answered_at is not None
    assert await invitations.ringing_for(cast.sam) == [elsewhere]
    assert await invitations.cancel_session(cast.session) == []
    assert await invitations.latest(cast.session) == fresh
    assert await invitations.tried(cast.session) == {cast.sam, cast.sue}


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


async def test_redis_accept_racing_time_out_and_cancel_one_wins(clients: list[Redis]) -> None:
    nodes = [redis_stores(c) for c in clients]
    session = await nodes[0].new_session()
    for _ in range(5):
        invitation = await nodes[0].invitations.ring(session, 42, 1)
        results = await asyncio.gather(
            *(node.invitations.answer(invitation.id, 42, I.ACCEPTED) for node in nodes[:8]),
            *(node.invitations.finish(invitation.id, I.TIMED_OUT) for node in nodes[8:14]),
            *(node.invitations.cancel_session(session) for node in nodes[14:]),
        )
        wins = [r for r in results if r is True or isinstance(r, SpecialistInvitation)
                or (isinstance(r, list) and r)]
        assert len(wins) == 1, results
        final = await nodes[0].invitations.get(invitation.id)
        assert final is not None and final.state is not I.RINGING
        assert await nodes[0].invitations.has_accepted(session, 42) is (
            final.state is I.ACCEPTED
        )
        assert await nodes[0].invitations.ringing_for(42) == []


async def test_redis_many_nodes_ringing_at_once_leave_one_ringing(clients: list[Redis]) -> None:
    nodes = [redis_stores(c) for c in clients]
    session = await nodes[0].new_session()
    rung = await asyncio.gather(
        *(node.invitations.ring(session, 100 + i, 1) for i, node in enumerate(nodes))
    )
    states = [await nodes[0].invitations.get(r.id) for r in rung]
    assert [s.state for s in states if s is not None].count(I.RINGING) == 1
    ringing = [r for r in rung if (await nodes[0].invitations.ringing_for(r.specialist_id))]
    assert len(ringing) == 1
    assert await nodes[0].invitations.tried(session) == {100 + i for i in range(20)}


async def test_redis_invitations_survive_a_restart_and_never_expire(
    redis_url: str, redis_server: RedisServer
) -> None:
    client = Redis.from_url(redis_url)
    try:
        stores = redis_stores(client)
        session = await stores.new_session()
        accepted = await stores.invitations.answer(
            (await stores.invitations.ring(session, 5, 1)).id, 5, I.ACCEPTED
        )
        ringing = await stores.invitations.ring(session, 6, 1)
        keys = [k async for k in client.scan_iter()]
        assert keys and [await client.ttl(k) for k in keys] == [-1] * len(keys)
    finally:
        await client.aclose()

    redis_server.stop()
    redis_server.start()
    client = Redis.from_url(redis_url)
    try:
        stores = redis_stores(client)
        invitations = stores.invitations
        assert accepted is not None and await invitations.get(accepted.id) == accepted
        assert await invitations.has_accepted(session, 5)
        assert await invitations.ringing_for(6) == [ringing]
        assert [s.id for s in await stores.sessions.for_specialist(5)] == [session]
        # A node restarting after the ring time marks it timed out.
        assert await invitations.expire_stale(now=ringing.expires_at) == 1
        assert await invitations.latest(session) == SpecialistInvitation(
            **{**vars(ringing), "state": I.TIMED_OUT, "answered_at": ringing.expires_at}
        )
        assert all([k.startswith(PREFIX.encode()) async for k in client.scan_iter()])
    finally:
        await client.aclose()


async def test_overdue_lists_only_rings_that_ended_before_the_given_time(
    invitations: InvitationStore, cast: Cast
) -> None:
    ringing = await invitations.ring(cast.session, cast.sam, cast.handler)
    assert await invitations.overdue(ringing.expires_at - 1) == []
    assert await invitations.overdue(ringing.expires_at + 1) == [ringing]
    # Answered invitations are never overdue, whatever the time.
    assert await invitations.finish(ringing.id, I.CANCELLED)
    assert await invitations.overdue(ringing.expires_at + 1) == []
