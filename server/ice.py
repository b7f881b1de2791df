"""ICE servers for `welcome`: STUN as configured, TURN with coturn REST credentials.

coturn's `use-auth-secret` scheme: username is "<expiry unix time>:<participant id>", password
is base64(HMAC-SHA1(shared secret, username)). coturn checks the expiry itself, so a
credential leaked from one participant is useless to others and soon to everyone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any


def turn_credential(
    secret: str, participant: str, ttl: int, now: float | None = None
) -> tuple[str, str]:
    expiry = int((time.time() if now is None else now) + ttl)
    username = f"{expiry}:{participant}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def ice_servers(
    stun_urls: tuple[str, ...],
    turn_urls: tuple[str, ...],
    turn_secret: str,
    participant: str,
    ttl: int,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """The RTCIceServer list one participant gets."""
    servers: list[dict[str, Any]] = []
    if stun_urls:
        servers.append({"urls": list(stun_urls)})
    if turn_urls and turn_secret:
        username, credential = turn_credential(turn_secret, participant, ttl, now)
        servers.append({"urls": list(turn_urls), "username": username, "credential": credential})
    return servers
