"""Device cookies: a browser that signed in as a user before keeps being able to sign in.

OWASP's "Slow Down Online Guessing Attacks with Device Cookies": after a successful sign-in the
browser gets a cookie naming the user and a random device id, sealed (AES-GCM) with the case
record's master keys, so it can be neither read nor forged and every node can check it. A
sign-in carrying a valid one for the name typed is throttled by that device's own failures
only (server.throttle), so a stranger's guesses elsewhere never lock the real user out.

One cookie holds the entries of the last few users who signed in on that browser (control
room desks are shared). It grants nothing by itself: the password is still needed.
"""

from __future__ import annotations

import base64
import binascii
import secrets

from aiohttp import web

from server.accounts import normalize_username
from server.record.crypto import Keyring, RecordKeyError, WrappedKey

MAX_AGE = 180 * 24 * 3600
MAX_ENTRIES = 6
MAX_COOKIE_CHARS = 2048


def _context(username: str) -> str:
    return f"erv-device-cookie:{normalize_username(username)}"


class DeviceCookies:
    def __init__(self, keyring: Keyring, secure: bool) -> None:
        self.keyring = keyring
        self.secure = secure
        # Same rule as the sign-in cookie: __Host- needs Secure, Path=/ and no Domain.
        self.name = "__Host-erv-device" if secure else "erv_device"

    def _entries(self, request: web.Request) -> list[str]:
        raw = request.cookies.get(self.name, "")
        if not raw or len(raw) > MAX_COOKIE_CHARS:
            return []
        return [entry for entry in raw.split(".") if entry][:MAX_ENTRIES]

    def _open(self, entry: str, username: str) -> str:
        """The device id in `entry` if it was sealed by us for `username`, else ""."""
        try:
            key_id, _, blob = base64.urlsafe_b64decode(entry + "=" * (-len(entry) % 4)) \
                .partition(b"\x00")
            device = self.keyring.unwrap(WrappedKey(key_id.decode("ascii"), blob),
                                         _context(username))
        except (ValueError, binascii.Error, RecordKeyError):
            return ""
        return device.hex()

    def device_for(self, request: web.Request, username: str) -> str:
        """This browser's verified device id for `username`, or "" (an untrusted browser)."""
        for entry in self._entries(request):
            device = self._open(entry, username)
            if device:
                return device
        return ""

    def issue(self, request: web.Request, response: web.StreamResponse, username: str) -> None:
        """A fresh entry for `username`, first; other users' entries stay, the oldest drop."""
        wrapped = self.keyring.wrap(secrets.token_bytes(16), _context(username))
        fresh = base64.urlsafe_b64encode(
            wrapped.key_id.encode("ascii") + b"\x00" + wrapped.blob).decode().rstrip("=")
        others = [entry for entry in self._entries(request) if not self._open(entry, username)]
        response.set_cookie(
            self.name, ".".join([fresh, *others][:MAX_ENTRIES]),
            httponly=True, secure=self.secure, samesite="Strict", path="/", max_age=MAX_AGE,
        )
