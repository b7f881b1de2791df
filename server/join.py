"""The caller's link, `/j/<token>`: look (GET) never redeems; the explicit tap (POST) does.

Every refusal is a plain, calm page (or JSON for scripts): no codes, no stack traces, nothing
that would alarm someone reading over the caller's shoulder. These pages set no cookies.

The pages are rendered in the caller's language (the session's, or `?lang=` from the switch)
straight from the i18n catalogues, so the first screen is readable before any script runs and
works without JavaScript; the page script only takes over from there.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from server import keys
from server.auth import csrf_exempt
from server.form_body import read_form
from server.invites import LinkProblem, LinkRefused
from server.sessions import LANGUAGES
from signaling.protocol import CANNED_REPLIES

log = logging.getLogger("erv.http")

STATUS_BY_PROBLEM = {
    LinkProblem.UNKNOWN: 404,
    LinkProblem.EXPIRED: 410,
    LinkProblem.REVOKED: 410,
    LinkProblem.USED: 410,
    LinkProblem.ENDED: 410,
}

CATALOGUE_DIR = Path(__file__).resolve().parent.parent / "web" / "static" / "i18n"
# Only these keys are embedded in the caller's page (the catalogues are shared by all pages).
CALLER_PREFIXES = ("victim.", "common.", "canned.")
CONSENT_KINDS = ("camera", "microphone", "location")

_catalogues: dict[str, tuple[int, dict[str, str]]] = {}


def catalogue(lang: str) -> dict[str, str]:
    """The flat catalogue for `lang`, re-read when the file changes; the last good copy (or
    an empty one) if it cannot be read, so a bad edit never breaks the caller's page."""
    path = CATALOGUE_DIR / f"{lang}.json"
    try:
        mtime = path.stat().st_mtime_ns
        cached = _catalogues.get(lang)
        if cached and cached[0] == mtime:
            return cached[1]
        strings = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(strings, dict):
            raise ValueError("not an object")
        _catalogues[lang] = (mtime, {str(k): str(v) for k, v in strings.items()})
    except (OSError, ValueError) as exc:
        log.warning("catalogue %s unreadable: %s", lang, exc)
        if lang not in _catalogues:
            return {}
    return _catalogues[lang][1]


def _language(request: web.Request, fallback: str = "en") -> str:
    """`?lang=` (the switch, working without JavaScript) wins over the session's language."""
    chosen = request.query.get("lang", "")
    if chosen in LANGUAGES:
        return chosen
    return fallback if fallback in LANGUAGES else "en"


def _page(request: web.Request, lang: str, page: str, **values: Any) -> dict[str, Any]:
    """What every caller page template gets: config, language, strings, which page it is."""
    config = request.app[keys.CONFIG]
    strings = catalogue(lang)
    english = catalogue("en") if lang != "en" else strings

    def t(key: str) -> str:
        return strings.get(key) or english.get(key) or key

    embedded = {k: v for k, v in {**english, **strings}.items() if k.startswith(CALLER_PREFIXES)}
    return {
        "caller_title": config.caller_title,
        "quick_exit_url": config.quick_exit_url,
        "lang": lang,
        "t": t,
        "strings_json": json.dumps(embedded, ensure_ascii=False, separators=(",", ":")),
        "page": page,
        "canned": CANNED_REPLIES,
        **values,
    }


def _wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _refusal(request: web.Request, exc: LinkRefused, fallback: str = "en") -> web.StreamResponse:
    """`fallback`: the language the no-script form posted, used when the URL names none."""
    status = STATUS_BY_PROBLEM[exc.problem]
    if _wants_json(request):
        return web.json_response(
            {"error": exc.problem.value, "message": exc.victim_message}, status=status
        )
    lang = _language(request, fallback)
    context = _page(request, lang, "message", problem=exc.problem.value)
    key = f"victim.link.{exc.problem.value}"
    # English keeps the server's own wording; other languages take the catalogue's.
    context["message"] = exc.victim_message if lang == "en" or key not in catalogue(lang) \
        else context["t"](key)
    return aiohttp_jinja2.render_template("join_message.html", request, context, status=status)


async def _session_language(request: web.Request, session_id: str) -> str:
    session = await request.app[keys.ROOM].sessions.get(session_id)
    return session.language if session else "en"


async def open_link(request: web.Request) -> web.StreamResponse:
    token = request.match_info["token"]
    try:
        invite = await request.app[keys.ROOM].open_link(token)
    except LinkRefused as exc:
        return _refusal(request, exc)
    if _wants_json(request):
        return web.json_response({"state": "ready", "expires_at": invite.expires_at})
    session = await request.app[keys.ROOM].sessions.get(invite.session_id)
    lang = _language(request, session.language if session else "en")
    return aiohttp_jinja2.render_template("join.html", request, _page(
        request, lang, "join", token=token, phone_line=session.phone_line if session else True,
    ))


@csrf_exempt  # the unguessable token in the URL is the credential; no cookie is involved
async def redeem_link(request: web.Request) -> web.StreamResponse:
    token = request.match_info["token"]
    wants_json = _wants_json(request)
    # The no-script form posts the caller's choices; read them before the link is used up.
    form = {} if wants_json else dict(await read_form(request))
    try:
        credential = await request.app[keys.ROOM].redeem_link(token)
    except LinkRefused as exc:
        return _refusal(request, exc, str(form.get("lang", "")))
    body = {
        "credential": credential.token,
        "session": credential.session_id,
        "expires_at": credential.expires_at,
    }
    if wants_json:
        return web.json_response(body)
    chosen = str(form.get("lang", ""))
    lang = chosen if chosen in LANGUAGES else \
        await _session_language(request, credential.session_id)
    # Without the form (a bare POST) nothing was declined; with it, an unticked box is a no.
    consent = {kind: "consent" not in form or kind in form for kind in CONSENT_KINDS}
    return aiohttp_jinja2.render_template(
        "joined.html", request, _page(request, lang, "joined", consent=consent, **body)
    )


async def call_page(request: web.Request) -> web.StreamResponse:
    """Where the caller's tab sits once joined: the page script swaps the link's address for
    this one, so a reload (or a phone restoring a discarded tab) rejoins with the credential
    the tab holds instead of meeting "already used", and history keeps no token."""
    lang = _language(request)
    return aiohttp_jinja2.render_template(
        "joined.html", request, _page(request, lang, "resume")
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/j/", call_page, name="caller_call")
    app.router.add_get("/j/{token}", open_link, name="join")
    app.router.add_post("/j/{token}", redeem_link)
