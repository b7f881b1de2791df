"""Closes the sockets of an account cut off by another process (`erv set-password`,
`erv disable-user`).

The command line changes the store, not this process: every node watches the accounts'
generations (raised by a password change or disable) and closes that staff member's sockets
when one moves (`bye signed_out`). The cookie sign-ins are void already (server.auth checks
the generation); with Redis the hub closes the sockets on whichever node holds them.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

from redis.exceptions import RedisError

from server.accounts import StaffAccountStore
from server.redis_link import StoreUnavailable
from signaling.hub import Hub

log = logging.getLogger("erv.accounts")


async def watch_accounts(accounts: StaffAccountStore, hub: Hub, interval: float) -> None:
    known: dict[int, int] | None = None
    while True:
        try:
            seen = await accounts.generations()
            if known is not None:
                for staff_id, generation in seen.items():
                    if generation != known.get(staff_id, 0):
                        closed = await hub.kick_staff(staff_id, "signed_out")
                        log.info("staff %d was cut off; %d sockets closed", staff_id, closed)
            known = seen
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError, sqlite3.Error, StoreUnavailable) as exc:
            log.warning("could not check accounts for cut-offs (%s)", type(exc).__name__)
        await asyncio.sleep(interval)
