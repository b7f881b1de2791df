"""`erv run` with the per-socket frame rate limit raised, for closed-loop relay runs.

    python -m bench.erv_launch

The protocol allows 20 frames per second per socket (burst 60), so a closed loop that bounces
as fast as the server answers would be refused within a second. This starts the service
exactly as `erv run` does (same config from the environment, same app, same checks) after
raising that limit; the token bucket is still consulted on every frame, it just never runs
dry. Nothing else is changed.
"""

from __future__ import annotations

import os
import sys

import signaling.endpoint
from server.cli import main

signaling.endpoint.RATE_PER_SECOND = float(os.environ.get("BENCH_RATE_PER_SECOND", "1e9"))
signaling.endpoint.RATE_BURST = float(os.environ.get("BENCH_RATE_BURST", "1e9"))

if __name__ == "__main__":
    sys.exit(main(["run"]))
