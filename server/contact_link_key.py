"""The key that links sessions from the same number: its own secret, apart from the record's.

It comes from ERV_CONTACT_LINK_KEY (base64, 32 bytes) or a key file in the data folder,
generated 0600 on first start. Losing it only breaks the link to earlier contacts; whoever
has it and a number can test whether that number has called, so it is kept off backups.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
from pathlib import Path

from server.contacts import PhoneLinkKey

log = logging.getLogger("erv.contacts")

KEY_BYTES = 32


def load_or_create_link_key(path: Path) -> PhoneLinkKey:
    raw = os.environ.get("ERV_CONTACT_LINK_KEY", "").strip()
    if raw:
        return PhoneLinkKey(base64.b64decode(raw))
    if path.exists():
        return PhoneLinkKey(base64.b64decode(path.read_text(encoding="ascii").strip()))
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(base64.b64encode(key).decode("ascii") + "\n")
    log.warning("generated a contact-link key at %s; keep it off this disk's backups", path)
    return PhoneLinkKey(key)
