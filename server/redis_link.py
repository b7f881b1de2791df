"""The connection to Redis for the scale-out mode, and the start-up checks it must pass."""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from server.config import Config
from signaling.endpoint import STORE_UNREACHABLE

log = logging.getLogger("erv.redis")

# Failures that mean "Redis is not reachable right now", as opposed to a bug (BusyLoadingError,
# Redis still reading its files, is a ConnectionError too).
REDIS_DOWN = STORE_UNREACHABLE
START_WAIT = 30.0


class StoreUnavailable(RuntimeError):
    """The configured store cannot be used; the message says why and what to do."""


class RedisNotDurable(StoreUnavailable):
    """Redis would lose acknowledged writes on a crash, and nobody said that is acceptable."""


POOL_SIZE = 64  # connections per node; a busy node queues for one rather than failing
POOL_WAIT = 5.0  # seconds a command waits for a free connection before it fails


def redis_client(config: Config) -> Redis:
    # Timeouts keep a request from hanging when Redis goes away: it fails, and says so.
    # A pooled connection that Redis closed (it restarted) fails on first use; one quick
    # retry on a new connection hides that. Timeouts are not retried: the command may have
    # run, and a second run could write twice.
    pool = BlockingConnectionPool.from_url(
        config.redis_url, max_connections=POOL_SIZE, timeout=POOL_WAIT,
        socket_timeout=3.0, socket_connect_timeout=2.0, health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        retry_on_error=[RedisConnectionError], retry_on_timeout=False,
    )
    return Redis.from_pool(pool)  # the client owns the pool: closing it closes them all


async def wait_for_redis(client: Redis, patience: float = START_WAIT) -> None:
    """Wait for Redis at start-up (it may be starting too), then give up clearly."""
    deadline = time.monotonic() + patience
    delay = 0.2
    while True:
        try:
            await client.ping()
            return
        except REDIS_DOWN as exc:
            if time.monotonic() > deadline:
                raise StoreUnavailable(
                    f"Redis at ERV_REDIS_URL is not reachable ({type(exc).__name__}) after "
                    f"{patience:.0f} s; is it running, and is the URL right?"
                ) from exc
            log.warning("waiting for Redis (%s)", type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def check_persistence(client: Redis, allow_data_loss: bool) -> None:
    """Refuse to run on a Redis without AOF unless told that data loss is acceptable."""
    info = await client.info("persistence")
    if not info.get("aof_enabled"):
        if allow_data_loss:
            log.warning("Redis persistence (AOF) is OFF: a Redis crash loses case-record "
                        "writes. Allowed by ERV_REDIS_ALLOW_DATA_LOSS; never do this live.")
            return
        raise RedisNotDurable(
            "Redis has append-only persistence (AOF) off, so a crash would lose case-record "
            "writes that were already acknowledged. Set `appendonly yes` and `appendfsync "
            "always` in redis.conf (see docs/operations.md), or set "
            "ERV_REDIS_ALLOW_DATA_LOSS=1 for a demo or test."
        )
    try:
        fsync = await client.config_get("appendfsync")
    except RedisError:
        return  # managed Redis may hide CONFIG; AOF is on, which is what we can check
    values = {str(k, "utf-8") if isinstance(k, bytes) else str(k): v for k, v in fsync.items()}
    if values.get("appendfsync") not in ("always", b"always"):
        log.warning("Redis appendfsync is not 'always': up to a second of acknowledged "
                    "writes can be lost if the Redis host crashes")
