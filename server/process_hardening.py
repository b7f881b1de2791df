"""Keep the master keys this process holds out of core files, other processes and others' eyes.

At start `erv run` turns core dumps off (RLIMIT_CORE 0, soft and hard) and marks itself not
dumpable (prctl PR_SET_DUMPABLE 0): no core file, and no process of the same user can ptrace
it or read its memory or environment through /proc. The data folder is made 0700, so the
database, the key files and evidence are the service user's alone whatever the umask.
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import sys
from pathlib import Path

log = logging.getLogger("erv")

PR_SET_DUMPABLE = 4


def disable_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        log.warning("could not mark the process not dumpable: %s", os.strerror(errno))


def private_data_dir(path: Path) -> None:
    """Create the data folder 0700, or tighten an existing one to 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
