"""server.ice: coturn REST credentials and the ICE server list a participant gets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from server.ice import ice_servers, turn_credential

SECRET = "north-side-turn-secret"
NOW = 1_700_000_000.75


def coturn_password(secret: str, username: str) -> str:
    """What coturn computes for `use-auth-secret`, written out independently."""
    mac = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), digestmod=hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def test_username_is_expiry_colon_participant() -> None:
    username, _ = turn_credential(SECRET, "a1b2c3", ttl=600, now=NOW)
    assert username == "1700000600:a1b2c3"  # whole seconds, now + ttl


def test_password_is_base64_hmac_sha1_of_the_username() -> None:
    username, password = turn_credential(SECRET, "a1b2c3", ttl=600, now=NOW)
    assert username == "1700000600:a1b2c3"
    assert password == coturn_password(SECRET, "1700000600:a1b2c3")
    assert len(base64.b64decode(password, validate=True)) == 20  # SHA-1 digest size


def test_known_vectors() -> None:
    """Fixed answers (from `openssl dgst -sha1 -hmac ... -binary | base64`), so a change of
    hash, key or encoding cannot slip through unnoticed."""
    assert turn_credential("secret", "pid", ttl=0, now=0) == (
        "0:pid", "jVdYdM0AOATzCKuqvRCCZoj7Eus="
    )
    assert turn_credential(SECRET, "pid9", ttl=600, now=NOW) == (
        "1700000600:pid9", "O0VxaKTlp3ktMGJOtRQUiMrBQDI="
    )


def test_credentials_differ_per_participant_secret_and_time() -> None:
    base = turn_credential(SECRET, "p1", ttl=600, now=NOW)
    assert turn_credential(SECRET, "p2", ttl=600, now=NOW)[1] != base[1]
    assert turn_credential(SECRET + "x", "p1", ttl=600, now=NOW)[1] != base[1]
    assert turn_credential(SECRET, "p1", ttl=601, now=NOW) != base


def test_expiry_defaults_to_the_clock() -> None:
    before = int(time.time()) + 300
    username, _ = turn_credential(SECRET, "p", ttl=300)
    after = int(time.time()) + 300
    expiry, participant = username.split(":")
    assert before <= int(expiry) <= after
    assert participant == "p"


def test_ice_servers_with_stun_and_turn() -> None:
    servers = ice_servers(
        ("stun:stun.example.org:3478",),
        ("turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"),
        SECRET, "pid9", ttl=600, now=NOW,
    )
    assert servers == [
        {"urls": ["stun:stun.example.org:3478"]},
        {
            "urls": ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"],
            "username": "1700000600:pid9",
            "credential": coturn_password(SECRET, "1700000600:pid9"),
        },
    ]
    assert json.loads(json.dumps(servers)) == servers  # plain JSON, lists not tuples


def test_ice_servers_stun_only() -> None:
    servers = ice_servers(("stun:a:3478", "stun:b:3478"), (), "", "p", ttl=600, now=NOW)
    assert servers == [{"urls": ["stun:a:3478", "stun:b:3478"]}]


def test_turn_without_a_secret_is_left_out() -> None:
    servers = ice_servers(("stun:a:3478",), ("turn:t:3478",), "", "p", ttl=600, now=NOW)
    assert servers == [{"urls": ["stun:a:3478"]}]
    assert all("credential" not in s for s in servers)


def test_turn_only() -> None:
    [server] = ice_servers((), ("turn:t:3478",), SECRET, "p", ttl=60, now=NOW)
    assert server["urls"] == ["turn:t:3478"]
    assert server["username"] == "1700000060:p"
    assert server["credential"] == coturn_password(SECRET, "1700000060:p")


def test_nothing_configured_is_an_empty_list() -> None:
    assert ice_servers((), (), "", "p", ttl=600) == []
    assert ice_servers((), (), SECRET, "p", ttl=600) == []
