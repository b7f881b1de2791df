"""What the control room is told about the caller's media, from what actually arrives.

Three sources, each the only one that can know its part:

- the signalling hub knows whether the caller's page is connected, away (its socket dropped,
  it may resume) or gone;
- the caller's page knows what its phone let it capture (camera, microphone, location) and
  which rung of the fallback ladder it is on (full video, reduced video, still pictures, chat
  and location only), and why;
- the handler's page knows what arrives: frames decoding, audio packets arriving.

The caller's and the handler's reports are kept on the session as `facts` (a flat dict, so
either store merges one field at a time) and `caller_summary` folds the three into the one
word the sessions list and the call view show. Nothing here is free text from a client: every
value is checked against these lists.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

# The fallback ladder, best first (docs/decisions.md, "A call degrades by rungs").
RUNGS = ("full", "reduced", "stills", "chat")
# Why the caller's page is below full video. Sent by the caller's page with the rung.
RUNG_REASONS = (
    "weak_network",  # the bandwidth estimate dropped: reduced video
    "no_webrtc",  # the browser has no RTCPeerConnection (in-app browsers, old phones)
    "no_turn",  # no media path, and no TURN relay is configured
    "turn_unreachable",  # no media path, and the caller's network blocks the TURN relay too
    "no_path",  # no media path although a relay was reached
    "camera_unavailable",  # the camera is refused, busy, missing or off: nothing to show
    "recovered",  # back up the ladder
)
CAPTURE_KINDS = ("camera", "microphone", "location")
CAPTURE_STATES = (
    "ok",  # working
    "off",  # the caller turned it off, or did not consent
    "not_asked",  # phone-line mode: the microphone is the phone call's
    "denied",  # NotAllowedError: the phone or the caller refused permission
    "busy",  # NotReadableError: another app (the phone call) holds it
    "unavailable",  # NotFoundError / OverconstrainedError after the fallback, or no API
    "ended",  # the phone ended the track (an interruption); the page is re-acquiring it
    "muted",  # the phone muted the track (a call, the app in the background)
)
# What the handler's page sees arriving from the caller.
MEDIA_STATES = (
    "waiting",  # connected, nothing decoded yet
    "flowing",  # frames decoding (and audio arriving, when the caller sends it)
    "frozen",  # no new frame for a while
    "no_sound",  # frames fine, but the caller's audio stopped arriving
    "reconnecting",  # the peer connection lost its path and is being restarted
    "no_video",  # the caller sends no video (stills or chat rung, or camera off)
)
# One word per session for the lists and the call view, in order of precedence.
SUMMARY_STATES = (
    "ended", "not_joined", "left", "reconnecting", "stills", "chat_only", "frozen",
    "no_sound", "waiting", "flowing", "joined",
)

# What the caller's page reports; a fresh page (a reload, a new link) starts without them.
# (The handler's `media` report is the handler's page's to change: it sees the new page.)
CALLER_FACTS = ("rung", "rung_reason", "capture_camera", "capture_microphone",
                "capture_location")


def capture_facts(states: Mapping[str, str]) -> dict[str, str]:
    return {f"capture_{kind}": states[kind] for kind in CAPTURE_KINDS if kind in states}


def caller_summary(
    facts: Mapping[str, Any], roster: Iterable[Mapping[str, Any]], *, ended: bool,
    joined_before: bool, now: float | None = None,
) -> dict[str, Any]:
    """The caller's state as staff should read it.

    `roster` is the hub's view of the session (participant objects: role, state);
    `joined_before` whether the caller's page ever joined (so absence means "left").
    """
    now = time.time() if now is None else now
    people = list(roster)
    victim = next((p for p in people if p.get("role") == "victim"), None)
    handler_watching = any(
        p.get("role") == "handler" and p.get("state") == "present" for p in people
    )
    rung = facts.get("rung")
    media = facts.get("media") if handler_watching else None
    since = facts.get("media_since") if media else None
    if ended:
        state = "ended"
    elif victim is None:
        state = "left" if joined_before else "not_joined"
    elif victim.get("state") == "away" or media == "reconnecting":
        state = "reconnecting"
    elif rung == "stills":
        state = "stills"
    elif rung == "chat":
        state = "chat_only"
    elif media in ("frozen", "no_sound", "waiting", "flowing"):
        state = str(media)
    else:
        state = "joined"  # in the call; no handler is watching to say what arrives
    return {
        "state": state,
        "since": since,
        "seconds": round(now - since, 1) if isinstance(since, int | float) else None,
        "media": media,
        "rung": rung,
        "rung_reason": facts.get("rung_reason"),
        "capture": {kind: facts.get(f"capture_{kind}") for kind in CAPTURE_KINDS},
        "present": victim is not None and victim.get("state") == "present",
    }
