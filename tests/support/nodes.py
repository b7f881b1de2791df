"""Several real `erv run` processes sharing one real Redis: a cluster for multinode tests."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from server.accounts import StaffRole
from server.config import Config
from server.record.crypto import load_or_create_keyring
from server.stores import open_stores
from tests.support.live import LINK, PASSWORD, TEST_SCRYPT_N, StaffClient, free_port
from tests.support.redis_server import RedisServer

ERV = Path(sys.executable).with_name("erv")
METRICS_TOKEN = "multinode metrics token"  # the nodes' ERV_METRICS_TOKEN


@dataclass
class Node:
    """One server process; `url`, `new_http` and `clients` let the test clients use it."""

    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    clients: list[aiohttp.ClientSession] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(ERV), "run"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    async def ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.process is not None and self.process.poll() is None, self.log()
                try:
                    async with http.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} did not become healthy:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: the node dies mid-call with no chance to tidy up."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def new_http(self) -> aiohttp.ClientSession:
        http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.clients.append(http)
        return http

    async def health(self) -> tuple[int, dict[str, Any]]:
        """The detailed /healthz (the node's store, Redis, sockets): monitoring's token."""
        async with aiohttp.ClientSession() as http, http.get(
                f"{self.url}/healthz", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
        ) as r:
            return r.status, dict(await r.json())

    async def staff_client(self, username: str) -> StaffClient:
        client = StaffClient(self, self.new_http())  # type: ignore[arg-type]
        await client.sign_in(username, PASSWORD)
        return client

    async def latest_token(self, staff: StaffClient) -> str:
        """The newest link in this node's console outbox (the staff-only outbox page)."""
        async with staff.http.get(f"{self.url}/outbox") as response:
            page = await response.text()
            assert response.status == 200, page
        match = LINK.search(page)
        assert match, "no link in the outbox"
        return match.group(1)

    async def redeem(self, token: str) -> str:
        http = self.new_http()
        async with http.post(f"{self.url}/j/{token}",
                             headers={"Accept": "application/json"}) as response:
            body = await response.json()
            assert response.status == 200, body
            return str(body["credential"])


@dataclass
class Cluster:
    redis: RedisServer
    nodes: list[Node]
    config: Config  # what the nodes share, for setting up accounts from the test

    async def add_staff(self, username: str, role: StaffRole) -> None:
        stores = await open_stores(self.config)
        try:
            await stores.accounts.add(username, username.title(), role, PASSWORD)
        finally:
            await stores.close()

    async def close(self) -> None:
        for node in self.nodes:
            for client in node.clients:
                await client.close()
            node.stop()
        self.redis.stop()


async def start_cluster(folder: Path, count: int, **env: str) -> Cluster:
    """A redis-server of our own and `count` nodes using it, all healthy."""
    redis = RedisServer(folder / "redis")
    redis.start()
    keys_file = folder / "record-keys.json"
    load_or_create_keyring(keys_file)
    shared = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ERV_")},
        "ERV_TLS": "0",
        "ERV_SECURE_COOKIES": "0",
        "ERV_HOST": "127.0.0.1",
        "ERV_REDIS_URL": redis.url,
        "ERV_RECORD_KEY_FILE": str(keys_file),
        "ERV_CONTACT_LINK_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "ERV_LOG_LEVEL": "INFO",
        "ERV_SCRYPT_N": str(TEST_SCRYPT_N),
        "ERV_METRICS_TOKEN": METRICS_TOKEN,
        **env,
    }
    nodes = []
    for index in range(1, count + 1):
        port = free_port()
        data = folder / f"node{index}"
        data.mkdir(parents=True, exist_ok=True)
        node_env = {**shared, "ERV_PORT": str(port), "ERV_PUBLIC_URL": f"http://127.0.0.1:{port}",
                    "ERV_DATA_DIR": str(data), "ERV_NODE_NAME": f"node{index}"}
        nodes.append(Node(f"node{index}", port, node_env, folder / f"node{index}.log"))
    for node in nodes:
        node.start()
    cluster = Cluster(redis, nodes, replace(
        Config(), redis_url=redis.url, data_dir=folder / "node1", record_key_file=keys_file,
        scrypt_n=TEST_SCRYPT_N,
    ))
    try:
        await asyncio.gather(*(node.ready() for node in nodes))
    except BaseException:
        await cluster.close()
        raise
    return cluster
