"""Every store the service uses, built for the configured backend.

The embedded default keeps everything in one SQLite file; with `ERV_REDIS_URL` set, every
store lives in Redis so any number of nodes share it. Both sets implement the same interfaces
and pass the same contract tests, so nothing above this module knows which one it has.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis

from server.accounts import StaffAccounts, StaffAccountStore
from server.auth import StaffSessions, StaffSessionStore
from server.config import Config
from server.db import Database
from server.invites import InviteBook, InviteStore
from server.record import CaseRecordStore, SqliteCaseRecordStore
from server.record.keys import service_keyring
from server.record.retention import Retention, RetentionStore
from server.redis_link import check_persistence, redis_client, wait_for_redis
from server.sessions import VideoSessions, VideoSessionStore
from server.specialists import InvitationStore, SpecialistInvitations
from server.throttle import ThrottlePolicy


@dataclass
class Stores:
    accounts: StaffAccountStore
    staff_sessions: StaffSessionStore
    sessions: VideoSessionStore
    invites: InviteStore
    invitations: InvitationStore
    record: CaseRecordStore
    retention: RetentionStore
    ping: Callable[[], Awaitable[object]]  # raises if the backend cannot be reached
    backend: str  # "sqlite" or "redis"
    db: Database | None = None
    redis: Redis | None = None
    _closers: list[Callable[[], Awaitable[object]]] = field(default_factory=list)

    async def close(self) -> None:
        for closer in reversed(self._closers):
            await closer()


def throttle_policy(config: Config) -> ThrottlePolicy:
    return ThrottlePolicy(
        account_limit=config.login_max_failures,
        client_limit=config.login_client_max_failures,
        device_limit=config.login_max_failures,
        half_life=float(config.login_decay_seconds),
    )


async def _sqlite_stores(config: Config) -> Stores:
    db = Database(config.db_path)
    await db.open()
    accounts = StaffAccounts(db, throttle_policy(config), config.scrypt_n)
    record = SqliteCaseRecordStore(db, service_keyring(config))
    await record.open()
    retention = Retention(db, record, config.data_dir / "evidence")
    await retention.open()
    return Stores(
        accounts=accounts,
        staff_sessions=StaffSessions(db, accounts, config.staff_session_ttl),
        sessions=VideoSessions(db),
        invites=InviteBook(db, config.invite_ttl, config.credential_ttl),
        invitations=SpecialistInvitations(db, config.specialist_ring),
        record=record,
        retention=retention,
        ping=lambda: db.fetchone("SELECT 1"),
        backend="sqlite",
        db=db,
        _closers=[db.close],
    )


async def _redis_stores(config: Config, *, check_durability: bool = True) -> Stores:
    from server.redis_backend.accounts import RedisStaffAccounts, RedisStaffSessions
    from server.redis_backend.calls import RedisVideoSessions
    from server.redis_backend.invitations import RedisSpecialistInvitations
    from server.redis_backend.links import RedisInviteBook
    from server.redis_backend.record import RedisCaseRecordStore
    from server.redis_backend.retention import RedisRetention

    client = redis_client(config)
    try:
        await wait_for_redis(client)
        if check_durability:
            await check_persistence(client, config.redis_allow_data_loss)
    except BaseException:
        await client.aclose()
        raise
    prefix = config.redis_prefix
    accounts = RedisStaffAccounts(client, throttle_policy(config), config.scrypt_n,
                                  prefix=prefix)
    record = RedisCaseRecordStore(client, service_keyring(config), prefix=prefix)
    sessions = RedisVideoSessions(client, prefix=prefix)
    retention = RedisRetention(client, record, config.data_dir / "evidence",
                               sessions=sessions, prefix=prefix)
    await retention.open()
    return Stores(
        accounts=accounts,
        staff_sessions=RedisStaffSessions(client, accounts, config.staff_session_ttl,
                                          prefix=prefix),
        sessions=sessions,
        invites=RedisInviteBook(client, config.invite_ttl, config.credential_ttl, prefix=prefix),
        invitations=RedisSpecialistInvitations(client, config.specialist_ring, prefix=prefix),
        record=record,
        retention=retention,
        ping=client.ping,
        backend="redis",
        redis=client,
        _closers=[client.aclose],
    )


async def open_stores(config: Config, *, check_durability: bool = True) -> Stores:
    if config.redis_url:
        return await _redis_stores(config, check_durability=check_durability)
    return await _sqlite_stores(config)


@contextlib.asynccontextmanager
async def stores_for(config: Config) -> AsyncIterator[Stores]:
    """Stores for a command-line tool: opened, then closed however the tool ends."""
    stores = await open_stores(config)
    try:
        yield stores
    finally:
        await stores.close()
