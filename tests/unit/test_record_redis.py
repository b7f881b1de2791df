"""server.redis_backend.record: what only the Redis case record has to get right.

Pins: several nodes (separate clients, and separate processes) appending at once keep one
unbroken chain with no duplicate or missing seq; appends acknowledged before Redis stops or is
killed are all there after it restarts; with Redis down an append fails within the socket
timeout and the chain is intact afterwards; a script reply lost on the wire (redis-py resends
the script) stores the batch once, not twice; every key carries the prefix and only the
short-lived batch markers expire; a shred landing between a node's read and its write, and a
hold set on another node before a purge shreds, are both decided inside the scripts.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis as syncredis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.record import (
    RecordHeader,
    SessionShredded,
    load_keyring,
    load_or_create_keyring,
    rotate_key_file,
)
from server.redis_backend.calls import RedisVideoSessions
from server.redis_backend.record import RecordKeys, RedisCaseRecordStore
from server.redis_backend.record_scripts import SHRED
from server.redis_backend.retention import RedisRetention
from tests.support.record import as_bytes, redis_client
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "record-keys.json"
    load_or_create_keyring(path)
    return path


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[list[aioredis.Redis]]:
    """Two clients with their own connections: two nodes' view of one Redis."""
    made = [redis_client(redis_url), redis_client(redis_url)]
    try:
        yield made
    finally:
        for client in made:
            await client.aclose()


def store_on(client: aioredis.Redis, key_file: Path, prefix: str = "erv:") -> RedisCaseRecordStore:
    return RedisCaseRecordStore(client, load_keyring(key_file), prefix=prefix)


async def check_one_chain(store: RedisCaseRecordStore, count: int) -> None:
    result = await store.verify()
    assert result.ok, result.describe()
    assert result.records == count
    assert sorted([r.header.seq async for r in store.iterate_raw()]) == list(range(1, count + 1))
    head = await store.head()
    assert head is not None and head.seq == count


async def test_two_nodes_appending_at_once_keep_one_chain(
    clients: list[aioredis.Redis], key_file: Path
) -> None:
    node_a, node_b = (store_on(client, key_file) for client in clients)

    async def burst(store: RedisCaseRecordStore, name: str) -> list[RecordHeader]:
        # Both nodes write to a shared session that neither has seen yet, and to their own;
        # in rounds, so later batches race on sessions that already exist.
        headers: list[RecordHeader] = []
        for start in range(0, 100, 10):
            headers += await asyncio.gather(*(
                store.append("shared" if n % 2 else f"own-{name}", "chat",
                             {"node": name, "n": n})
                for n in range(start, start + 10)
            ))
        return headers

    headers_a, headers_b = await asyncio.gather(burst(node_a, "a"), burst(node_b, "b"))
    seqs = [h.seq for h in headers_a + headers_b]
    assert sorted(seqs) == list(range(1, 201))  # no gap, no duplicate
    await check_one_chain(node_a, 200)
    # The shared session got one data key, so every node reads every event of it.
    shared = await node_b.read("shared")
    assert sorted((e.body["node"], e.body["n"]) for e in shared) == sorted(
        (node, n) for node in "ab" for n in range(1, 100, 2))
    assert [e.header.seq for e in shared] == sorted(e.header.seq for e in shared)
    assert len(await node_a.read("own-b")) == 50
    assert await clients[0].hlen(node_a.keys.data_keys("shared")) == 1


NODE_SCRIPT = """
import asyncio, sys, time
from pathlib import Path
import redis.asyncio as aioredis
from server.record import load_keyring
from server.redis_backend.record import RedisCaseRecordStore

async def main(url, key_file, name, count, start_at):
    client = aioredis.Redis.from_url(url, socket_timeout=5)
    store = RedisCaseRecordStore(client, load_keyring(Path(key_file)))
    async def one(n):
        header = await store.append(f"sess-{n % 3}", "chat", {"node": name, "n": n})
        return header.seq
    await asyncio.sleep(max(0.0, start_at - time.time()))  # all nodes start together
    seqs = []
    for start in range(0, count, 5):
        seqs += await asyncio.gather(*(one(n) for n in range(start, min(count, start + 5))))
    print(" ".join(map(str, seqs)))
    await client.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])))
"""


async def test_separate_processes_appending_at_once_keep_one_chain(
    redis_url: str, clients: list[aioredis.Redis], key_file: Path
) -> None:
    start_at = str(time.time() + 2.0)
    nodes = [
        subprocess.Popen(
            [sys.executable, "-c", NODE_SCRIPT, redis_url, str(key_file), f"node{i}", "60",
             start_at],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(3)
    ]
    outputs = [await asyncio.to_thread(node.communicate, timeout=120) for node in nodes]
    for node, (_, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, err
    seqs = [int(s) for out, _ in outputs for s in out.split()]
    assert sorted(seqs) == list(range(1, 181))
    store = store_on(clients[0], key_file)
    await check_one_chain(store, 180)
    events = [e for ref in ("sess-0", "sess-1", "sess-2") for e in await store.read(ref)]
    assert sorted((e.body["node"], e.body["n"]) for e in events) == sorted(
        (f"node{i}", n) for i in range(3) for n in range(60))


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_acknowledged_appends_survive_a_redis_restart(
    how: str, redis_server: RedisServer, redis_url: str, key_file: Path
) -> None:
    client = redis_client(redis_url)
    store = store_on(client, key_file)
    headers = await asyncio.gather(*(
        store.append(f"sess-{n % 4}", "chat", {"n": n}) for n in range(50)))
    await client.aclose()
    # appendfsync always: what was acknowledged is on disk, even if Redis is killed outright.
    redis_server.kill() if how == "kill" else redis_server.stop()
    redis_server.start()

    client = redis_client(redis_url)
    try:
        store = store_on(client, key_file)
        await check_one_chain(store, 50)
        stored = {r.header.seq: r.header async for r in store.iterate_raw()}
        assert all(stored[h.seq] == h for h in headers)
        assert sum([len(await store.read(f"sess-{i}")) for i in range(4)]) == 50
        assert (await store.append("sess-0", "ended", {})).seq == 51
    finally:
        await client.aclose()


async def test_redis_outage_fails_appends_quickly_and_leaves_the_chain_intact(
    redis_server: RedisServer, redis_url: str, key_file: Path
) -> None:
    client = redis_client(redis_url)  # 2 s socket timeouts, as a node sets them
    try:
        store = store_on(client, key_file)
        for n in range(3):
            await store.append("sess-a", "chat", {"n": n})
        redis_server.stop()
        started = time.monotonic()
        with pytest.raises((RedisConnectionError, RedisTimeoutError, OSError)):
            await asyncio.wait_for(store.append("sess-a", "chat", {"n": "lost"}), 60)
        assert time.monotonic() - started < 30  # bounded by timeouts, not hanging
        redis_server.start()
        header = await store.append("sess-a", "chat", {"n": 3})
        assert header.seq == 4
        await check_one_chain(store, 4)
        assert [e.body["n"] for e in await store.read("sess-a")] == [0, 1, 2, 3]
    finally:
        await client.aclose()


async def test_an_append_cut_off_mid_burst_leaves_acknowledged_records_and_one_chain(
    redis_server: RedisServer, redis_url: str, key_file: Path
) -> None:
    """Redis killed while appends are in flight: every acknowledged one is kept, the others
    fail (none hangs), and the chain verifies after the restart."""
    client = redis_client(redis_url)
    try:
        store = store_on(client, key_file)
        tasks = [asyncio.create_task(store.append(f"s{n % 5}", "chat", {"n": n}))
                 for n in range(400)]
        while sum(task.done() for task in tasks) < 20:
            await asyncio.sleep(0.001)
        redis_server.kill()
        outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
        acknowledged = [o for o in outcomes if isinstance(o, RecordHeader)]
        assert len(acknowledged) >= 20
        redis_server.start()
        stored = {r.header.seq: r.header async for r in store.iterate_raw()}
        assert all(stored.get(h.seq) == h for h in acknowledged)
        result = await store.verify()
        assert result.ok, result.describe()
    finally:
        await client.aclose()


class DropFirstScriptReply:
    """A TCP hop in front of Redis that, once, lets a script run but loses its reply, as a
    cut connection would; redis-py then reconnects and sends the same script again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.armed = False
        self.dropped = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()
                reply = await up_reader.read(65536)  # one request, one reply: RESP in turn
                if self.armed and b"EVALSHA" in data.upper() and b"ok" in reply:
                    self.armed = False
                    self.dropped += 1
                    return  # the script ran; its reply never arrives
                writer.write(reply)
                await writer.drain()
        finally:
            writer.close()
            up_writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_a_lost_script_reply_stores_the_batch_once(
    redis_server: RedisServer, redis_url: str, key_file: Path
) -> None:
    hop = DropFirstScriptReply(redis_server.port)
    url = await hop.start()
    client = aioredis.Redis.from_url(url, socket_timeout=2.0)
    try:
        store = store_on(client, key_file)
        first = await store.append("sess-a", "chat", {"n": 0})
        hop.armed = True
        second = await store.append("sess-a", "chat", {"n": 1})
        assert hop.dropped == 1
        assert (first.seq, second.seq) == (1, 2)
        await check_one_chain(store, 2)
        assert [e.body["n"] for e in await store.read("sess-a")] == [0, 1]
    finally:
        await client.aclose()
        await hop.close()


async def test_every_key_has_the_prefix_and_only_batch_markers_expire(
    clients: list[aioredis.Redis], key_file: Path
) -> None:
    client = clients[0]
    store = store_on(client, key_file, prefix="ervtest:")
    await asyncio.gather(*(store.append(f"sess-{n % 2}", "chat", {"n": n}) for n in range(10)))
    await store.shred("sess-1")
    keys = sorted(as_bytes(k).decode() for k in await client.keys("*"))
    assert keys and all(k.startswith("ervtest:record:{chain}:") for k in keys), keys
    for key in keys:
        ttl = await client.ttl(key)
        if ":batch:" in key:
            assert 0 < ttl <= 600, key
        else:
            assert ttl == -1, key  # the record itself never expires
    assert store.keys.data_keys("sess-1") not in keys
    assert json.loads(as_bytes(await client.hget(store.keys.records, "1")))["seq"] == 1


async def test_a_shred_between_reading_and_writing_wins(
    redis_url: str, clients: list[aioredis.Redis], key_file: Path
) -> None:
    """Another node shreds the session after this node read its keys but before its script
    ran: the append fails as SessionShredded and no wrapping of the key is written back."""
    client = clients[0]
    await store_on(client, key_file).append("sess-a", "created", {})
    new_id = rotate_key_file(key_file)  # so the append would also store a fresh wrapping
    sync = syncredis.Redis.from_url(redis_url)
    keys = RecordKeys("erv:")
    shredded_meanwhile: list[object] = []

    def clock() -> float:
        # Called while sealing, after the head and keys were read: the other node acts now.
        if not shredded_meanwhile:
            shredded_meanwhile.append(sync.eval(
                SHRED, 4, keys.data_keys("sess-a"), keys.shredded, keys.activity, keys.holds,
                "sess-a", repr(time.time()), "0"))
        return time.time()

    store = RedisCaseRecordStore(client, load_keyring(key_file), clock)
    try:
        with pytest.raises(SessionShredded):
            await store.append("sess-a", "chat", {"text": "late"})
    finally:
        sync.close()
    assert shredded_meanwhile == [1]
    assert await client.exists(keys.data_keys("sess-a")) == 0
    assert new_id  # the rotation happened
    await check_one_chain(store, 1)


async def test_a_held_session_is_refused_by_the_shred_itself(
    clients: list[aioredis.Redis], key_file: Path, tmp_path: Path
) -> None:
    """The hold is checked inside the shred script, so a hold set between a purge's listing
    and its shredding (on another node) still wins."""
    client = clients[0]
    store = store_on(client, key_file)
    retention = RedisRetention(client, store, tmp_path, sessions=RedisVideoSessions(client))
    await store.append("sess-a", "session_created", {})
    await retention.hold("sess-a", "set meanwhile", by="sam")
    assert await store.shred_unless_held("sess-a") is None
    assert len(await store.read("sess-a")) == 2
    assert await store.shred_unless_held("sess-a", unless_held=False) is True
    with pytest.raises(SessionShredded):
        await store.read("sess-a")
    with pytest.raises(ValueError, match="same prefix"):
        RedisRetention(client, store, tmp_path, sessions=RedisVideoSessions(client),
                       prefix="other:")
