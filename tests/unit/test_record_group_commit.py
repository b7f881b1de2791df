"""server.record.store group commit: concurrent appends share transactions, durably.

Pins: 200 concurrent appends across sessions all land with seqs 1..200 (no gaps, no
duplicates) in fewer transactions than appends, and the chain verifies; a bad body is refused
before queueing, so it fails alone and its neighbours are stored; an append to a shredded
session fails alone too; a batch whose transaction fails gives every one of its appends the
error, stores none of them, and leaves the chain head where it was.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from server.db import Database
from server.record import SessionShredded, SqliteCaseRecordStore, load_or_create_keyring
from server.record.chain import RecordHeader

T = TypeVar("T")


class CommitFailed(Exception):
    """Raised in place of COMMIT by `RecordingDatabase` when told to fail."""


class RecordingDatabase(Database):
    """The real Database, counting its transactions; can make the next one that writes
    case records fail after writing them (as a failed COMMIT would), noting how many it held."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.transactions = 0
        self.fail_next_write = False
        self.failed_batch_rows = 0

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self.transactions += 1

        def run(conn: sqlite3.Connection) -> T:
            if not self.fail_next_write:
                return fn(conn)
            count_before = conn.execute("SELECT COUNT(*) FROM case_records").fetchone()[0]
            result = fn(conn)
            count = conn.execute("SELECT COUNT(*) FROM case_records").fetchone()[0]
            if count > count_before:
                self.fail_next_write = False
                self.failed_batch_rows = count - count_before
                raise CommitFailed("disk said no")
            return result

        return await super().transaction(run)


@pytest.fixture
async def rdb(tmp_path: Path) -> AsyncIterator[RecordingDatabase]:
    database = RecordingDatabase(tmp_path / "erv.sqlite3")
    await database.open()
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def store(rdb: RecordingDatabase, tmp_path: Path) -> SqliteCaseRecordStore:
    record_store = SqliteCaseRecordStore(rdb, load_or_create_keyring(tmp_path / "keys.json"))
    await record_store.open()
    return record_store


async def stored_seqs(db: Database) -> list[int]:
    rows = await db.fetchall("SELECT seq FROM case_records ORDER BY position")
    return [row["seq"] for row in rows]


async def head_seq(db: Database) -> int | None:
    row = await db.fetchone("SELECT seq FROM case_record_head WHERE id = 1")
    return None if row is None else int(row["seq"])


async def test_concurrent_appends_all_land_in_fewer_transactions(
    store: SqliteCaseRecordStore, rdb: RecordingDatabase
) -> None:
    before = rdb.transactions
    headers = await asyncio.gather(
        *(store.append(f"sess-{n % 7}", "chat", {"n": n}) for n in range(200))
    )
    used = rdb.transactions - before
    assert sorted(h.seq for h in headers) == list(range(1, 201))
    assert 1 <= used < 200
    assert await stored_seqs(rdb) == list(range(1, 201))
    assert await head_seq(rdb) == 200
    result = await store.verify()
    assert result.ok and result.records == 200
    for s in range(7):
        events = await store.read(f"sess-{s}")
        assert [e.body["n"] for e in events] == [n for n in range(200) if n % 7 == s]
        # Each caller got back the header its record was stored under.
        assert [e.header for e in events] == [headers[e.body["n"]] for e in events]


async def test_concurrent_batches_keep_arrival_order_across_waves(
    store: SqliteCaseRecordStore, rdb: RecordingDatabase
) -> None:
    """Appends arriving while a batch commits form the next batch and continue the chain."""

    async def writer(w: int) -> list[RecordHeader]:
        return [await store.append(f"w-{w}", "chat", {"w": w, "i": i}) for i in range(25)]

    before = rdb.transactions
    results = await asyncio.gather(*(writer(w) for w in range(8)))
    assert rdb.transactions - before < 200
    for headers in results:  # each writer's own appends are in its order
        assert [h.seq for h in headers] == sorted(h.seq for h in headers)
    assert sorted(h.seq for hs in results for h in hs) == list(range(1, 201))
    assert (await store.verify()).ok


@pytest.mark.parametrize("bad_body", [{"x": object()}, {"x": float("nan")}, ["not", "a", "map"]])
async def test_a_bad_body_fails_alone(
    store: SqliteCaseRecordStore, rdb: RecordingDatabase, bad_body: Any
) -> None:
    outcomes = await asyncio.gather(
        *(
            store.append("sess-a", "chat", bad_body if n % 5 == 2 else {"n": n})
            for n in range(20)
        ),
        return_exceptions=True,
    )
    failed = [n for n, o in enumerate(outcomes) if isinstance(o, BaseException)]
    assert failed == [n for n in range(20) if n % 5 == 2]
    assert all(isinstance(outcomes[n], TypeError | ValueError) for n in failed)
    assert await stored_seqs(rdb) == list(range(1, 17))
    assert [e.body["n"] for e in await store.read("sess-a")] == [
        n for n in range(20) if n % 5 != 2
    ]
    assert (await store.verify()).ok


async def test_an_append_to_a_shredded_session_fails_alone(
    store: SqliteCaseRecordStore, rdb: RecordingDatabase
) -> None:
    await store.append("gone", "chat", {"n": -1})
    assert await store.shred("gone")
    outcomes = await asyncio.gather(
        *(store.append("gone" if n % 4 == 0 else "kept", "chat", {"n": n}) for n in range(12)),
        return_exceptions=True,
    )
    assert [n for n, o in enumerate(outcomes) if isinstance(o, SessionShredded)] == [0, 4, 8]
    assert [e.body["n"] for e in await store.read("kept")] == [
        n for n in range(12) if n % 4 != 0
    ]
    assert await stored_seqs(rdb) == list(range(1, 11))
    assert (await store.verify()).ok


async def test_a_failed_batch_stores_nothing_and_fails_every_append_in_it(
    store: SqliteCaseRecordStore, rdb: RecordingDatabase
) -> None:
    for n in range(3):
        await store.append("sess-a", "chat", {"n": n})
    rdb.fail_next_write = True
    outcomes = await asyncio.gather(
        *(store.append(f"sess-{n % 3}", "chat", {"n": 100 + n}) for n in range(30)),
        return_exceptions=True,
    )
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    stored = [o for o in outcomes if isinstance(o, RecordHeader)]
    # Every append of the failed batch, and only those, got the error.
    assert rdb.failed_batch_rows > 1
    assert len(failed) == rdb.failed_batch_rows
    assert all(isinstance(o, CommitFailed) for o in failed)
    assert len(stored) == 30 - len(failed)
    # Nothing of that batch is stored: the chain continues from where it was before it.
    assert await stored_seqs(rdb) == list(range(1, 4 + len(stored)))
    assert sorted(h.seq for h in stored) == list(range(4, 4 + len(stored)))
    assert await head_seq(rdb) == 3 + len(stored)
    result = await store.verify()
    assert result.ok and result.records == 3 + len(stored)
    # The store still works afterwards.
    after = await store.append("sess-a", "chat", {"n": "after"})
    assert after.seq == 4 + len(stored)
