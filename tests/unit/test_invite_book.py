"""Invite links and credentials: one contract, run on SQLite and on a real Redis."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
from redis.asyncio import Redis

from server.invites import (
    VICTIM_MESSAGES,
    InviteBook,
    InviteStore,
    LinkProblem,
    LinkRefused,
)
from server.redis_backend.links import REFUSAL_MEMORY, RedisInviteBook
from tests.support.call_stores import (
    BACKENDS,
    CREDENTIAL_TTL,
    PREFIX,
    TTL,
    CallStores,
    call_stores,
    redis_stores,
)
from tests.support.redis_server import RedisServer


def _typed(store: InviteBook | RedisInviteBook) -> InviteStore:
    """mypy checks that both implementations satisfy the Protocol."""
    return store


@pytest.fixture(params=BACKENDS)
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[CallStores]:
    async with call_stores(request) as built:
        yield built


@pytest.fixture
async def book(stores: CallStores) -> InviteStore:
    return stores.invites


@pytest.fixture
async def session_id(stores: CallStores) -> str:
    return await stores.new_session()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def secret_bits(token: str) -> int:
    return len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) * 8


async def refused(attempt: Awaitable[Any]) -> LinkProblem:
    with pytest.raises(LinkRefused) as info:
        await attempt
    assert info.value.victim_message == VICTIM_MESSAGES[info.value.problem]
    return info.value.problem


# --- tokens ------------------------------------------------------------------------------------


async def test_token_has_at_least_128_random_bits(book: InviteStore, session_id: str) -> None:
    tokens = [(await book.issue(session_id))[1] for _ in range(5)]
    for token in tokens:
        assert secret_bits(token) >= 128
        assert len(token) <= 128  # fits the lookup limit
        assert token.replace("-", "").replace("_", "").isalnum()  # URL-safe as is
    assert len(set(tokens)) == len(tokens)


async def test_only_the_tokens_hash_is_stored(
    book: InviteStore, session_id: str, stores: CallStores
) -> None:
    invite, token = await book.issue(session_id)
    _, credential = await book.redeem(token)

    if stores.db is not None:
        [row] = await stores.db.fetchall("SELECT * FROM invites")
        assert row["token_hash"] == sha256(token)
        assert token not in [str(v) for v in tuple(row)]
        [cred_row] = await stores.db.fetchall("SELECT * FROM credentials")
        assert cred_row["token_hash"] == sha256(credential.token)
        assert cred_row["invite_id"] == invite.id
    else:
        assert stores.redis is not None
        assert await stores.redis.hget(f"{PREFIX}call:invite:{invite.id}", "token_hash") == (
            sha256(token).encode()
        )
        key = f"{PREFIX}call:credential:{sha256(credential.token)}"
        assert await stores.redis.hget(key, "invite_id") == invite.id.encode()

    stored = await stores.stored_bytes()
    assert sha256(token).encode() in stored  # sanity: we are reading what was written
    assert sha256(credential.token).encode() in stored
    assert token.encode() not in stored
    assert credential.token.encode() not in stored


async def test_issue_records_times(book: InviteStore, session_id: str) -> None:
    before = time.time()
    invite, _ = await book.issue(session_id)
    assert invite.session_id == session_id
    assert before <= invite.created_at <= time.time()
    assert invite.expires_at == pytest.approx(invite.created_at + TTL)
    assert (invite.opened_at, invite.redeemed_at, invite.revoked_at) == (None, None, None)
    assert invite.sms_status == "pending"
    assert invite.link_state() == "sent"
    assert await book.latest(session_id) == invite


# --- look --------------------------------------------------------------------------------------


async def test_look_records_the_first_opening_and_never_redeems(
    book: InviteStore, session_id: str
) -> None:
    invite, token = await book.issue(session_id)
    first = await book.look(token, now=invite.created_at + 5)
    assert first.id == invite.id
    assert first.opened_at == invite.created_at + 5
    assert first.redeemed_at is None
    assert first.link_state(now=invite.created_at + 6) == "opened"

    again = await book.look(token, now=invite.created_at + 50)
    assert again.opened_at == invite.created_at + 5  # the first opening is kept
    assert again.redeemed_at is None

    # Any number of looks (link scanners, previews) leave the link usable.
    for _ in range(3):
        await book.look(token)
    redeemed, credential = await book.redeem(token)
    assert redeemed.redeemed_at is not None
    assert redeemed.opened_at == invite.created_at + 5
    assert credential.session_id == session_id


# --- redeem ------------------------------------------------------------------------------------


async def test_redeem_once_for_a_credential_then_used(
    book: InviteStore, session_id: str, stores: CallStores
) -> None:
    invite, token = await book.issue(session_id)
    now = invite.created_at + 10
    redeemed, credential = await book.redeem(token, now=now)
    assert redeemed.id == invite.id
    assert redeemed.redeemed_at == now
    assert redeemed.opened_at == now  # redeeming proves it was opened
    assert redeemed.link_state() == "redeemed"
    assert credential.session_id == session_id
    assert credential.role == "victim"
    assert credential.expires_at == now + CREDENTIAL_TTL
    assert credential.token != token
    assert secret_bits(credential.token) >= 128

    assert await refused(book.redeem(token, now=now + 1)) is LinkProblem.USED
    assert await refused(book.look(token, now=now + 1)) is LinkProblem.USED
    assert await stores.credential_count() == 1


async def test_expired_link_is_refused_but_not_used_up(book: InviteStore, session_id: str) -> None:
    invite, token = await book.issue(session_id)
    assert await refused(book.look(token, now=invite.expires_at)) is LinkProblem.EXPIRED
    assert await refused(book.redeem(token, now=invite.expires_at + 1)) is LinkProblem.EXPIRED
    assert invite.link_state(now=invite.expires_at) == "expired"
    fresh = await book.get(invite.id)
    assert fresh is not None and fresh.redeemed_at is None and fresh.opened_at is None
    # A moment before expiry it still works: the refusals did not consume it.
    _, credential = await book.redeem(token, now=invite.expires_at - 1)
    assert credential.session_id == session_id


async def test_a_new_link_revokes_the_old_one_as_replaced(
    book: InviteStore, session_id: str
) -> None:
    old, old_token = await book.issue(session_id)
    new, new_token = await book.issue(session_id)
    assert old.id != new.id and old_token != new_token

    assert await refused(book.look(old_token)) is LinkProblem.REVOKED
    assert await refused(book.redeem(old_token)) is LinkProblem.REVOKED
    replaced = await book.get(old.id)
    assert replaced is not None and replaced.revoke_reason == "replaced"
    assert replaced.link_state() == "revoked"

    assert await book.latest(session_id) == await book.get(new.id)
    _, credential = await book.redeem(new_token)
    assert credential.session_id == session_id


async def test_a_new_link_leaves_other_sessions_alone(
    book: InviteStore, stores: CallStores
) -> None:
    first, second = await stores.new_session(), await stores.new_session()
    _, token = await book.issue(first)
    await book.issue(second)
    assert (await book.look(token)).session_id == first


async def test_handler_revoke_refuses_the_link(book: InviteStore, session_id: str) -> None:
    _, token = await book.issue(session_id)
    assert await book.revoke(session_id, "revoked") == 1
    assert await refused(book.look(token)) is LinkProblem.REVOKED
    assert await refused(book.redeem(token)) is LinkProblem.REVOKED


async def test_ending_revokes_the_link_and_every_credential(
    book: InviteStore, session_id: str
) -> None:
    _, used_token = await book.issue(session_id)
    _, credential = await book.redeem(used_token)
    _, live_token = await book.issue(session_id)  # e.g. a resend after the caller dropped

    assert await book.revoke(session_id, "ended") == 1  # the one live link
    assert await refused(book.look(live_token)) is LinkProblem.ENDED
    assert await refused(book.redeem(live_token)) is LinkProblem.ENDED
    assert await refused(book.check_credential(credential.token)) is LinkProblem.ENDED
    # The already-used link still says "used", not "ended".
    assert await refused(book.look(used_token)) is LinkProblem.USED


@pytest.mark.parametrize(
    "token",
    [secrets.token_urlsafe(24), "", "x", "a" * 129, "../../etc/passwd", "' OR 1=1 --"],
    ids=["random", "empty", "short", "too-long", "path", "sql"],
)
async def test_forged_tokens_are_unknown(
    book: InviteStore, session_id: str, token: str, stores: CallStores
) -> None:
    await book.issue(session_id)
    assert await refused(book.look(token)) is LinkProblem.UNKNOWN
    assert await refused(book.redeem(token)) is LinkProblem.UNKNOWN
    assert await refused(book.check_credential(token)) is LinkProblem.UNKNOWN
    assert await stores.credential_count() == 0


async def test_the_hash_itself_is_not_a_token(book: InviteStore, session_id: str) -> None:
    """Someone who reads the database cannot use what is stored there as a link."""
    _, token = await book.issue(session_id)
    assert await refused(book.look(sha256(token))) is LinkProblem.UNKNOWN


# --- credentials -------------------------------------------------------------------------------


async def test_credential_check(book: InviteStore, session_id: str) -> None:
    invite, token = await book.issue(session_id)
    now = invite.created_at + 1
    _, credential = await book.redeem(token, now=now)

    checked = await book.check_credential(credential.token, now=now + 5)
    assert checked == credential

    expiry = credential.expires_at
    assert await book.check_credential(credential.token, now=expiry - 0.001) == credential
    assert await refused(book.check_credential(credential.token, now=expiry)) is (
        LinkProblem.EXPIRED
    )
    assert await refused(book.check_credential(credential.token + "x", now=now)) is (
        LinkProblem.UNKNOWN
    )
    assert await refused(book.check_credential(token, now=now)) is LinkProblem.UNKNOWN


async def test_revoked_credential_is_refused(book: InviteStore, session_id: str) -> None:
    _, token = await book.issue(session_id)
    _, credential = await book.redeem(token)
    await book.revoke(session_id, "ended")
    assert await refused(book.check_credential(credential.token)) is LinkProblem.ENDED


async def test_credential_is_bound_to_its_session(book: InviteStore, stores: CallStores) -> None:
    first, second = await stores.new_session(), await stores.new_session()
    _, first_token = await book.issue(first)
    _, second_token = await book.issue(second)
    _, first_credential = await book.redeem(first_token)
    _, second_credential = await book.redeem(second_token)

    assert (await book.check_credential(first_credential.token)).session_id == first
    assert (await book.check_credential(second_credential.token)).session_id == second

    # Ending one session leaves the other's caller in.
    await book.revoke(first, "ended")
    assert await refused(book.check_credential(first_credential.token)) is LinkProblem.ENDED
    assert (await book.check_credential(second_credential.token)).session_id == second


# --- delivery bookkeeping ----------------------------------------------------------------------


async def test_sms_records_and_delivery_reports(book: InviteStore, session_id: str) -> None:
    invite, _ = await book.issue(session_id)
    await book.record_sms(invite.id, "twilio", "SM123", "queued")
    updated = await book.record_delivery("SM123", "delivered")
    assert updated is not None and updated.id == invite.id
    assert (updated.sms_gateway, updated.sms_message_id, updated.sms_status) == (
        "twilio", "SM123", "delivered"
    )
    assert await book.record_delivery("SM-unknown", "delivered") is None


async def test_a_new_message_id_replaces_the_old_one(book: InviteStore, session_id: str) -> None:
    invite, _ = await book.issue(session_id)
    await book.record_sms(invite.id, "twilio", "SM1", "queued")
    await book.record_sms(invite.id, "twilio", "SM2", "sent")
    assert await book.record_delivery("SM1", "delivered") is None
    delivered = await book.record_delivery("SM2", "delivered")
    assert delivered is not None and delivered.sms_message_id == "SM2"
    assert delivered.sms_status == "delivered"

    await book.record_sms(invite.id, "twilio", None, "failed", "rejected")
    failed = await book.get(invite.id)
    assert failed is not None
    assert (failed.sms_message_id, failed.sms_status, failed.sms_error) == (
        None, "failed", "rejected"
    )
    assert await book.record_delivery("SM2", "delivered") is None
    await book.record_sms("0123456789abcdef", "twilio", "SM3", "queued")  # unknown: ignored
    assert await book.record_delivery("SM3", "delivered") is None
    assert await book.get("0123456789abcdef") is None


async def test_latest_is_the_newest_link(book: InviteStore, stores: CallStores) -> None:
    first, second = await stores.new_session(), await stores.new_session()
    assert await book.latest(first) is None
    issued = [(await book.issue(first))[0] for _ in range(3)]
    await book.issue(second)
    latest = await book.latest(first)
    assert latest is not None and latest.id == issued[-1].id
    assert latest.link_state() == "sent"
    for earlier in issued[:2]:
        fresh = await book.get(earlier.id)
        assert fresh is not None and fresh.link_state() == "revoked"


# --- Redis: many nodes, expiry, restarts -------------------------------------------------------


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[list[Redis]]:
    """Twenty separate clients (connection pools), like twenty server nodes."""
    made = [Redis.from_url(redis_url) for _ in range(20)]
    try:
        yield made
    finally:
        for client in made:
            await client.aclose()


async def test_redis_twenty_nodes_redeem_one_link_once(clients: list[Redis]) -> None:
    nodes = [redis_stores(c) for c in clients]
    session_id = await nodes[0].new_session()
    _, token = await nodes[0].invites.issue(session_id)

    results = await asyncio.gather(
        *(node.invites.redeem(token) for node in nodes), return_exceptions=True
    )
    wins = [r for r in results if isinstance(r, tuple)]
    assert len(wins) == 1, results
    refusals = [r for r in results if isinstance(r, LinkRefused)]
    assert [r.problem for r in refusals] == [LinkProblem.USED] * 19
    assert await nodes[0].credential_count() == 1
    _, credential = wins[0]
    assert (await nodes[7].invites.check_credential(credential.token)) == credential


async def test_redis_resends_from_many_nodes_leave_one_live_link(clients: list[Redis]) -> None:
    nodes = [redis_stores(c) for c in clients]
    session_id = await nodes[0].new_session()
    issued = await asyncio.gather(*(node.invites.issue(session_id) for node in nodes))

    live = []
    for invite, token in issued:
        try:
            live.append(await nodes[0].invites.look(token))
        except LinkRefused as refusal:
            assert refusal.problem is LinkProblem.REVOKED
            fresh = await nodes[0].invites.get(invite.id)
            assert fresh is not None and fresh.revoke_reason == "replaced"
    assert len(live) == 1
    assert await nodes[0].invites.latest(session_id) == live[0]


async def test_redis_racing_redeem_and_revoke_never_both(clients: list[Redis]) -> None:
    for _ in range(10):
        a, b = redis_stores(clients[0]), redis_stores(clients[1])
        session_id = await a.new_session()
        _, token = await a.invites.issue(session_id)
        redeemed, revoked = await asyncio.gather(
            a.invites.redeem(token), b.invites.revoke(session_id, "revoked"),
            return_exceptions=True,
        )
        invite = await a.invites.latest(session_id)
        assert invite is not None
        if isinstance(redeemed, tuple):
            assert revoked == 0 and invite.revoked_at is None
        else:
            assert isinstance(redeemed, LinkRefused) and redeemed.problem is LinkProblem.REVOKED
            assert revoked == 1 and invite.redeemed_at is None


async def test_redis_lookup_keys_expire_but_the_invite_stays(
    redis_url: str, redis_server: RedisServer
) -> None:
    client = Redis.from_url(redis_url)
    try:
        stores = redis_stores(client, redis_server)
        book = stores.invites
        session_id = await stores.new_session()
        invite, token = await book.issue(session_id)
        _, credential = await book.redeem(token)
        await book.record_sms(invite.id, "twilio", "SM9", "queued")

        token_key = f"{PREFIX}call:invite-token:{sha256(token)}"
        credential_key = f"{PREFIX}call:credential:{sha256(credential.token)}"
        assert TTL + REFUSAL_MEMORY - 5 < await client.ttl(token_key) <= TTL + REFUSAL_MEMORY
        lifetime = CREDENTIAL_TTL + REFUSAL_MEMORY
        assert lifetime - 5 < await client.ttl(credential_key) <= lifetime
        assert lifetime - 5 < await client.ttl(f"{PREFIX}call:credentials:{session_id}")
        # The history stays: the invite, the session's list of links, the delivery lookup.
        for kept in (f"call:invite:{invite.id}", f"call:invites:{session_id}",
                     "call:invite-sms:SM9", f"call:session:{session_id}"):
            assert await client.ttl(PREFIX + kept) == -1, kept
    finally:
        await client.aclose()


async def test_redis_finished_tokens_and_credentials_are_forgotten(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        stores = redis_stores(client, ttl=1, credential_ttl=1)
        book = stores.invites
        assert isinstance(book, RedisInviteBook)
        book.refusal_memory = 0
        session_id = await stores.new_session()
        invite, token = await book.issue(session_id)
        _, credential_token = await book.issue(session_id)
        _, credential = await book.redeem(credential_token)
        assert await refused(book.look(token)) is LinkProblem.REVOKED
        await asyncio.sleep(1.3)

        assert await refused(book.look(token)) is LinkProblem.UNKNOWN
        assert await refused(book.check_credential(credential.token)) is LinkProblem.UNKNOWN
        assert await stores.credential_count() == 0
        kept = await book.get(invite.id)
        assert kept is not None and kept.revoke_reason == "replaced"
        assert await book.revoke(session_id, "ended") == 0  # nothing live, nothing revived
        assert await stores.credential_count() == 0
    finally:
        await client.aclose()


async def test_redis_links_and_credentials_survive_a_restart(
    redis_url: str, redis_server: RedisServer
) -> None:
    client = Redis.from_url(redis_url)
    try:
        stores = redis_stores(client)
        session_id = await stores.new_session()
        _, used_token = await stores.invites.issue(session_id)
        _, credential = await stores.invites.redeem(used_token)
        live, live_token = await stores.invites.issue(session_id)
        opened = await stores.invites.look(live_token)
    finally:
        await client.aclose()

    redis_server.stop()
    redis_server.start()
    client = Redis.from_url(redis_url)
    try:
        book = redis_stores(client).invites
        assert await book.check_credential(credential.token) == credential
        assert await refused(book.redeem(used_token)) is LinkProblem.USED
        assert await book.latest(session_id) == opened
        assert await book.revoke(session_id, "ended") == 1
        assert await refused(book.redeem(live_token)) is LinkProblem.ENDED
        assert await refused(book.check_credential(credential.token)) is LinkProblem.ENDED
        assert live.id == opened.id
    finally:
        await client.aclose()


async def test_ending_credentials_keeps_only_the_kept_one(
    book: InviteStore, session_id: str
) -> None:
    """Issue 11 finding 1: a new or revoked link ends the credentials of earlier links, all but
    the kept one (the caller in the call); one credential ends once."""
    _, first = await book.issue(session_id)
    _, one = await book.redeem(first)
    _, second = await book.issue(session_id)
    _, two = await book.redeem(second)
    assert await book.end_credentials(session_id, frozenset({sha256(two.token)})) == 1
    assert await refused(book.check_credential(one.token)) is LinkProblem.ENDED
    assert (await book.check_credential(two.token)).session_id == session_id
    assert await book.credential_session(one.token) == session_id
    assert await book.credential_session("x" * 200) is None
    assert await book.end_credential(sha256(two.token)) is True
    assert await book.end_credential(sha256(two.token)) is False
    assert await refused(book.check_credential(two.token)) is LinkProblem.ENDED
    assert await book.end_credentials(session_id) == 0
