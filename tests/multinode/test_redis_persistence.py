"""A node refuses a Redis that would lose acknowledged writes, unless told data loss is fine."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from server.record.crypto import load_or_create_keyring
from tests.support.live import free_port
from tests.support.nodes import METRICS_TOKEN, Node
from tests.support.redis_server import RedisServer


def node_on(redis: RedisServer, folder: Path, **env: str) -> Node:
    keys = folder / "record-keys.json"
    load_or_create_keyring(keys)
    port = free_port()
    settings = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ERV_")},
        "ERV_TLS": "0", "ERV_SECURE_COOKIES": "0", "ERV_PORT": str(port),
        "ERV_PUBLIC_URL": f"http://127.0.0.1:{port}", "ERV_DATA_DIR": str(folder / "data"),
        "ERV_REDIS_URL": redis.url, "ERV_RECORD_KEY_FILE": str(keys),
        "ERV_CONTACT_LINK_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "ERV_METRICS_TOKEN": METRICS_TOKEN,  # Node.health() reads the detailed /healthz
        **env,
    }
    return Node("node", port, settings, folder / "node.log")


async def test_a_node_will_not_start_on_redis_without_aof(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis", appendonly=False)
    redis.start()
    try:
        node = node_on(redis, tmp_path)
        node.start()
        assert node.process is not None
        assert node.process.wait(timeout=30) == 2
        log = node.log()
        assert "append-only persistence (AOF) off" in log
        assert "ERV_REDIS_ALLOW_DATA_LOSS" in log and "Traceback" not in log
        # Nothing was written into that Redis.
        assert redis.command("DBSIZE").strip() == b":0"
    finally:
        redis.stop()


async def test_allowing_data_loss_starts_with_a_loud_warning(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis", appendonly=False)
    redis.start()
    node = node_on(redis, tmp_path, ERV_REDIS_ALLOW_DATA_LOSS="1")
    try:
        node.start()
        await node.ready()
        status, health = await node.health()
        assert status == 200 and health["backend"] == "redis" and health["redis"] == "ok"
        assert "persistence (AOF) is OFF" in node.log()
    finally:
        node.stop()
        redis.stop()
