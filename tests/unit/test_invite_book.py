"""server.invites.InviteBook: links and credentials on a real SQLite database."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from server.db import Database
from server.invites import VICTIM_MESSAGES, InviteBook, LinkProblem, LinkRefused
from server.sessions import VideoSessions
from tests.support.unit_db import database_bytes, insert_staff

TTL = 600
CREDENTIAL_TTL = 3600


@pytest.fixture
async def book(db: Database) -> InviteBook:
    return InviteBook(db, ttl=TTL, credential_ttl=CREDENTIAL_TTL)


@pytest.fixture
async def session_id(db: Database) -> str:
    return await new_session(db)


async def new_session(db: Database) -> str:
    row = await db.fetchone("SELECT id FROM staff LIMIT 1")
    handler = row["id"] if row else await insert_staff(db)
    return (await VideoSessions(db).create("CAD-1", "+447911123456", handler)).id


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


async def test_token_has_at_least_128_random_bits(book: InviteBook, session_id: str) -> None:
    tokens = [(await book.issue(session_id))[1] for _ in range(5)]
    for token in tokens:
        assert secret_bits(token) >= 128
        assert len(token) <= 128  # fits the lookup limit
        assert token.replace("-", "").replace("_", "").isalnum()  # URL-safe as is
    assert len(set(tokens)) == len(tokens)


async def test_only_the_tokens_hash_is_stored(
    book: InviteBook, session_id: str, db: Database, tmp_path: Path
) -> None:
    invite, token = await book.issue(session_id)
    _, credential = await book.redeem(token)

    [row] = await db.fetchall("SELECT * FROM invites")
    assert row["token_hash"] == sha256(token)
    assert token not in [str(v) for v in tuple(row)]
    [cred_row] = await db.fetchall("SELECT * FROM credentials")
    assert cred_row["token_hash"] == sha256(credential.token)
    assert cred_row["invite_id"] == invite.id

    stored = database_bytes(tmp_path)
    assert sha256(token).encode() in stored  # sanity: we are reading what SQLite wrote
    assert token.encode() not in stored
    assert credential.token.encode() not in stored


async def test_issue_records_times(book: InviteBook, session_id: str) -> None:
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
    book: InviteBook, session_id: str
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


async def test_redeem_once_for_a_credential_then_used(book: InviteBook, session_id: str) -> None:
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
    assert len(await book.db.fetchall("SELECT * FROM credentials")) == 1


async def test_expired_link_is_refused_but_not_used_up(book: InviteBook, session_id: str) -> None:
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
    book: InviteBook, session_id: str
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


async def test_a_new_link_leaves_other_sessions_alone(book: InviteBook, db: Database) -> None:
    first, second = await new_session(db), await new_session(db)
    _, token = await book.issue(first)
    await book.issue(second)
    assert (await book.look(token)).session_id == first


async def test_handler_revoke_refuses_the_link(book: InviteBook, session_id: str) -> None:
    _, token = await book.issue(session_id)
    assert await book.revoke(session_id, "revoked") == 1
    assert await refused(book.look(token)) is LinkProblem.REVOKED
    assert await refused(book.redeem(token)) is LinkProblem.REVOKED


async def test_ending_revokes_the_link_and_every_credential(
    book: InviteBook, session_id: str
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
async def test_forged_tokens_are_unknown(book: InviteBook, session_id: str, token: str) -> None:
    await book.issue(session_id)
    assert await refused(book.look(token)) is LinkProblem.UNKNOWN
    assert await refused(book.redeem(token)) is LinkProblem.UNKNOWN
    assert await refused(book.check_credential(token)) is LinkProblem.UNKNOWN
    assert await book.db.fetchall("SELECT * FROM credentials") == []


async def test_the_hash_itself_is_not_a_token(book: InviteBook, session_id: str) -> None:
    """Someone who reads the database cannot use what is stored there as a link."""
    _, token = await book.issue(session_id)
    assert await refused(book.look(sha256(token))) is LinkProblem.UNKNOWN


# --- credentials -------------------------------------------------------------------------------


async def test_credential_check(book: InviteBook, session_id: str) -> None:
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


async def test_revoked_credential_is_refused(book: InviteBook, session_id: str) -> None:
    _, token = await book.issue(session_id)
    _, credential = await book.redeem(token)
    await book.revoke(session_id, "ended")
    assert await refused(book.check_credential(credential.token)) is LinkProblem.ENDED


async def test_credential_is_bound_to_its_session(book: InviteBook, db: Database) -> None:
    first, second = await new_session(db), await new_session(db)
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


async def test_sms_records_and_delivery_reports(book: InviteBook, session_id: str) -> None:
    invite, _ = await book.issue(session_id)
    await book.record_sms(invite.id, "twilio", "SM123", "queued")
    updated = await book.record_delivery("SM123", "delivered")
    assert updated is not None and updated.id == invite.id
    assert (updated.sms_gateway, updated.sms_message_id, updated.sms_status) == (
        "twilio", "SM123", "delivered"
    )
    assert await book.record_delivery("SM-unknown", "delivered") is None
