"""Staff sign-in sessions (server.auth.StaffSessions and its Redis twin) on real stores.

Contract tests run on SQLite and on Redis; the Redis-only ones cover what several nodes and a
Redis restart add: a session made on one node is seen and ended on another, keys expire by TTL.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from server.accounts import Staff, StaffRole
from server.auth import StaffSession, StaffSessions, StaffSessionStore, token_hash
from server.redis_backend.accounts import RedisStaffAccounts, RedisStaffSessions
from tests.support.call_stores import redis_contents
from tests.support.live import TEST_SCRYPT_N
from tests.support.redis_server import RedisServer
from tests.support.staff_stores import (
    PREFIX,
    AnyAccounts,
    StaffBackend,
    redis_client,
)

PASSWORD = "correct horse battery"
TTL = 3600


def _typed(store: StaffSessions | RedisStaffSessions) -> StaffSessionStore:
    """mypy checks that both stores satisfy the Protocol the service is written against."""
    return store


@pytest.fixture
def accounts(staff_backend: StaffBackend) -> AnyAccounts:
    return staff_backend.accounts()


@pytest.fixture
async def hannah(accounts: AnyAccounts) -> Staff:
    return await accounts.add("hannah", "Hannah", StaffRole.HANDLER, PASSWORD)


# --- both stores -------------------------------------------------------------------------------


async def test_created_session_is_found_by_its_token(
    staff_backend: StaffBackend, accounts: AnyAccounts, hannah: Staff
) -> None:
    sessions = staff_backend.sessions(accounts, TTL)
    token, session = await sessions.create(hannah)
    assert session == StaffSession(hannah, session.csrf_token)
    assert len(token) >= 43 and len(session.csrf_token) >= 43 and token != session.csrf_token
    assert await sessions.lookup(token) == session
    other, second = await sessions.create(hannah)
    assert other != token and second.csrf_token != session.csrf_token
    assert await sessions.lookup(other) == second
    assert await sessions.lookup(token) == session


@pytest.mark.parametrize("token", ["", "nonsense", "x" * 129])
async def test_unknown_or_malformed_tokens_find_nothing(
    staff_backend: StaffBackend, accounts: AnyAccounts, hannah: Staff, token: str
) -> None:
    sessions = staff_backend.sessions(accounts, TTL)
    await sessions.create(hannah)
    assert await sessions.lookup(token) is None


async def test_ending_a_session_forgets_it(
    staff_backend: StaffBackend, accounts: AnyAccounts, hannah: Staff
) -> None:
    sessions = staff_backend.sessions(accounts, TTL)
    token, _ = await sessions.create(hannah)
    kept, kept_session = await sessions.create(hannah)
    await sessions.end(token)
    assert await sessions.lookup(token) is None
    assert await sessions.lookup(kept) == kept_session
    await sessions.end(token)  # twice, or an unknown token: nothing happens
    await sessions.end("never issued")


async def test_expired_session_is_refused(
    staff_backend: StaffBackend, accounts: AnyAccounts, hannah: Staff
) -> None:
    sessions = staff_backend.sessions(accounts, -1)
    token, _ = await sessions.create(hannah)
    assert await sessions.lookup(token) is None


async def test_disabled_account_loses_its_sessions(
    staff_backend: StaffBackend, accounts: AnyAccounts, hannah: Staff
) -> None:
    sessions = staff_backend.sessions(accounts, TTL)
    token, _ = await sessions.create(hannah)
    await staff_backend.disable(hannah.id)
    assert await sessions.lookup(token) is None


async def test_session_shows_the_account_as_it_is_now(
    staff_backend: StaffBackend, accounts: AnyAccounts
) -> None:
    sam = await accounts.add("sam", "Sam", StaffRole.SPECIALIST, PASSWORD)
    sessions = staff_backend.sessions(accounts, TTL)
    token, _ = await sessions.create(sam)
    await accounts.set_available(sam.id, True)
    found = await sessions.lookup(token)
    assert found is not None and found.staff.available


async def test_tokens_are_not_stored_in_clear(
    staff_backend: StaffBackend, accounts: AnyAccounts, hannah: Staff
) -> None:
    sessions = staff_backend.sessions(accounts, TTL)
    tokens = [(await sessions.create(hannah))[0] for _ in range(3)]
    stored = await staff_backend.stored_bytes()
    for token in tokens:
        assert token.encode() not in stored
        assert token_hash(token).encode() in stored
        assert await sessions.lookup(token) is not None


# --- Redis only --------------------------------------------------------------------------------


async def test_redis_session_key_has_the_prefix_and_a_ttl(redis_url: str) -> None:
    async with redis_client(redis_url) as client:
        accounts = RedisStaffAccounts(client, scrypt_n=TEST_SCRYPT_N, prefix=PREFIX)
        sessions = RedisStaffSessions(client, accounts, TTL, prefix=PREFIX)
        hannah = await accounts.add("hannah", "Hannah", StaffRole.HANDLER, PASSWORD)
        before = time.time()
        token, _ = await sessions.create(hannah)
        key = f"{PREFIX}staff_session:{token_hash(token)}"
        assert TTL - 5 <= await client.ttl(key) <= TTL
        expires_at = await client.hget(key, "expires_at")
        assert expires_at is not None
        assert before + TTL <= float(expires_at) <= time.time() + TTL
        session_keys = [k async for k in client.scan_iter(match="*staff_session*")]
        assert session_keys == [key.encode()]


async def test_redis_drops_the_session_when_its_ttl_runs_out(redis_url: str) -> None:
    async with redis_client(redis_url) as client:
        accounts = RedisStaffAccounts(client, scrypt_n=TEST_SCRYPT_N, prefix=PREFIX)
        sessions = RedisStaffSessions(client, accounts, 1, prefix=PREFIX)
        hannah = await accounts.add("hannah", "Hannah", StaffRole.HANDLER, PASSWORD)
        token, _ = await sessions.create(hannah)
        key = f"{PREFIX}staff_session:{token_hash(token)}"
        assert await client.exists(key) == 1
        deadline = time.monotonic() + 5
        while await client.exists(key) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await client.exists(key) == 0
        assert await sessions.lookup(token) is None


async def test_redis_session_made_on_one_node_is_seen_and_ended_on_others(
    redis_url: str,
) -> None:
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(3)]
    try:
        nodes = []
        for client in clients:
            accounts = RedisStaffAccounts(client, scrypt_n=TEST_SCRYPT_N, prefix=PREFIX)
            nodes.append(RedisStaffSessions(client, accounts, TTL, prefix=PREFIX))
        hannah = await nodes[0].accounts.add("hannah", "Hannah", StaffRole.HANDLER, PASSWORD)
        made = await asyncio.gather(*(nodes[i % 3].create(hannah) for i in range(20)))
        assert len({token for token, _ in made}) == 20
        for i, (token, session) in enumerate(made):
            assert await nodes[(i + 1) % 3].lookup(token) == session
        token, _ = made[0]
        await nodes[2].end(token)
        assert [await node.lookup(token) for node in nodes] == [None, None, None]
    finally:
        for client in clients:
            await client.aclose()


async def test_redis_sessions_survive_a_restart(
    redis_url: str, redis_server: RedisServer
) -> None:
    async with redis_client(redis_url) as client:
        accounts = RedisStaffAccounts(client, scrypt_n=TEST_SCRYPT_N, prefix=PREFIX)
        sessions = RedisStaffSessions(client, accounts, TTL, prefix=PREFIX)
        hannah = await accounts.add("hannah", "Hannah", StaffRole.HANDLER, PASSWORD)
        token, session = await sessions.create(hannah)
        ended, _ = await sessions.create(hannah)
        await sessions.end(ended)
    redis_server.stop()
    redis_server.start()
    async with redis_client(redis_url) as client:
        accounts = RedisStaffAccounts(client, scrypt_n=TEST_SCRYPT_N, prefix=PREFIX)
        sessions = RedisStaffSessions(client, accounts, TTL, prefix=PREFIX)
        assert await sessions.lookup(token) == session
        assert await sessions.lookup(ended) is None
        key = f"{PREFIX}staff_session:{token_hash(token)}"
        assert 0 < await client.ttl(key) <= TTL
        assert token.encode() not in await redis_contents(client)
        assert token.encode() not in redis_server.aof_bytes()
