"""server.accounts: scrypt hashes, account rules and sign-in throttling on real stores.

The account tests are contract tests: each runs on the SQLite store and on the Redis store
(server.redis_backend.accounts), which must not differ in anything the service can see.
"""

from __future__ import annotations

import asyncio
import base64

import pytest
import redis.asyncio as aioredis

from server.accounts import (
    MAX_DELAY,
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    SCRYPT_N,
    AccountError,
    StaffAccounts,
    StaffAccountStore,
    StaffRole,
    check_password,
    failure_delay,
    hash_password,
    validate_password,
)
from server.redis_backend.accounts import RedisStaffAccounts
from server.throttle import ThrottlePolicy, throttle_key
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
NOW = 1_700_000_000.0
POLICY = ThrottlePolicy(account_limit=3, client_limit=100, device_limit=3, half_life=60.0)




@pytest.fixture
def accounts(staff_backend: StaffBackend) -> AnyAccounts:
    return staff_backend.accounts(policy=POLICY)


# --- hashes ------------------------------------------------------------------------------------


def test_hash_format_is_scrypt_with_parameters_salt_and_key() -> None:
    stored = hash_password(PASSWORD)
    scheme, n, r, p, salt, key = stored.split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", SCRYPT_N, 8, 1)
    assert SCRYPT_N == 2**17  # OWASP's recommendation for scrypt
    assert len(base64.b64decode(salt, validate=True)) == 16
    assert len(base64.b64decode(key, validate=True)) == 32
    assert PASSWORD not in stored


def test_hash_verifies_only_the_right_password() -> None:
    stored = hash_password(PASSWORD)
    assert check_password(PASSWORD, stored)
    assert not check_password(PASSWORD + " ", stored)
    assert not check_password(PASSWORD.upper(), stored)
    assert not check_password("", stored)


def test_same_password_gets_a_fresh_salt() -> None:
    first, second = hash_password(PASSWORD, n=2**10), hash_password(PASSWORD, n=2**10)
    assert first != second
    assert first.split("$")[4] != second.split("$")[4]
    assert check_password(PASSWORD, first) and check_password(PASSWORD, second)


def test_cost_parameter_is_recorded_and_used() -> None:
    stored = hash_password(PASSWORD, n=2**10)
    assert stored.split("$")[1] == "1024"
    assert check_password(PASSWORD, stored)
    # The stored n is what verification uses: another n derives another key.
    tampered = stored.replace("scrypt$1024$", "scrypt$2048$", 1)
    assert not check_password(PASSWORD, tampered)


@pytest.mark.parametrize(
    "stored",
    ["", "garbage", "scrypt$1024$8$1$salt", "bcrypt$1024$8$1$AAAA$AAAA",
     "scrypt$x$8$1$AAAA$AAAA", "scrypt$1024$8$1$!!!$AAAA", "scrypt$1000$8$1$AAAA$AAAA"],
)
def test_malformed_stored_hash_is_a_plain_failure(stored: str) -> None:
    assert check_password(PASSWORD, stored) is False


# --- delays ------------------------------------------------------------------------------------


def test_failure_delay_grows_and_is_capped() -> None:
    delays = [failure_delay(n) for n in range(0, 12)]
    assert delays[:7] == [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert delays[7:] == [MAX_DELAY] * 5
    assert MAX_DELAY == 8.0
    assert failure_delay(-3) == 0.0
    assert failure_delay(10_000) == MAX_DELAY


# --- passwords and accounts --------------------------------------------------------------------


def test_password_length_rules() -> None:
    validate_password("x" * MIN_PASSWORD_LENGTH)
    validate_password("x" * MAX_PASSWORD_LENGTH)
    assert MIN_PASSWORD_LENGTH == 12
    with pytest.raises(AccountError, match="at least 12"):
        validate_password("x" * (MIN_PASSWORD_LENGTH - 1))
    with pytest.raises(AccountError, match="too long"):
        validate_password("x" * (MAX_PASSWORD_LENGTH + 1))


async def test_add_refuses_a_short_password_and_stores_nothing(
    accounts: AnyAccounts, staff_backend: StaffBackend
) -> None:
    with pytest.raises(AccountError):
        await accounts.add("alice", "Alice", StaffRole.HANDLER, "short")
    assert await staff_backend.staff_count() == 0


async def test_add_stores_a_hash_not_the_password(
    accounts: AnyAccounts, staff_backend: StaffBackend
) -> None:
    staff = await accounts.add("  Alice.Smith ", "Alice Smith", "handler", PASSWORD)
    assert staff.username == "alice.smith"
    assert staff.role is StaffRole.HANDLER
    stored = await staff_backend.password_hash(staff.id)
    assert stored is not None and stored.startswith("scrypt$")
    assert check_password(PASSWORD, stored)
    assert await accounts.get(staff.id) == staff
    assert PASSWORD.encode() not in await staff_backend.stored_bytes()


async def test_duplicate_username_is_refused(accounts: AnyAccounts) -> None:
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    with pytest.raises(AccountError, match="taken"):
        await accounts.add("alice", "Another Alice", StaffRole.SPECIALIST, PASSWORD)
    with pytest.raises(AccountError, match="taken"):
        await accounts.add(" ALICE ", "Shouty Alice", StaffRole.HANDLER, PASSWORD)


@pytest.mark.parametrize("role", ["god", "", "Handler", "victim"])
async def test_unknown_role_is_refused(accounts: AnyAccounts, role: str) -> None:
    with pytest.raises(AccountError, match="role"):
        await accounts.add("bob", "Bob", role, PASSWORD)


@pytest.mark.parametrize("username", ["", "   ", "bob smith", "bob@example", "bøb", "b" * 65])
async def test_bad_usernames_are_refused(accounts: AnyAccounts, username: str) -> None:
    with pytest.raises(AccountError):
        await accounts.add(username, "Bob", StaffRole.HANDLER, PASSWORD)


# --- sign in -----------------------------------------------------------------------------------


async def test_sign_in_with_the_right_password(accounts: AnyAccounts) -> None:
    alice = await accounts.add("alice", "Alice", StaffRole.SPECIALIST, PASSWORD)
    result = await accounts.sign_in(" ALICE ", PASSWORD, now=NOW)
    assert result.staff == alice
    assert result.delay == 0.0 and not result.throttled


async def test_wrong_password_fails_with_growing_delays(
    accounts: AnyAccounts, staff_backend: StaffBackend
) -> None:
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    first = await accounts.sign_in("alice", "wrong password!", now=NOW)
    second = await accounts.sign_in("alice", "wrong password!", now=NOW)
    assert first.staff is None and second.staff is None
    assert (first.delay, second.delay) == (0.25, 0.5)
    assert not first.throttled and not second.throttled


async def test_unknown_user_looks_like_a_wrong_password(accounts: AnyAccounts) -> None:
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    unknown = await accounts.sign_in("mallory", PASSWORD, now=NOW)
    wrong = await accounts.sign_in("alice", "not her password", now=NOW)
    assert unknown.staff is None and not unknown.throttled
    assert unknown == wrong


async def test_success_resets_the_failure_counter(accounts: AnyAccounts) -> None:
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    for _ in range(2):
        await accounts.sign_in("alice", "wrong password!", now=NOW)
    assert (await accounts.sign_in("alice", PASSWORD, now=NOW)).staff is not None
    # Two more failures would have throttled without the reset (account_limit=3).
    again = [await accounts.sign_in("alice", "wrong password!", now=NOW) for _ in range(3)]
    assert [r.delay for r in again] == [0.25, 0.5, 1.0]
    assert not any(r.throttled for r in again)


async def test_throttle_is_per_account(accounts: AnyAccounts) -> None:
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    await accounts.add("bob", "Bob", StaffRole.HANDLER, PASSWORD)
    for _ in range(4):
        await accounts.sign_in("alice", "wrong password!", now=NOW)
    assert (await accounts.sign_in("alice", PASSWORD, now=NOW)).throttled
    assert (await accounts.sign_in("bob", PASSWORD, now=NOW)).staff is not None


async def test_overlong_password_is_refused_without_hashing(accounts: AnyAccounts) -> None:
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    result = await accounts.sign_in("alice", "x" * (MAX_PASSWORD_LENGTH + 1), now=NOW)
    assert result.staff is None and result.delay == MAX_DELAY


async def test_disabled_account_cannot_sign_in(
    accounts: AnyAccounts, staff_backend: StaffBackend
) -> None:
    alice = await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    await staff_backend.disable(alice.id)
    result = await accounts.sign_in("alice", PASSWORD, now=NOW)
    assert result.staff is None and not result.throttled
    assert result == await accounts.sign_in("mallory", PASSWORD, now=NOW)
    assert await accounts.get(alice.id) is None
    assert await accounts.by_username("alice") is None
    assert not await accounts.exists("alice")
    # The name stays taken: a disabled account is not a free username.
    with pytest.raises(AccountError, match="taken"):
        await accounts.add("alice", "New Alice", StaffRole.HANDLER, PASSWORD)


async def test_set_password_replaces_the_old_one_and_lifts_the_throttle(
    accounts: AnyAccounts,
) -> None:
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    for _ in range(4):
        await accounts.sign_in("alice", "wrong password!", now=NOW)
    assert (await accounts.sign_in("alice", PASSWORD, now=NOW)).throttled
    await accounts.set_password("alice", "a brand new passphrase")
    assert (await accounts.sign_in("alice", PASSWORD, now=NOW + 1)).staff is None
    assert (await accounts.sign_in("alice", "a brand new passphrase", now=NOW + 1)).staff
    with pytest.raises(AccountError):
        await accounts.set_password("nobody", "a brand new passphrase")
    with pytest.raises(AccountError):
        await accounts.set_password("alice", "short")


# --- look-ups and availability (both stores) ---------------------------------------------------


def _typed(store: StaffAccounts | RedisStaffAccounts) -> StaffAccountStore:
    """mypy checks that both stores satisfy the Protocol the service is written against."""
    return store


async def test_look_ups_find_active_accounts_only(accounts: AnyAccounts) -> None:
    alice = await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    bob = await accounts.add("bob", "   ", StaffRole.AUDITOR, PASSWORD)
    assert bob.display_name == "bob"
    assert isinstance(alice.id, int) and bob.id > alice.id
    assert await accounts.by_username(" ALICE ") == alice
    assert await accounts.get(bob.id) == bob
    assert await accounts.exists("Bob") and not await accounts.exists("carol")
    assert await accounts.by_username("carol") is None
    assert await accounts.get(bob.id + 100) is None


async def test_concurrent_adds_of_one_name_make_one_account(
    accounts: AnyAccounts, staff_backend: StaffBackend
) -> None:
    names = ["dana", "DANA", " Dana ", "dana", "dAna", "dana"]
    results = await asyncio.gather(
        *(accounts.add(name, f"Dana {i}", StaffRole.HANDLER, PASSWORD)
          for i, name in enumerate(names)),
        return_exceptions=True,
    )
    made = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, AccountError) and "taken" in str(r)]
    assert len(made) == 1 and len(refused) == len(names) - 1
    assert await accounts.by_username("dana") == made[0]
    assert await staff_backend.staff_count() == 1


async def test_available_specialists_longest_waiting_first(
    accounts: AnyAccounts, staff_backend: StaffBackend
) -> None:
    s1, s2, s3, s4 = [
        await accounts.add(f"spec{i}", f"Specialist {i}", StaffRole.SPECIALIST, PASSWORD)
        for i in range(1, 5)
    ]
    handler = await accounts.add("hannah", "Hannah", StaffRole.HANDLER, PASSWORD)
    assert await accounts.available_specialists() == []
    for staff in (s3, s1, handler, s2):
        await accounts.set_available(staff.id, True)
    listed = await accounts.available_specialists()
    assert [s.id for s in listed] == [s3.id, s1.id, s2.id]
    assert all(s.available and s.role is StaffRole.SPECIALIST for s in listed)
    assert (await accounts.get(s1.id)) == listed[1]
    waiting = await accounts.get(s4.id)
    assert waiting is not None and not waiting.available

    # Equal waiting times: the lower id first.
    await staff_backend.set_available_since(s3.id, NOW)
    await staff_backend.set_available_since(s2.id, NOW)
    await staff_backend.set_available_since(s1.id, NOW + 5)
    assert [s.id for s in await accounts.available_specialists()] == [s2.id, s3.id, s1.id]

    await accounts.set_available(s3.id, False)
    await staff_backend.disable(s2.id)
    assert [s.id for s in await accounts.available_specialists()] == [s1.id]
    fresh = await accounts.get(s3.id)
    assert fresh is not None and not fresh.available


async def test_set_available_for_an_unknown_id_creates_nothing(
    accounts: AnyAccounts, staff_backend: StaffBackend
) -> None:
    await accounts.set_available(999, True)
    assert await accounts.get(999) is None
    assert await staff_backend.staff_count() == 0
    assert await accounts.available_specialists() == []


# --- Redis only: many nodes, restarts, keys ----------------------------------------------------


async def test_redis_twenty_nodes_adding_one_name_make_one_account(redis_url: str) -> None:
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(20)]
    try:
        stores = [RedisStaffAccounts(client, scrypt_n=TEST_SCRYPT_N, prefix=PREFIX)
                  for client in clients]
        results = await asyncio.gather(
            *(store.add("alice", f"Alice {i}", StaffRole.HANDLER, PASSWORD)
              for i, store in enumerate(stores)),
            return_exceptions=True,
        )
        made = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, AccountError) and "taken" in str(r)]
        assert len(made) == 1 and len(refused) == 19
        for store in stores[:3]:
            assert await store.by_username("alice") == made[0]
        staff_keys = [k async for k in clients[0].scan_iter(match=f"{PREFIX}staff:[0-9]*")]
        assert staff_keys == [f"{PREFIX}staff:{made[0].id}".encode()]
    finally:
        for client in clients:
            await client.aclose()


async def test_redis_parallel_guesses_on_many_nodes_get_no_more_than_the_limit(
    redis_url: str,
) -> None:
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(20)]
    try:
        stores = [RedisStaffAccounts(c, POLICY, TEST_SCRYPT_N, prefix=PREFIX) for c in clients]
        await stores[0].add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
        results = await asyncio.gather(
            *(store.sign_in("alice", "wrong password!", now=NOW) for store in stores)
        )
        assert all(r.staff is None for r in results)
        # Each try is counted before it is checked: twenty nodes at once get three tries.
        assert sum(not r.throttled for r in results) == POLICY.account_limit
        [score] = await stores[0].throttle.scores([throttle_key("account", "alice")], NOW)
        assert score == POLICY.account_limit
        refused = await stores[1].sign_in("alice", PASSWORD, now=NOW + 1)
        assert refused.staff is None and refused.throttled
    finally:
        for client in clients:
            await client.aclose()


async def test_redis_accounts_survive_a_restart(
    redis_url: str, redis_server: RedisServer
) -> None:
    async with redis_client(redis_url) as client:
        store = RedisStaffAccounts(client, POLICY, TEST_SCRYPT_N, prefix=PREFIX)
        alice = await store.add("alice", "Alice", StaffRole.SPECIALIST, PASSWORD)
        await store.add("bob", "Bob", StaffRole.HANDLER, PASSWORD)
        await store.set_available(alice.id, True)
        for _ in range(2):
            await store.sign_in("bob", "wrong password!", now=NOW)
    redis_server.stop()
    redis_server.start()
    async with redis_client(redis_url) as client:
        store = RedisStaffAccounts(client, POLICY, TEST_SCRYPT_N, prefix=PREFIX)
        assert [s.id for s in await store.available_specialists()] == [alice.id]
        assert (await store.sign_in("alice", PASSWORD, now=NOW)).staff is not None
        # The failure counts survived too: a third failure reaches the limit.
        third = await store.sign_in("bob", "wrong password!", now=NOW)
        assert third.delay == 1.0 and not third.throttled
        assert (await store.sign_in("bob", PASSWORD, now=NOW)).throttled
        carol = await store.add("carol", "Carol", StaffRole.AUDITOR, PASSWORD)
        assert carol.id == 3
        with pytest.raises(AccountError, match="taken"):
            await store.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)


async def test_redis_keys_carry_the_prefix_and_hold_no_password(
    redis_url: str, redis_server: RedisServer
) -> None:
    async with redis_client(redis_url) as client:
        ours = RedisStaffAccounts(client, scrypt_n=TEST_SCRYPT_N, prefix=PREFIX)
        default = RedisStaffAccounts(client, scrypt_n=TEST_SCRYPT_N)
        alice = await ours.add("alice", "Alice", StaffRole.SPECIALIST, PASSWORD)
        await ours.set_available(alice.id, True)
        await ours.sign_in("alice", "wrong password!", now=NOW)
        # Another prefix is another deployment: the same name is free there.
        other = await default.add("alice", "Other Alice", StaffRole.HANDLER, PASSWORD)
        assert await default.get(other.id) == other
        mine = await ours.get(alice.id)
        assert mine is not None and mine.display_name == "Alice" and mine.available
        keys = [k async for k in client.scan_iter(match="*")]
        assert keys and all(k.startswith((PREFIX.encode(), b"erv:")) for k in keys)
        assert any(k.startswith(b"erv:") for k in keys)
        # Accounts never expire; failure counts do, once decayed to nothing.
        for key in keys:
            assert (await client.ttl(key) == -1) is (b":throttle:" not in key), key
        assert PASSWORD.encode() not in await redis_contents(client)
        assert PASSWORD.encode() not in redis_server.aof_bytes()
