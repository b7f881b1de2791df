"""RedisHub: the Hub for many nodes. Live state in Redis, messages routed by pub/sub.

Any participant may hold its socket on any node. Each node keeps only the sockets it holds
(`local`); who is in which session, every participant's seq and resume buffer, and the
conversation kept for late joiners live in Redis (signaling/redis_scripts.py), so a client
whose node died resumes on another node with the seq it last saw and misses nothing.

Each node beats a heartbeat key; when a node's heartbeat lapses, another node marks its
participants away (peers see `peer updated`) and starts their resume windows. Windows that
close are swept by whichever node gets there first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from signaling import redis_scripts
from signaling.hub import (
    HISTORY_MESSAGES,
    KNOCK_TTL,
    Decided,
    HubStats,
    Knock,
    LeftListener,
    PeerInfo,
    PlaceTaken,
)
from signaling.participant import (
    RESUME_BUFFER_MESSAGES,
    Admission,
    Connection,
    Participant,
    is_lobby,
    with_seq,
)
from signaling.protocol import ErrorCode, ProtocolError, Role, encode

log = logging.getLogger("erv.signaling")

HEARTBEAT_EVERY = 1.0
HEARTBEAT_TTL_MS = 3000
# After this node (re)gains Redis, wait this long before judging other nodes dead: their
# heartbeats lapsed during the outage too and they need a moment to beat again.
DEAD_NODE_GRACE = 2 * HEARTBEAT_TTL_MS / 1000
LIVE_TTL = 24 * 3600  # participants and sessions nobody tidied expire by themselves
ENDED_TTL = 7 * 24 * 3600
SWEEP_BATCH = 100


NONCE_BYTES = 12


class KeyWrap(Protocol):
    """Seals each session's live key for storage in Redis (the server wraps it with the case
    record's master key, which every node has)."""

    def seal_key(self, key: bytes, context: str) -> bytes: ...

    def open_key(self, blob: bytes, context: str) -> bytes: ...


_DESCRIBED = ("session", "role", "name", "node")


def _described(pid: str, raw: list[Any]) -> dict[str, Any] | None:
    """A participant's hash fields (_DESCRIBED) as its session and how peers see it."""
    if raw[0] is None:
        return None
    session, role, name, node = (_text(v) for v in raw)
    return {"session": session, "peer": {
        "pid": pid, "role": role, "name": name, "state": "present" if node else "away",
    }}


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisHub:
    def __init__(
        self, redis: Redis, *, node: str, key_wrap: KeyWrap, resume_window: float = 60.0,
        prefix: str = "erv:live:",
    ) -> None:
        self.redis = redis
        self.key_wrap = key_wrap
        # Live keys of the sessions with a socket here (pruned every few seconds).
        self._keys: dict[str, AESGCM] = {}
        self.node = node
        self.resume_window = resume_window
        self.prefix = prefix
        self.on_left: LeftListener | None = None
        self.local: dict[str, Participant] = {}
        self.redis_ok = False
        self.redis_ok_since = 0.0
        self.listening = False  # this node's pub/sub subscription is up
        self.round_trip: float | None = None
        self.on_round_trip: Callable[[float], None] | None = None  # for metrics
        self._channel = f"{prefix}n:{node}"
        self._scripts = {
            name: redis.register_script(getattr(redis_scripts, name))
            for name in ("ADMIT", "ATTACH", "DETACH", "REMOVE", "BROADCAST", "ROUTE",
                         "DELIVER_MANY")
        }
        self._tasks: set[asyncio.Task[Any]] = set()
        self._knocks: dict[str, Decided] = {}  # waiting devices whose socket is here
        self._loops: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()

    # -- running --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start listening and beating; returns once this node's channel is subscribed."""
        self._loops = [
            asyncio.create_task(self._listen(), name="redis-hub-listen"),
            asyncio.create_task(self._beat(), name="redis-hub-beat"),
        ]
        await asyncio.wait_for(self._subscribed.wait(), timeout=10)

    async def _run(self, name: str, *args: Any) -> Any:
        return await self._scripts[name](
            args=[self.prefix, RESUME_BUFFER_MESSAGES, *args]
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- sealing ----------------------------------------------------------------------------

    async def _key(self, session: str) -> AESGCM:
        """The session's live key: made by the first node that needs it, shared via Redis."""
        key = self._keys.get(session)
        if key is not None:
            return key
        name, context = f"{self.prefix}k:{session}", f"live:{session}"
        wrapped = await self.redis.get(name)
        if wrapped is None:
            fresh = self.key_wrap.seal_key(AESGCM.generate_key(bit_length=256), context)
            await self.redis.set(name, fresh, nx=True, ex=LIVE_TTL)
            wrapped = await self.redis.get(name)
            assert wrapped is not None
        key = AESGCM(self.key_wrap.open_key(_raw(wrapped), context))
        self._keys[session] = key
        return key

    async def _seal(self, session: str, message: dict[str, Any]) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        key = await self._key(session)
        return nonce + key.encrypt(nonce, encode(message).encode(), session.encode())

    def _open(self, session: str, blob: bytes) -> str | None:
        key = self._keys.get(session)
        if key is None:
            return None
        try:
            return key.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], session.encode()).decode()
        except InvalidTag:
            log.error("a live message for session %s did not open; dropped", session)
            return None

    def _open_entry(self, participant: Participant, entry: bytes) -> tuple[int, str | None]:
        """A resume-buffer entry (`seq|sealed message`) as (seq, frame to send)."""
        seq_text, blob = entry.split(b"|", 1)
        seq = int(seq_text)
        body = self._open(participant.session, blob)
        return seq, None if body is None else with_seq(body, seq)

    def _prune_keys(self) -> None:
        """Drop the live keys of sessions with no socket here any more."""
        here = {p.session for p in self.local.values()}
        for session in [s for s in self._keys if s not in here]:
            del self._keys[session]

    async def _listen(self) -> None:
        """Deliver what other nodes publish for the sockets held here; survive outages."""
        delay = 0.1
        while True:
            pubsub: PubSub | None = None
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self._channel)
                if self._subscribed.is_set():
                    # Whatever was published while we were not listening is in the buffers.
                    await self._catch_up()
                self._subscribed.set()
                self.listening = True
                delay = 0.1
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is not None and message["type"] == "message":
                        self._on_message(_raw(message["data"]))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self.listening:
                    log.warning("redis pub/sub lost (%s); reconnecting", type(exc).__name__)
                self.listening = False
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _catch_up(self) -> None:
        """Send each socket held here what was delivered to it while pub/sub was down."""
        for participant in list(self.local.values()):
            for entry in await self.redis.lrange(f"{self.prefix}b:{participant.pid}", 0, -1):
                self._send_entry(participant, _raw(entry))

    def _send_entry(self, participant: Participant, entry: bytes) -> None:
        seq, frame = self._open_entry(participant, entry)
        if seq > participant.seq and participant.connection is not None:
            participant.seq = seq
            if frame is not None:
                participant.connection.send(frame)

    def _on_message(self, data: bytes) -> None:
        kind, pid_bytes, rest = data.split(b"|", 2)
        if kind == b"k":  # a waiting device here was answered on another node
            decided = self._knocks.pop(pid_bytes.decode(), None)
            if decided is not None:
                decided(rest.decode())
            return
        participant = self.local.get(pid_bytes.decode())
        if participant is None:
            return
        if kind == b"d":
            self._send_entry(participant, rest)
        elif kind == b"c":
            code, bye, reason = rest.decode().split("|", 2)
            self._close_local(participant, int(code), reason, bye == "1")

    def _close_local(self, participant: Participant, code: int, reason: str, bye: bool) -> None:
        if self.local.get(participant.pid) is participant:
            del self.local[participant.pid]
        connection, participant.connection = participant.connection, None
        if connection is not None:
            if bye:
                connection.send(encode({"type": "bye", "reason": reason}))
            connection.close(code, reason)

    async def _tell_node(self, node: str, pid: str, code: int, reason: str, bye: bool) -> None:
        """Close a participant's socket wherever it is held."""
        if not node:
            return
        if node == self.node:
            participant = self.local.get(pid)
            if participant is not None:
                self._close_local(participant, code, reason, bye)
            return
        await self.redis.publish(
            f"{self.prefix}n:{node}", f"c|{pid}|{code}|{int(bye)}|{reason}"
        )

    async def _beat(self) -> None:
        """Heartbeat, sweep closed resume windows, and take over the dead nodes' sockets."""
        ticks = 0
        while True:
            try:
                started = time.perf_counter()
                await self.redis.set(f"{self.prefix}node:{self.node}", "1",
                                     px=HEARTBEAT_TTL_MS)
                self.round_trip = time.perf_counter() - started
                if self.on_round_trip is not None:
                    self.on_round_trip(self.round_trip)
                if not self.redis_ok:
                    self.redis_ok, self.redis_ok_since = True, time.monotonic()
                    log.info("redis reachable")
                    await self.redis.sadd(f"{self.prefix}nodes", self.node)
                    await self._reclaim()
                await self._sweep_away()
                if time.monotonic() - self.redis_ok_since > DEAD_NODE_GRACE:
                    await self._sweep_dead_nodes()
                ticks += 1
                if ticks % 5 == 0:
                    await self._reconcile()
                    self._prune_keys()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self.redis_ok:
                    log.error("redis unreachable (%s); live calls keep their media",
                              type(exc).__name__)
                self.redis_ok = False
            except Exception:
                log.exception("redis hub housekeeping failed")
            await asyncio.sleep(HEARTBEAT_EVERY)

    async def _reclaim(self) -> None:
        """After an outage: the sockets held here are still here; say so again in Redis."""
        for pid in list(self.local):
            await self.redis.sadd(f"{self.prefix}np:{self.node}", pid)

    async def _reconcile(self) -> None:
        """Participants Redis thinks are here but have no socket here (a detach that failed
        while Redis was away) become away now."""
        held = {_text(pid) for pid in await self.redis.smembers(f"{self.prefix}np:{self.node}")}
        for pid in held - set(self.local):
            await self._mark_away(pid, self.node, "")

    async def _mark_away(self, pid: str, node: str, epoch: str) -> None:
        deadline = int((time.time() + self.resume_window) * 1000)
        away_ttl = int(self.resume_window) + 60
        if await self._run("DETACH", pid, node, epoch, deadline, away_ttl):
            info = await self._describe(pid)
            if info is not None and not is_lobby(info["session"]):
                await self._broadcast_raw(
                    info["session"], {"type": "peer", "op": "updated", **info["peer"]},
                    exclude=pid,
                )

    async def _sweep_away(self) -> None:
        now_ms = int(time.time() * 1000)
        due = await self.redis.zrangebyscore(
            f"{self.prefix}away", "-inf", now_ms, start=0, num=SWEEP_BATCH
        )
        for raw in due:
            pid = _text(raw)
            if await self.redis.zrem(f"{self.prefix}away", pid):  # this node won the sweep
                await self._remove(pid, "timeout", only_if_away=True)

    async def _sweep_dead_nodes(self) -> None:
        for raw in await self.redis.smembers(f"{self.prefix}nodes"):
            node = _text(raw)
            if node == self.node or await self.redis.exists(f"{self.prefix}node:{node}"):
                continue
            if not await self.redis.srem(f"{self.prefix}nodes", node):
                continue  # another node is taking this one over
            pids = [_text(p) for p in await self.redis.smembers(f"{self.prefix}np:{node}")]
            log.warning("node %s stopped beating; %d participants now away", node, len(pids))
            for pid in pids:
                await self._mark_away(pid, node, "")
            await self.redis.delete(f"{self.prefix}np:{node}")

    # -- membership -------------------------------------------------------------------------

    async def admit(self, admission: Admission, connection: Connection, *,
                    replace: bool = True) -> Participant:
        participant = Participant(admission, joined_at=time.time())
        participant.connection = connection
        await self._key(admission.session)  # before any message for it can arrive
        self.local[participant.pid] = participant
        try:
            reply = await self._run(
                "ADMIT", admission.session, participant.pid, admission.role.value,
                admission.identity, admission.display_name,
                "" if admission.staff_id is None else admission.staff_id,
                _secret_hash(participant.resume_secret), self.node, participant.joined_at,
                LIVE_TTL, "1" if is_lobby(admission.session) else "0",
                admission.credential, "1" if replace else "0",
            )
        except BaseException:
            self.local.pop(participant.pid, None)
            raise
        status = _text(reply[0])
        if status != "ok":
            self.local.pop(participant.pid, None)
            if status == "ended":
                raise ProtocolError(ErrorCode.SESSION_ENDED, "this session has ended")
            if status == "taken":
                raise PlaceTaken(admission.session)
            raise ProtocolError(
                ErrorCode.CONFLICT, f"this call already has a {admission.role.value}"
            )
        fields = [_text(v) for v in reply[1:]]
        for i in range(0, len(fields), 5):
            pid, node, role, staff, name = fields[i:i + 5]
            await self._tell_node(node, pid, 1000, "replaced", True)
            await self._after_removal(
                pid, admission.session, role, staff, admission.identity, name, "replaced"
            )
        await self._replay_history(participant)
        if not is_lobby(admission.session):
            await self._broadcast_raw(
                admission.session, {"type": "peer", "op": "joined", **participant.describe()},
                exclude=participant.pid,
            )
        log.info("participant %s joined as %s", participant.pid, participant.role.value)
        return participant

    async def _replay_history(self, participant: Participant) -> None:
        session = participant.session
        staff = participant.role.is_staff
        history = await self.redis.lrange(f"{self.prefix}h:{session}", 0, -1)
        location = await self.redis.get(f"{self.prefix}loc:{session}")
        kept = [*history, *([location] if location is not None and staff else [])]
        blobs = []
        for sealed in kept:
            body = self._open(session, _raw(sealed))
            if body is None:
                continue
            message = json.loads(body)
            if message["type"] == "advice" and not staff:
                continue
            blobs.append(await self._seal(session, {**message, "replay": True}))
        if blobs:
            await self._run("DELIVER_MANY", participant.pid, *blobs)

    async def check_resume(self, pid: str, secret: str) -> Participant:
        raw = await self.redis.hgetall(f"{self.prefix}p:{pid}") if len(pid) <= 64 else {}
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if not fields or not hmac.compare_digest(fields["secret"], _secret_hash(secret)):
            raise ProtocolError(
                ErrorCode.RESUME_FAILED, "nothing to resume; join again with your credential"
            )
        admission = Admission(
            fields["session"], Role(fields["role"]), fields["identity"], fields["name"],
            int(fields["staff"]) if fields["staff"] else None, fields.get("cred", ""),
        )
        return Participant(admission, pid=pid, resume_secret=secret,
                           joined_at=float(fields["joined_at"]))

    async def resume(self, pid: str, secret: str, last_seq: int, connection: Connection) -> (
        tuple[Participant, list[str]]
    ):
        participant = await self.check_resume(pid, secret)
        participant.seq = last_seq  # frames at or below this were seen; drop repeats
        participant.connection = connection
        await self._key(participant.session)
        earlier = self.local.get(pid)
        self.local[pid] = participant
        try:
            reply = await self._run("ATTACH", pid, _secret_hash(secret), last_seq, self.node,
                                    LIVE_TTL)
        except BaseException:
            self._restore(pid, earlier)
            raise
        status = _text(reply[0])
        if status != "ok":
            self._restore(pid, earlier)
            if status == "toofar":
                raise ProtocolError(ErrorCode.RESUME_FAILED,
                                    "too much was missed; join again with your credential")
            raise ProtocolError(ErrorCode.RESUME_FAILED,
                                "nothing to resume; join again with your credential")
        old_node, epoch = _text(reply[1]), int(reply[2])
        missed = []
        for entry in reply[4:]:
            seq, frame = self._open_entry(participant, _raw(entry))
            participant.seq = max(participant.seq, seq)
            if frame is not None:
                missed.append(frame)
        participant.epoch = epoch
        if earlier is not None and earlier.connection is not None:
            earlier.connection.close(4000, "resumed_elsewhere")
            earlier.connection = None
        elif old_node and old_node != self.node:
            await self._tell_node(old_node, pid, 4000, "resumed_elsewhere", False)
        if not old_node and not is_lobby(participant.session):
            await self._broadcast_raw(
                participant.session, {"type": "peer", "op": "updated", **participant.describe()},
                exclude=pid,
            )
        log.info("participant %s resumed after seq %d", pid, last_seq)
        return participant, missed

    def _restore(self, pid: str, earlier: Participant | None) -> None:
        if earlier is not None:
            self.local[pid] = earlier
        else:
            self.local.pop(pid, None)

    async def detach(self, participant: Participant, connection: Connection) -> None:
        if self.local.get(participant.pid) is not participant \
                or participant.connection is not connection:
            return
        del self.local[participant.pid]
        participant.connection = None
        await self._mark_away(participant.pid, self.node, str(participant.epoch))

    async def leave(self, participant: Participant, reason: str) -> None:
        if self.local.get(participant.pid) is participant:
            del self.local[participant.pid]
        connection, participant.connection = participant.connection, None
        removed = await self._remove(participant.pid, reason, only_if_away=False, tell=False)
        if connection is not None and removed:
            connection.send(encode({"type": "bye", "reason": reason}))
            connection.close(1000, reason)

    async def dismiss(self, pid: str, secret: str, reason: str) -> None:
        await self.check_resume(pid, secret)
        local = self.local.get(pid)
        if local is not None:
            await self.leave(local, reason)  # its socket is here: bye and close it now
        else:
            await self._remove(pid, reason, only_if_away=False)  # tells the node holding it

    async def _remove(self, pid: str, reason: str, *, only_if_away: bool,
                      tell: bool = True) -> bool:
        fields = [_text(v) for v in await self._run("REMOVE", pid, "1" if only_if_away else "0")]
        if not fields:
            return False
        session, role, node, staff, identity, name = fields
        if tell:
            await self._tell_node(node, pid, 1000, reason, True)
        await self._after_removal(pid, session, role, staff, identity, name, reason)
        return True

    async def _after_removal(self, pid: str, session: str, role: str, staff: str,
                             identity: str, name: str, reason: str) -> None:
        if not is_lobby(session):
            await self._broadcast_raw(
                session, {"type": "peer", "op": "left", "pid": pid, "role": role,
                          "reason": reason},
            )
        log.info("participant %s left (%s)", pid, reason)
        if self.on_left is not None:
            admission = Admission(session, Role(role), identity, name,
                                  int(staff) if staff else None)
            self._spawn(self.on_left(Participant(admission, pid=pid), reason))

    async def _callers(self, session: str) -> dict[str, str]:
        """The session's caller participants: pid -> credential digest."""
        pids = [_text(p) for p in await self.redis.smembers(f"{self.prefix}s:{session}")]
        if not pids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid in pids:
                pipe.hmget(f"{self.prefix}p:{pid}", "role", "cred")
            replies = await pipe.execute()
        return {pid: _text(cred or b"") for pid, (role, cred) in zip(pids, replies, strict=True)
                if role is not None and _text(role) == Role.VICTIM.value}

    async def caller_credentials(self, session: str) -> frozenset[str]:
        return frozenset((await self._callers(session)).values())

    async def end_callers(self, session: str, keep: frozenset[str], reason: str) -> int:
        count = 0
        for pid, credential in (await self._callers(session)).items():
            if credential not in keep:
                count += await self._remove(pid, reason, only_if_away=False)
        return count

    # -- devices waiting at the door --------------------------------------------------------

    async def knock(self, session: str, credential: str, decided: Decided) -> Knock:
        knock = Knock(secrets.token_hex(8), session, credential, time.time())
        self._knocks[knock.id] = decided
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(f"{self.prefix}kn:{knock.id}", mapping={
                "session": session, "credential": credential, "node": self.node,
                "since": repr(knock.since)})
            pipe.expire(f"{self.prefix}kn:{knock.id}", KNOCK_TTL)
            pipe.sadd(f"{self.prefix}kns:{session}", knock.id)
            pipe.expire(f"{self.prefix}kns:{session}", KNOCK_TTL)
            await pipe.execute()
        return knock

    async def _knock(self, knock_id: str) -> tuple[Knock, str] | None:
        raw = await self.redis.hgetall(f"{self.prefix}kn:{knock_id}") if len(knock_id) <= 64 \
            else {}
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if not fields:
            return None
        knock = Knock(knock_id, fields["session"], fields["credential"], float(fields["since"]))
        return knock, fields["node"]

    async def knocks(self, session: str) -> list[Knock]:
        found = []
        for knock_id in sorted(_text(k) for k in
                               await self.redis.smembers(f"{self.prefix}kns:{session}")):
            held = await self._knock(knock_id)
            if held is None:
                await self.redis.srem(f"{self.prefix}kns:{session}", knock_id)
            else:
                found.append(held[0])
        return sorted(found, key=lambda k: k.since)

    async def _take_knock(self, knock: Knock) -> bool:
        """Remove a waiting device's entry; True for the one caller that removed it."""
        taken = bool(await self.redis.delete(f"{self.prefix}kn:{knock.id}"))
        await self.redis.srem(f"{self.prefix}kns:{knock.session}", knock.id)
        return taken

    async def answer_knock(self, session: str, knock_id: str, decision: str) -> Knock | None:
        held = await self._knock(knock_id)
        if held is None or held[0].session != session or not await self._take_knock(held[0]):
            return None
        knock, node = held
        decided = self._knocks.pop(knock_id, None)
        if decided is not None:
            decided(decision)
        elif node != self.node:
            await self.redis.publish(f"{self.prefix}n:{node}", f"k|{knock_id}|{decision}")
        return knock

    async def withdraw_knock(self, knock: Knock) -> bool:
        self._knocks.pop(knock.id, None)
        return await self._take_knock(knock)

    async def end_session(self, session: str, reason: str) -> int:
        for knock in await self.knocks(session):
            await self.answer_knock(session, knock.id, reason)
        await self.redis.set(f"{self.prefix}end:{session}", "1", ex=ENDED_TTL)
        await self.redis.delete(f"{self.prefix}h:{session}", f"{self.prefix}loc:{session}")
        members = [_text(m) for m in await self.redis.smembers(f"{self.prefix}s:{session}")]
        count = 0
        for pid in members:
            count += await self._remove(pid, reason, only_if_away=False)
        # Without its key, whatever of the session is still on Redis's disk is unreadable.
        await self.redis.delete(f"{self.prefix}k:{session}")
        self._keys.pop(session, None)
        return count

    async def kick_staff(self, staff_id: int, reason: str) -> int:
        pids = [_text(p) for p in await self.redis.smembers(f"{self.prefix}staff:{staff_id}")]
        count = 0
        for pid in pids:
            count += await self._remove(pid, reason, only_if_away=False)
        return count

    # -- delivery ---------------------------------------------------------------------------

    async def remember(self, session: str, message: dict[str, Any]) -> None:
        text = await self._seal(session, message)
        if message["type"] == "location":
            await self.redis.set(f"{self.prefix}loc:{session}", text, ex=LIVE_TTL)
            return
        key = f"{self.prefix}h:{session}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, text)
            pipe.ltrim(key, -HISTORY_MESSAGES, -1)
            pipe.expire(key, LIVE_TTL)
            await pipe.execute()

    async def deliver(self, participant: Participant, message: dict[str, Any]) -> None:
        await self._run("DELIVER_MANY", participant.pid,
                        await self._seal(participant.session, message))

    async def broadcast(
        self, session: str, message: dict[str, Any], *, roles: Iterable[Role] | None = None,
        exclude: Participant | None = None,
    ) -> int:
        return await self._broadcast_raw(
            session, message, roles=roles, exclude=exclude.pid if exclude else ""
        )

    async def _broadcast_raw(self, session: str, message: dict[str, Any], *,
                             roles: Iterable[Role] | None = None, exclude: str = "") -> int:
        allowed = "" if roles is None else "," + ",".join(r.value for r in roles) + ","
        blob = await self._seal(session, message)
        return int(await self._run("BROADCAST", session, blob, exclude, allowed))

    async def route(self, sender: Participant, to: str, message: dict[str, Any]) -> None:
        if is_lobby(sender.session) or len(to) > 64 or int(await self._run(
            "ROUTE", sender.session, sender.pid, to, await self._seal(sender.session, message)
        )) < 0:
            raise ProtocolError(ErrorCode.UNKNOWN_PEER, "no such peer in your session")

    # -- questions --------------------------------------------------------------------------

    async def _describe(self, pid: str) -> dict[str, Any] | None:
        raw = await self.redis.hmget(f"{self.prefix}p:{pid}", *_DESCRIBED)
        return _described(pid, raw)

    async def _members(self, session: str) -> list[dict[str, Any]]:
        """Everyone in the session, in two round trips however many they are (the sessions
        list asks this for every live session)."""
        pids = sorted(_text(p) for p in await self.redis.smembers(f"{self.prefix}s:{session}"))
        if not pids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid in pids:
                pipe.hmget(f"{self.prefix}p:{pid}", *_DESCRIBED)
            replies = await pipe.execute()
        found = [_described(pid, raw) for pid, raw in zip(pids, replies, strict=True)]
        return [info["peer"] for info in found if info is not None]

    async def peers_of(self, participant: Participant) -> list[dict[str, Any]]:
        return [p for p in await self._members(participant.session) if p["pid"] != participant.pid]

    async def roster(self, session: str) -> list[dict[str, Any]]:
        return await self._members(session)

    async def lookup(self, pid: str) -> PeerInfo | None:
        info = await self._describe(pid) if len(pid) <= 64 else None
        if info is None:
            return None
        peer = info["peer"]
        return PeerInfo(pid, info["session"], Role(peer["role"]), peer["state"] == "present")

    async def occupied(self, session: str) -> bool:
        return bool(await self.redis.scard(f"{self.prefix}s:{session}"))

    async def online(self, session: str) -> bool:
        return any(p["state"] == "present" for p in await self._members(session))

    async def has_history(self, session: str) -> bool:
        return bool(await self.redis.exists(f"{self.prefix}h:{session}",
                                            f"{self.prefix}loc:{session}"))

    def held(self) -> list[Participant]:
        return [p for p in self.local.values() if p.connection is not None]

    def stats(self) -> HubStats:
        sessions = {p.session for p in self.local.values() if not is_lobby(p.session)}
        return HubStats(live_sessions=len(sessions), sockets=len(self.local))

    async def close(self) -> None:
        """Shutting down: tell this node's clients to come back (to any node) and mark them
        away, so their resume windows start now rather than when the heartbeat lapses."""
        for loop_task in self._loops:
            loop_task.cancel()
        for participant in list(self.local.values()):
            connection, participant.connection = participant.connection, None
            if connection is not None:
                connection.send(encode({"type": "bye", "reason": "server_shutdown"}))
                connection.close(1001, "server_shutdown")
            with contextlib.suppress(RedisError, OSError):
                await self._mark_away(participant.pid, self.node, "")
        self.local.clear()
        with contextlib.suppress(RedisError, OSError):
            await self.redis.srem(f"{self.prefix}nodes", self.node)
            await self.redis.delete(f"{self.prefix}node:{self.node}")
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._tasks, return_exceptions=True)
