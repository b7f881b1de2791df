"""signaling.participant: sequence numbers, the resume buffer and the resume secret."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from signaling.participant import (
    RESUME_BUFFER_MESSAGES,
    Admission,
    Connection,
    Participant,
    is_lobby,
    lobby_key,
)
from signaling.protocol import Role


def victim() -> Participant:
    return Participant(Admission("0123456789abcdef", Role.VICTIM, "victim", "Caller"))


def chat(n: int) -> dict[str, Any]:
    return {"type": "chat", "from": "p1", "text": f"message {n}"}


def delivered(participant: Participant, count: int) -> list[str]:
    """Deliver `count` chats and return the frames as buffered."""
    for n in range(count):
        participant.deliver(chat(n))
    return [text for _, text in participant.buffered()]


# --- numbering ---------------------------------------------------------------------------------


def test_deliver_numbers_from_one_and_buffers_the_frame() -> None:
    participant = victim()
    message = chat(0)
    assert [participant.deliver(message), participant.deliver(chat(1)),
            participant.deliver(chat(2))] == [1, 2, 3]
    assert participant.seq == 3
    assert message == chat(0)  # the caller's dict is not changed

    frames = [json.loads(text) for _, text in participant.buffered()]
    assert [f["seq"] for f in frames] == [1, 2, 3]
    assert [seq for seq, _ in participant.buffered()] == [1, 2, 3]
    assert frames[0] == {**chat(0), "seq": 1}


def test_each_participant_counts_on_its_own() -> None:
    first, second = victim(), victim()
    first.deliver(chat(0))
    first.deliver(chat(1))
    assert second.deliver(chat(0)) == 1


# --- resume buffer -----------------------------------------------------------------------------


def test_missed_since_replays_exactly_what_came_after() -> None:
    participant = victim()
    frames = delivered(participant, 5)
    assert participant.missed_since(0) == frames
    assert participant.missed_since(2) == frames[2:]
    assert participant.missed_since(4) == frames[4:]
    assert participant.missed_since(5) == []


def test_missed_since_with_nothing_delivered() -> None:
    participant = victim()
    assert participant.missed_since(0) == []
    assert participant.missed_since(1) is None


def test_missed_since_a_future_seq_is_none() -> None:
    """A client claiming to have seen more than was sent is not resumed."""
    participant = victim()
    delivered(participant, 3)
    assert participant.missed_since(4) is None
    assert participant.missed_since(10**9) is None


def test_missed_since_after_the_buffer_overflowed() -> None:
    participant = victim()
    overflow = 10
    delivered(participant, RESUME_BUFFER_MESSAGES + overflow)
    oldest_kept = overflow + 1
    assert participant.buffered()[0][0] == oldest_kept
    assert len(participant.buffer) == RESUME_BUFFER_MESSAGES

    # Frames up to seq 10 are gone: anyone who had not seen them cannot be made whole.
    assert participant.missed_since(0) is None
    assert participant.missed_since(oldest_kept - 2) is None
    # Having seen seq 10 is exactly enough.
    replay = participant.missed_since(oldest_kept - 1)
    assert replay is not None and len(replay) == RESUME_BUFFER_MESSAGES
    assert [json.loads(t)["seq"] for t in replay] == list(
        range(oldest_kept, RESUME_BUFFER_MESSAGES + overflow + 1)
    )
    assert participant.missed_since(participant.seq - 1) == [participant.buffered()[-1][1]]
    assert participant.missed_since(participant.seq) == []


# --- secrets -----------------------------------------------------------------------------------


def test_secret_matches_only_its_own_secret() -> None:
    participant, other = victim(), victim()
    assert participant.secret_matches(participant.resume_secret)
    assert not participant.secret_matches(other.resume_secret)
    assert not participant.secret_matches("")
    assert not participant.secret_matches(participant.resume_secret + "x")
    assert not participant.secret_matches(participant.resume_secret[:-1])
    assert not participant.secret_matches(participant.pid)


def test_ids_and_secrets_are_random() -> None:
    people = [victim() for _ in range(20)]
    assert len({p.pid for p in people}) == 20
    assert len({p.resume_secret for p in people}) == 20
    assert all(len(p.resume_secret) >= 32 for p in people)  # >= 192 bits, URL-safe base64


def test_describe_and_lobby_keys() -> None:
    participant = victim()
    assert participant.describe() == {
        "pid": participant.pid, "role": "victim", "name": "Caller", "state": "away",
    }
    assert participant.session == "0123456789abcdef" and participant.role is Role.VICTIM
    assert lobby_key(7) == "lobby:7" and is_lobby(lobby_key(7))
    assert not is_lobby(participant.session)


# --- over a real WebSocket ---------------------------------------------------------------------


@pytest.fixture
async def participant_server() -> AsyncIterator[tuple[str, Participant]]:
    """A WebSocket that, for each client, sends what the participant is given and closes."""
    participant = victim()

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        connection = Connection(ws)
        participant.connection = connection
        participant.deliver(chat(0))
        participant.send_unsequenced({"type": "pong"})
        participant.deliver(chat(1))
        participant.connection = None
        participant.deliver(chat(2))  # while away: buffered only
        connection.close(1000, "done")
        await connection.wait_closed()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/ws", participant
    finally:
        await runner.cleanup()


async def test_connected_participant_receives_the_buffered_frames(
    participant_server: tuple[str, Participant],
) -> None:
    url, participant = participant_server
    received: list[str] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        while True:
            msg = await asyncio.wait_for(ws.receive(), timeout=5)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            received.append(msg.data)
        assert ws.close_code == 1000

    buffered = [text for _, text in participant.buffered()]
    # What went over the wire is byte for byte what a resume would replay, plus the
    # unsequenced pong, which is neither numbered nor buffered.
    assert received == [buffered[0], '{"type":"pong"}', buffered[1]]
    assert participant.seq == 3
    # The frame delivered while away is what a resume after seq 2 gets.
    assert participant.missed_since(2) == [buffered[2]]
