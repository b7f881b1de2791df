"""server.accounts: scrypt hashes, account rules and sign-in throttling on a real database."""

from __future__ import annotations

import base64

import pytest

from server.accounts import (
    MAX_DELAY,
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    SCRYPT_N,
    AccountError,
    StaffAccounts,
    StaffRole,
    check_password,
    failure_delay,
    hash_password,
    validate_password,
)
from server.db import Database

PASSWORD = "correct horse battery"
NOW = 1_700_000_000.0


@pytest.fixture
async def accounts(db: Database) -> StaffAccounts:
    return StaffAccounts(db, max_failures=3, lock_seconds=60)


async def failed_logins(db: Database, username: str) -> tuple[int, float]:
    row = await db.fetchone(
        "SELECT failed_logins, locked_until FROM staff WHERE username = ?", (username,)
    )
    assert row is not None
    return row["failed_logins"], row["locked_until"]


# --- hashes ------------------------------------------------------------------------------------


def test_hash_format_is_scrypt_with_parameters_salt_and_key() -> None:
    stored = hash_password(PASSWORD)
    scheme, n, r, p, salt, key = stored.split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", SCRYPT_N, 8, 1)
    assert SCRYPT_N >= 2**14
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
    accounts: StaffAccounts, db: Database
) -> None:
    with pytest.raises(AccountError):
        await accounts.add("alice", "Alice", StaffRole.HANDLER, "short")
    assert await db.fetchall("SELECT * FROM staff") == []


async def test_add_stores_a_hash_not_the_password(accounts: StaffAccounts, db: Database) -> None:
    staff = await accounts.add("  Alice.Smith ", "Alice Smith", "handler", PASSWORD)
    assert staff.username == "alice.smith"
    assert staff.role is StaffRole.HANDLER
    row = await db.fetchone("SELECT * FROM staff WHERE id = ?", (staff.id,))
    assert row is not None
    assert row["password_hash"].startswith("scrypt$")
    assert check_password(PASSWORD, row["password_hash"])
    assert await accounts.get(staff.id) == staff


async def test_duplicate_username_is_refused(accounts: StaffAccounts) -> None:
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    with pytest.raises(AccountError, match="taken"):
        await accounts.add("alice", "Another Alice", StaffRole.SPECIALIST, PASSWORD)
    with pytest.raises(AccountError, match="taken"):
        await accounts.add(" ALICE ", "Shouty Alice", StaffRole.HANDLER, PASSWORD)


@pytest.mark.parametrize("role", ["god", "", "Handler", "victim"])
async def test_unknown_role_is_refused(accounts: StaffAccounts, role: str) -> None:
    with pytest.raises(AccountError, match="role"):
        await accounts.add("bob", "Bob", role, PASSWORD)


@pytest.mark.parametrize("username", ["", "   ", "bob smith", "bob@example", "bøb", "b" * 65])
async def test_bad_usernames_are_refused(accounts: StaffAccounts, username: str) -> None:
    with pytest.raises(AccountError):
        await accounts.add(username, "Bob", StaffRole.HANDLER, PASSWORD)


# --- sign in -----------------------------------------------------------------------------------


async def test_sign_in_with_the_right_password(accounts: StaffAccounts) -> None:
    alice = await accounts.add("alice", "Alice", StaffRole.SPECIALIST, PASSWORD)
    result = await accounts.sign_in(" ALICE ", PASSWORD, now=NOW)
    assert result.staff == alice
    assert result.delay == 0.0 and not result.locked


async def test_wrong_password_fails_with_growing_delays(
    accounts: StaffAccounts, db: Database
) -> None:
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    first = await accounts.sign_in("alice", "wrong password!", now=NOW)
    second = await accounts.sign_in("alice", "wrong password!", now=NOW)
    assert first.staff is None and second.staff is None
    assert (first.delay, second.delay) == (0.25, 0.5)
    assert not first.locked and not second.locked
    assert await failed_logins(db, "alice") == (2, 0)


async def test_unknown_user_looks_like_a_wrong_password(accounts: StaffAccounts) -> None:
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    unknown = await accounts.sign_in("mallory", PASSWORD, now=NOW)
    wrong = await accounts.sign_in("alice", "not her password", now=NOW)
    assert unknown.staff is None and not unknown.locked
    assert unknown == wrong


async def test_lock_after_max_failures_then_released(
    accounts: StaffAccounts, db: Database
) -> None:
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    results = [await accounts.sign_in("alice", "wrong password!", now=NOW) for _ in range(3)]
    assert [r.locked for r in results] == [False, False, True]
    assert [r.delay for r in results] == [0.25, 0.5, 1.0]
    assert (await failed_logins(db, "alice"))[1] == NOW + 60

    # While locked, even the right password is refused, with the longest delay.
    for moment in (NOW + 1, NOW + 59.9):
        locked = await accounts.sign_in("alice", PASSWORD, now=moment)
        assert locked.staff is None and locked.locked and locked.delay == MAX_DELAY

    # Once the lock has passed, the right password works and clears the record.
    released = await accounts.sign_in("alice", PASSWORD, now=NOW + 60.1)
    assert released.staff is not None and released.staff.username == "alice"
    assert await failed_logins(db, "alice") == (0, 0)


async def test_wrong_passwords_while_locked_do_not_extend_the_lock(
    accounts: StaffAccounts, db: Database
) -> None:
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    for _ in range(3):
        await accounts.sign_in("alice", "wrong password!", now=NOW)
    during = await accounts.sign_in("alice", "wrong password!", now=NOW + 30)
    assert during.locked and during.staff is None
    assert (await failed_logins(db, "alice"))[1] == NOW + 60


async def test_failures_start_again_after_a_lock(accounts: StaffAccounts) -> None:
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    for _ in range(3):
        await accounts.sign_in("alice", "wrong password!", now=NOW)
    after = await accounts.sign_in("alice", "wrong password!", now=NOW + 61)
    assert after.delay == 0.25 and not after.locked


async def test_success_resets_the_failure_counter(accounts: StaffAccounts, db: Database) -> None:
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    for _ in range(2):
        await accounts.sign_in("alice", "wrong password!", now=NOW)
    assert (await accounts.sign_in("alice", PASSWORD, now=NOW)).staff is not None
    assert await failed_logins(db, "alice") == (0, 0)
    # Two more failures would have locked without the reset (max_failures=3).
    again = [await accounts.sign_in("alice", "wrong password!", now=NOW) for _ in range(2)]
    assert [r.delay for r in again] == [0.25, 0.5]
    assert not any(r.locked for r in again)


async def test_lock_is_per_account(accounts: StaffAccounts) -> None:
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    await accounts.add("bob", "Bob", StaffRole.HANDLER, PASSWORD)
    for _ in range(3):
        await accounts.sign_in("alice", "wrong password!", now=NOW)
    assert (await accounts.sign_in("bob", PASSWORD, now=NOW)).staff is not None


async def test_overlong_password_is_refused_without_hashing(accounts: StaffAccounts) -> None:
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    result = await accounts.sign_in("alice", "x" * (MAX_PASSWORD_LENGTH + 1), now=NOW)
    assert result.staff is None and result.delay == MAX_DELAY


async def test_disabled_account_cannot_sign_in(accounts: StaffAccounts, db: Database) -> None:
    alice = await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    await db.execute("UPDATE staff SET disabled = 1 WHERE id = ?", (alice.id,))
    assert (await accounts.sign_in("alice", PASSWORD, now=NOW)).staff is None
    assert await accounts.get(alice.id) is None


async def test_set_password_replaces_the_old_one_and_lifts_a_lock(
    accounts: StaffAccounts,
) -> None:
    await accounts.add("alice", "Alice", StaffRole.HANDLER, PASSWORD)
    for _ in range(3):
        await accounts.sign_in("alice", "wrong password!", now=NOW)
    await accounts.set_password("alice", "a brand new passphrase")
    assert (await accounts.sign_in("alice", PASSWORD, now=NOW + 1)).staff is None
    assert (await accounts.sign_in("alice", "a brand new passphrase", now=NOW + 1)).staff
    with pytest.raises(AccountError):
        await accounts.set_password("nobody", "a brand new passphrase")
    with pytest.raises(AccountError):
        await accounts.set_password("alice", "short")
