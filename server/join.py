"""The caller's link, `/j/<token>`: look (GET) never redeems; the explicit tap (POST) does.

Every refusal is a plain, calm page (or JSON for scripts): no codes, no stack traces, nothing
that would alarm someone reading over the caller's shoulder. These pages set no cookies.
"""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from server import keys
from server.auth import csrf_exempt
from server.invites import LinkProblem, LinkRefused

STATUS_BY_PROBLEM = {
    LinkProblem.UNKNOWN: 404,
    LinkProblem.EXPIRED: 410,
    LinkProblem.REVOKED: 410,
    LinkProblem.USED: 410,
    LinkProblem.ENDED: 410,
}


def _wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _refusal(request: web.Request, exc: LinkRefused) -> web.StreamResponse:
    status = STATUS_BY_PROBLEM[exc.problem]
    if _wants_json(request):
        return web.json_response(
            {"error": exc.problem.value, "message": exc.victim_message}, status=status
        )
    return aiohttp_jinja2.render_template(
        "join_message.html", request, {"message": exc.victim_message}, status=status
    )


async def open_link(request: web.Request) -> web.StreamResponse:
    token = request.match_info["token"]
    try:
        invite = await request.app[keys.ROOM].open_link(token)
    except LinkRefused as exc:
        return _refusal(request, exc)
    if _wants_json(request):
        return web.json_response({"state": "ready", "expires_at": invite.expires_at})
    return aiohttp_jinja2.render_template("join.html", request, {"token": token})


@csrf_exempt  # the unguessable token in the URL is the credential; no cookie is involved
async def redeem_link(request: web.Request) -> web.StreamResponse:
    token = request.match_info["token"]
    try:
        credential = await request.app[keys.ROOM].redeem_link(token)
    except LinkRefused as exc:
        return _refusal(request, exc)
    body = {
        "credential": credential.token,
        "session": credential.session_id,
        "expires_at": credential.expires_at,
    }
    if _wants_json(request):
        return web.json_response(body)
    return aiohttp_jinja2.render_template("joined.html", request, body)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/j/{token}", open_link, name="join")
    app.router.add_post("/j/{token}", redeem_link)
