"""Sign-in throttling a stranger cannot turn against a real user, and cutting an account off.

Contract tests: each runs on the SQLite store and on the Redis store. A stranger's failures
slow down only untrusted tries (per account and per client address) and decay; a browser that
signed in before (its device cookie, here the verified device id) keeps getting in with the
right password; unknown, real and throttled names all cost one key derivation.
"""

from __future__ import annotations

import asyncio

import pytest

from server.accounts import StaffRole, check_password
from server.throttle import ThrottlePolicy
from tests.support.staff_stores import (
    TEST_SCRYPT_N,
    AnyAccounts,
    StaffBackend,
)

PASSWORD = "correct horse battery"
WRONG = "wrong password!!"
NOW = 1_700_000_000.0
POLICY = ThrottlePolicy(account_limit=3, client_limit=6, device_limit=3, half_life=60.0)
STRANGER = "203.0.113.66"
OFFICE = "198.51.100.10"




@pytest.fixture
def accounts(staff_backend: StaffBackend) -> AnyAccounts:
    return staff_backend.accounts(policy=POLICY)


async def test_a_strangers_failures_never_stop_a_trusted_device(accounts: AnyAccounts) -> None:
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    for n in range(40):
        await accounts.sign_in("alice", f"{WRONG}{n}", now=NOW, client=STRANGER)
    # From an untrusted browser even the right password now waits ...
    untrusted = await accounts.sign_in("alice", PASSWORD, now=NOW, client=OFFICE)
    assert untrusted.staff is None and untrusted.retry_after > 0
    # ... but the browser she signed in with before gets in at once.
    trusted = await accounts.sign_in("alice", PASSWORD, now=NOW, client=STRANGER,
                                     device="alices-browser")
    assert trusted.staff is not None and trusted.staff.username == "alice"
    assert trusted.retry_after == 0


async def test_failures_on_a_trusted_device_are_limited_per_device(
    accounts: AnyAccounts,
) -> None:
    """Guesses through a device cookie are throttled by that cookie; then it counts as an
    untrusted browser (and the account's own limit applies)."""
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    for _ in range(3):
        tried = await accounts.sign_in("alice", WRONG, now=NOW, client=OFFICE, device="dev-1")
        assert tried.staff is None and tried.retry_after == 0
    # The device's failures did not count against the account for untrusted browsers.
    fresh = await accounts.sign_in("alice", PASSWORD, now=NOW, client=STRANGER)
    assert fresh.staff is not None
    # dev-1 has spent its allowance: its tries now count as an untrusted browser's.
    more = [await accounts.sign_in("alice", WRONG, now=NOW, client=OFFICE, device="dev-1")
            for _ in range(4)]
    assert [r.retry_after > 0 for r in more] == [False, False, False, True]
    # Another trusted device of hers is not affected.
    other = await accounts.sign_in("alice", PASSWORD, now=NOW, client=OFFICE, device="dev-2")
    assert other.staff is not None


async def test_an_untrusted_client_is_throttled_then_the_failures_decay(
    accounts: AnyAccounts,
) -> None:
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    tries = [await accounts.sign_in("alice", WRONG, now=NOW, client=STRANGER)
             for _ in range(4)]
    assert [t.retry_after > 0 for t in tries] == [False, False, False, True]
    assert all(t.staff is None for t in tries)
    assert tries[1].delay > tries[0].delay > 0  # the pause still grows with each failure
    refused = await accounts.sign_in("alice", PASSWORD, now=NOW + 1, client=OFFICE)
    assert refused.staff is None and refused.retry_after > 0
    # Retry-After tells the truth: once it has passed, the right password works again.
    later = await accounts.sign_in("alice", PASSWORD, now=NOW + 1 + refused.retry_after,
                                   client=OFFICE)
    assert later.staff is not None
    # And an hour later nothing of the failures is left: three fresh tries are allowed.
    for _ in range(3):
        again = await accounts.sign_in("alice", WRONG, now=NOW + 3600, client=OFFICE)
        assert again.retry_after == 0


async def test_one_client_guessing_many_names_is_throttled_by_its_address(
    accounts: AnyAccounts,
) -> None:
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    results = [await accounts.sign_in(f"user{n}", WRONG, now=NOW, client=STRANGER)
               for n in range(8)]
    assert [r.retry_after > 0 for r in results] == [False] * 6 + [True] * 2
    # Another address is not affected, and the account itself was never tried.
    ok = await accounts.sign_in("alice", PASSWORD, now=NOW, client=OFFICE)
    assert ok.staff is not None


async def test_unlock_clears_the_accounts_throttle(accounts: AnyAccounts) -> None:
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    for _ in range(5):
        await accounts.sign_in("alice", WRONG, now=NOW, client=STRANGER)
    assert (await accounts.sign_in("alice", PASSWORD, now=NOW, client=OFFICE)).retry_after > 0
    await accounts.unlock(" ALICE ")
    assert (await accounts.sign_in("alice", PASSWORD, now=NOW, client=OFFICE)).staff is not None
    with pytest.raises(ValueError, match="No account"):
        await accounts.unlock("nobody")


async def test_unknown_real_and_throttled_names_cost_one_key_derivation_each(
    accounts: AnyAccounts,
) -> None:
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    runs = accounts.kdf_runs
    unknown = await accounts.sign_in("mallory", WRONG, now=NOW, client=OFFICE)
    assert accounts.kdf_runs == runs + 1
    wrong = await accounts.sign_in("alice", WRONG, now=NOW, client=OFFICE)
    assert accounts.kdf_runs == runs + 2
    assert (unknown.staff, unknown.delay, unknown.retry_after) == \
        (wrong.staff, wrong.delay, wrong.retry_after)
    for _ in range(3):
        await accounts.sign_in("alice", WRONG, now=NOW, client=f"192.0.2.{_}")
        await accounts.sign_in("mallory", WRONG, now=NOW, client=f"192.0.2.{_}")
    runs = accounts.kdf_runs
    throttled = await accounts.sign_in("alice", PASSWORD, now=NOW, client=OFFICE)
    throttled_unknown = await accounts.sign_in("mallory", PASSWORD, now=NOW, client=OFFICE)
    assert throttled.retry_after > 0 and throttled_unknown.retry_after > 0
    assert throttled.retry_after == throttled_unknown.retry_after
    assert accounts.kdf_runs == runs + 2
    # The stand-in hash for unknown names costs what a real one does.
    assert accounts.dummy_hash.split("$")[1:4] == [str(TEST_SCRYPT_N), "8", "1"]


async def test_an_old_hash_is_rehashed_at_the_next_successful_sign_in(
    staff_backend: StaffBackend,
) -> None:
    weak = staff_backend.accounts(policy=POLICY, scrypt_n=TEST_SCRYPT_N // 2)
    alice = await weak.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    old = await staff_backend.password_hash(alice.id)
    assert old is not None and old.split("$")[1] == str(TEST_SCRYPT_N // 2)
    accounts = staff_backend.accounts(policy=POLICY, scrypt_n=TEST_SCRYPT_N)
    # A failed sign-in changes nothing.
    await accounts.sign_in("alice", WRONG, now=NOW, client=OFFICE)
    assert await staff_backend.password_hash(alice.id) == old
    assert (await accounts.sign_in("alice", PASSWORD, now=NOW, client=OFFICE)).staff
    new = await staff_backend.password_hash(alice.id)
    assert new is not None and new.split("$")[1:4] == [str(TEST_SCRYPT_N), "8", "1"]
    assert check_password(PASSWORD, new)
    assert (await accounts.sign_in("alice", PASSWORD, now=NOW, client=OFFICE)).staff


async def test_a_password_change_or_disable_ends_every_sign_in(
    accounts: AnyAccounts, staff_backend: StaffBackend,
) -> None:
    alice = await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    bob = await accounts.add("bob", "Bob", StaffRole.HANDLER, PASSWORD)
    sessions = staff_backend.sessions(accounts, ttl=3600)
    first, _ = await sessions.create(alice)
    second, _ = await sessions.create(alice)
    bobs, _ = await sessions.create(bob)
    before = await accounts.generations()

    await accounts.set_password("alice", "a brand new passphrase")
    assert await sessions.lookup(first) is None and await sessions.lookup(second) is None
    assert await sessions.lookup(bobs) is not None
    after = await accounts.generations()
    assert after[alice.id] != before[alice.id] and after[bob.id] == before[bob.id]

    signed_in = await accounts.sign_in("alice", "a brand new passphrase", now=NOW)
    assert signed_in.staff is not None
    third, _ = await sessions.create(signed_in.staff)
    assert await sessions.lookup(third) is not None

    await accounts.set_disabled("alice", True)
    assert await sessions.lookup(third) is None
    assert await accounts.get(alice.id) is None
    assert (await accounts.sign_in("alice", "a brand new passphrase", now=NOW)).staff is None
    assert (await accounts.generations())[alice.id] != after[alice.id]

    await accounts.set_disabled("alice", False)
    assert await sessions.lookup(third) is None  # enabling does not revive old sign-ins
    again = await accounts.sign_in("alice", "a brand new passphrase", now=NOW)
    assert again.staff is not None and again.staff.id == alice.id
    with pytest.raises(ValueError, match="No account"):
        await accounts.set_disabled("nobody", True)


async def test_guesses_sent_all_at_once_get_no_more_tries_than_the_limit(
    accounts: AnyAccounts,
) -> None:
    """Each try is counted before its password is checked: twenty parallel guesses get the
    account's three, and the other seventeen are throttled."""
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    results = await asyncio.gather(*(
        accounts.sign_in("alice", f"{WRONG}{n}", now=NOW, client=f"192.0.2.{n}")
        for n in range(20)
    ))
    assert all(r.staff is None for r in results)
    assert sum(not r.throttled for r in results) == POLICY.account_limit
    assert (await accounts.sign_in("alice", PASSWORD, now=NOW, client=OFFICE)).throttled
