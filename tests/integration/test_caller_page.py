"""The caller's page as served by server/join.py, over real HTTP without a browser: the first
screen in the caller's language, neutral and CSP-safe, the no-script join, the bare /j/ page,
Welsh refusals, and the static files the page loads."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.accounts import StaffRole
from server.invites import VICTIM_MESSAGES, LinkProblem
from tests.support.live import LiveServer, SignalClient, StaffClient, start_server
from tests.support.web_checks import assert_calm, assert_victim_page_headers

I18N = Path(__file__).resolve().parents[2] / "web" / "static" / "i18n"
EN: dict[str, str] = json.loads((I18N / "en.json").read_text(encoding="utf-8"))
CY: dict[str, str] = json.loads((I18N / "cy.json").read_text(encoding="utf-8"))
CALLER_PREFIXES = ("victim.", "common.", "canned.")

TITLE = "Weather"
QUICK_EXIT = "https://weather.example/today"
ALARMING = ("police", "999", "abuse", "domestic")
# Strings of the first screen that differ between the languages.
FIRST_SCREEN_KEYS = ("victim.start.heading", "victim.start.intro", "victim.consent.legend",
                     "common.quick_exit", "victim.join")
IMPORT = re.compile(r"""^\s*import\b[^"';]*?["'](\.{1,2}/[^"']+)["']""", re.MULTILINE)
JS_TYPES = ("text/javascript",)


# -- reading the page --------------------------------------------------------------------------


class Page(HTMLParser):
    """The parts of a served page the checks need (entities already decoded)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.scripts: list[tuple[dict[str, str], str]] = []
        self.title = ""
        self._in: list[str] = []

    @classmethod
    def parse(cls, html: str) -> Page:
        page = cls()
        page.feed(html)
        page.close()
        return page

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        self.tags.append((tag, values))
        if tag in ("script", "title", "style"):
            self._in.append(tag)
            if tag == "script":
                self.scripts.append((values, ""))

    def handle_endtag(self, tag: str) -> None:
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data: str) -> None:
        inside = self._in[-1] if self._in else ""
        if inside == "script":
            attrs, body = self.scripts[-1]
            self.scripts[-1] = (attrs, body + data)
        elif inside == "title":
            self.title += data
        elif inside != "style":
            self.text.append(data)

    @property
    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())

    def first(self, tag: str, **attrs: str) -> dict[str, str]:
        for name, values in self.tags:
            if name == tag and all(values.get(k.replace("_", "-")) == v for k, v in attrs.items()):
                return values
        raise AssertionError(f"no <{tag} {attrs}>")

    def where(self, needle: str) -> set[tuple[str, str]]:
        """Every (tag, attribute) whose value contains `needle`."""
        return {(tag, name) for tag, values in self.tags for name, value in values.items()
                if needle in value}


@dataclass
class Answer:
    status: int
    html: str
    page: Page


async def fetch(server: LiveServer, method: str, path: str, *,
                data: dict[str, str] | None = None, http: aiohttp.ClientSession | None = None,
                ) -> Answer:
    """A request as a phone browser sends it (HTML, no cookies unless `http` has some); every
    answer must carry the caller-page headers and leave no cookie behind."""
    client = http or server.new_http()
    cookies_before = len(client.cookie_jar)
    async with client.request(method, f"{server.url}{path}", data=data,
                              headers={"Accept": "text/html"}, allow_redirects=False) as response:
        assert_victim_page_headers(response)
        assert response.content_type == "text/html", response.content_type
        html = await response.text()
        status = response.status
    assert len(client.cookie_jar) == cookies_before
    return Answer(status, html, Page.parse(html))


def form_of(page: Page) -> dict[str, str]:
    """What the no-script join form posts as it stands (ticked boxes only)."""
    posted = {}
    for tag, attrs in page.tags:
        if tag != "input" or "name" not in attrs:
            continue
        if attrs.get("type") == "checkbox" and "checked" not in attrs:
            continue
        posted[attrs["name"]] = attrs.get("value", "")
    return posted


def assert_first_screen_in(page: Page, lang: str) -> None:
    """The page is in `lang` before any script runs: <html lang>, the visible strings, the
    language the form posts, the switch, and the strings handed to the script."""
    strings, other = (CY, EN) if lang == "cy" else (EN, CY)
    assert page.first("html")["lang"] == lang
    assert page.first("body")["data-lang"] == lang
    for key in FIRST_SCREEN_KEYS:
        assert strings[key] in page.visible, key
    for key in ("victim.start.heading", "victim.start.intro", "common.quick_exit"):
        assert other[key] not in page.visible, key
    assert page.first("input", name="lang")["value"] == lang
    assert page.first("a", data_set_lang=lang).get("aria-current") == "true"
    assert "aria-current" not in page.first("a", data_set_lang="cy" if lang == "en" else "en")
    embedded = json.loads(page.first("div", id="strings")["data-json"])
    assert embedded, "no strings for the page script"
    assert all(key.startswith(CALLER_PREFIXES) for key in embedded), sorted(embedded)
    for key in FIRST_SCREEN_KEYS:
        assert embedded[key] == strings[key]


def assert_neutral(answer: Answer, *secrets: str) -> None:
    """Nothing on the page says what this is: no alarming word anywhere in the HTML (the
    random token, which could hold '999' by chance, is taken out first)."""
    html = answer.html
    for secret in secrets:
        html = html.replace(secret, "")
    lowered = html.lower()
    for word in ALARMING:
        assert word not in lowered, word
    assert answer.page.title == TITLE


def assert_csp_safe(page: Page) -> None:
    """No inline script or style, no event-handler attributes, and every script and
    stylesheet comes from this origin's /static/."""
    assert page.scripts, "the page loads no script"
    for attrs, body in page.scripts:
        assert attrs.get("src"), "inline <script>"
        assert body.strip() == "", f"inline script body: {body[:80]!r}"
    for tag, attrs in page.tags:
        assert tag != "style", "inline <style>"
        assert "style" not in attrs, (tag, attrs)
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        url = attrs.get("src") if tag == "script" else attrs.get("href") if tag == "link" \
            else None
        if url is None:
            continue
        if tag == "link" and attrs.get("rel") == "icon":
            assert url == "data:,", url  # no favicon fetch at all
        else:
            assert url.startswith("/static/") and "//" not in url, (tag, url)


def assets(page: Page) -> list[str]:
    return [attrs["src"] for attrs, _ in page.scripts] + [
        attrs["href"] for tag, attrs in page.tags
        if tag == "link" and attrs.get("href", "").startswith("/static/")
    ]


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
async def server(backend: dict[str, Any], tmp_path: Path) -> AsyncIterator[LiveServer]:
    live = await start_server(tmp_path, caller_title=TITLE, quick_exit_url=QUICK_EXIT,
                              **backend)
    try:
        yield live
    finally:
        await live.stop()


async def new_session(server: LiveServer, handler: StaffClient, language: str,
                      ref: str = "CAD-1", phone_line: bool = False) -> tuple[str, str]:
    """A session created through the API in `language` (by default with sound on the page;
    the console's own default is the phone line); returns (session id, link token)."""
    _, body = await handler.api("POST", "/api/sessions",
                                {"incident_ref": ref, "phone": "07911 123456",
                                 "language": language, "phone_line": phone_line}, expect=201)
    assert body["session"]["language"] == language
    assert body["session"]["phone_line"] is phone_line
    return str(body["session"]["id"]), server.latest_token()


# -- the first screen ----------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["cy", "en"])
async def test_the_first_screen_is_in_the_sessions_language(
    server: LiveServer, language: str,
) -> None:
    """GET /j/<token> renders the whole shell in the language the handler chose, with no
    script needed to read it."""
    handler = await server.staff_client("hannah", StaffRole.HANDLER)
    _, token = await new_session(server, handler, language)
    answer = await fetch(server, "GET", f"/j/{token}")
    assert answer.status == 200
    assert_first_screen_in(answer.page, language)
    assert answer.page.first("body")["data-page"] == "join"


@pytest.mark.parametrize(("session_lang", "query", "shown"), [
    ("cy", "en", "en"),
    ("en", "cy", "cy"),
    ("cy", "cy", "cy"),
    ("cy", "fr", "cy"),  # unknown: the session's language
    ("en", "fr", "en"),
    ("cy", "CY", "cy"),  # codes are exact
    ("cy", "", "cy"),
    ("en", "../en", "en"),  # never a path
    ("cy", "en%00", "cy"),
])
async def test_the_lang_switch_overrides_and_unknown_codes_fall_back(
    server: LiveServer, session_lang: str, query: str, shown: str,
) -> None:
    """?lang=en|cy (the switch, working without script) wins over the session's language;
    anything else is ignored and the page still renders, in the session's language."""
    handler = await server.staff_client("hannah", StaffRole.HANDLER)
    _, token = await new_session(server, handler, session_lang)
    answer = await fetch(server, "GET", f"/j/{token}?lang={query}")
    assert answer.status == 200
    assert_first_screen_in(answer.page, shown)
    assert_calm(answer.html)


@pytest.mark.parametrize("language", ["en", "cy"])
async def test_the_first_screen_is_neutral_with_the_configured_title_and_exit(
    server: LiveServer, language: str,
) -> None:
    """The tab title is the configured neutral caller_title; no police or abuse wording is
    anywhere in the HTML; the quick exit link and data attribute carry the configured URL."""
    handler = await server.staff_client("hannah", StaffRole.HANDLER)
    _, token = await new_session(server, handler, "en")
    answer = await fetch(server, "GET", f"/j/{token}?lang={language}")
    assert answer.status == 200
    assert_neutral(answer, token)
    exit_link = answer.page.first("a", data_testid="quick-exit")
    assert exit_link["href"] == QUICK_EXIT
    assert "noreferrer" in exit_link["rel"].split()
    assert answer.page.first("body")["data-quick-exit"] == QUICK_EXIT
    assert (CY if language == "cy" else EN)["common.quick_exit"] in answer.page.visible


async def test_the_shell_holds_no_credential_and_the_token_only_where_needed(
    server: LiveServer,
) -> None:
    """Looking at the link hands out nothing: no credential on the page or in the database,
    and the token appears only in the form's action and the body's data-token, never in a
    script or stylesheet URL, a link, or the text."""
    handler = await server.staff_client("hannah", StaffRole.HANDLER)
    session_id, token = await new_session(server, handler, "cy", ref="CAD-4471")
    answer = await fetch(server, "GET", f"/j/{token}")
    page = answer.page
    body = page.first("body")
    assert body["data-token"] == token
    assert page.first("form", data_testid="join-form")["action"] == f"/j/{token}"
    assert page.first("form", data_testid="join-form")["method"] == "post"
    assert page.where(token) == {("body", "data-token"), ("form", "action")}
    assert answer.html.count(token) == 2
    assert token not in page.visible
    for url in assets(page):
        assert token not in url
    for name in ("data-credential", "data-session", "data-expires", "data-consent"):
        assert name not in body
    for private in (session_id, "CAD-4471", "07911", "123456", "Hannah"):
        assert private not in answer.html, private
    assert await server.credential_count() == 0


@pytest.mark.parametrize("language", ["en", "cy"])
async def test_the_shell_is_csp_safe_and_loads_only_same_origin_files(
    server: LiveServer, language: str,
) -> None:
    """No inline script bodies, style attributes, <style> or on* handlers (the CSP forbids
    them), and every script and stylesheet is a /static/ file of this server."""
    handler = await server.staff_client("hannah", StaffRole.HANDLER)
    _, token = await new_session(server, handler, language)
    page = (await fetch(server, "GET", f"/j/{token}")).page
    assert_csp_safe(page)
    assert "/static/js/quickexit.js" in assets(page)  # the exit works even if the rest fails
    assert "/static/caller.css" in assets(page)


async def test_the_static_files_the_page_loads_are_served_with_their_types(
    server: LiveServer,
) -> None:
    """Every script, preloaded module, module import and stylesheet the page needs answers 200
    with a JavaScript or CSS type (browsers refuse modules and styles otherwise, nosniff
    being set), and so do the catalogues the page script fetches, which stay neutral."""
    handler = await server.staff_client("hannah", StaffRole.HANDLER)
    _, token = await new_session(server, handler, "cy")
    page = (await fetch(server, "GET", f"/j/{token}")).page
    http = server.new_http()
    pending, seen = list(assets(page)), set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        async with http.get(f"{server.url}{path}") as response:
            assert response.status == 200, path
            assert response.headers.get("X-Content-Type-Options") == "nosniff"
            assert "Set-Cookie" not in response.headers
            body = await response.text()
            if path.endswith(".js"):
                assert response.content_type in JS_TYPES, (path, response.content_type)
                base = path.rsplit("/", 1)[0]
                for relative in IMPORT.findall(body):
                    assert relative.startswith("./"), (path, relative)
                    pending.append(f"{base}/{relative[2:]}")
            else:
                assert path.endswith(".css"), path
                assert response.content_type == "text/css", (path, response.content_type)
    assert {"/static/js/victim.js", "/static/js/i18n.js", "/static/caller.css"} <= seen
    for lang in ("en", "cy"):
        async with http.get(f"{server.url}/static/i18n/{lang}.json") as response:
            assert response.status == 200
            assert response.content_type == "application/json"
            text = (await response.text()).lower()
        for word in ALARMING:
            assert word not in text, (lang, word)


# -- joining without script ----------------------------------------------------------------------


async def test_the_no_script_form_joins_in_the_chosen_language_once(server: LiveServer) -> None:
    """Posting the first screen's form (one box unticked, language switched to Welsh) answers
    200 with the joined page in Welsh, holding a working credential and the consent given;
    the link is then used up and a second post is refused."""
    handler = await server.staff_client("hannah", StaffRole.HANDLER)
    session_id, token = await new_session(server, handler, "en")
    first = await fetch(server, "GET", f"/j/{token}?lang=cy")
    form = form_of(first.page)
    assert form == {"consent": "1", "lang": "cy", "camera": "1", "microphone": "1",
                    "location": "1"}
    del form["microphone"]  # the caller unticks the microphone

    joined = await fetch(server, "POST", first.page.first("form")["action"], data=form)
    assert joined.status == 200
    page = joined.page
    body = page.first("body")
    assert body["data-page"] == "joined"
    assert page.first("html")["lang"] == "cy"
    assert CY["victim.joined.heading"] in page.visible
    assert CY["victim.joined.body"] in page.visible
    assert EN["victim.joined.body"] not in page.visible
    assert body["data-session"] == session_id
    assert set(body["data-consent"].split()) == {"camera", "location"}
    assert float(body["data-expires"]) > 0
    assert page.title == TITLE
    assert_csp_safe(page)
    for url in assets(page):
        assert token not in url and body["data-credential"] not in url

    # The credential on the page is the real one: it joins this session as the caller.
    caller = await SignalClient.connect(server, server.new_http())
    welcome = await caller.hello(credential=body["data-credential"])
    assert welcome["session"] == session_id and welcome["role"] == "victim"
    await caller.close()

    again = await fetch(server, "POST", f"/j/{token}", data=form)
    assert again.status == 410
    assert "data-credential" not in again.page.first("body")
    assert again.page.first("body")["data-problem"] == "used"
    assert await server.credential_count(session_id) == 1


async def test_on_the_phone_line_the_first_screen_does_not_ask_for_the_microphone(
    server: LiveServer,
) -> None:
    """A caller still on the 999 call: the page offers camera and location, says the sound
    stays on the phone, and its no-script form consents to no microphone."""
    handler = await server.staff_client("hannah", StaffRole.HANDLER)
    session_id, token = await new_session(server, handler, "en", phone_line=True)
    first = await fetch(server, "GET", f"/j/{token}")
    assert first.page.first("body")["data-phone-line"] == "1"
    assert form_of(first.page) == {"consent": "1", "lang": "en", "camera": "1", "location": "1"}
    assert EN["victim.consent.phone_line"] in first.page.visible
    microphone = first.page.tags.index(("input", first.page.first("input", name="microphone")))
    assert first.page.tags[microphone - 1] == ("label", {"class": "check", "hidden": ""})
    joined = await fetch(server, "POST", f"/j/{token}", data=form_of(first.page))
    assert set(joined.page.first("body")["data-consent"].split()) == {"camera", "location"}
    # Its welcome says so too, for the page script.
    caller = await SignalClient.connect(server, server.new_http())
    welcome = await caller.hello(credential=joined.page.first("body")["data-credential"])
    assert welcome["session"] == session_id
    assert welcome["call"] == {"phone_line": True, "stills_every": server.config.still_every}
    await caller.close()


async def test_a_bare_form_post_keeps_the_sessions_language_and_consents_to_all(
    server: LiveServer,
) -> None:
    """A post without the form's fields (nothing declined) joins with every kind consented,
    in the session's language."""
    handler = await server.staff_client("hannah", StaffRole.HANDLER)
    _, token = await new_session(server, handler, "cy")
    joined = await fetch(server, "POST", f"/j/{token}")
    assert joined.status == 200
    assert joined.page.first("html")["lang"] == "cy"
    assert set(joined.page.first("body")["data-consent"].split()) == {
        "camera", "microphone", "location"}


# -- the bare /j/ page -----------------------------------------------------------------------------


async def test_the_bare_call_page_reveals_nothing(server: LiveServer) -> None:
    """GET /j/ (where a joined tab sits) answers 200, no-store, no cookie, and is the same
    page whether or not any call exists: no token, credential, session or incident on it,
    even for a browser that is signed in as staff."""
    before = await fetch(server, "GET", "/j/")
    assert before.status == 200
    assert before.page.first("body")["data-page"] == "resume"

    handler = await server.staff_client("hannah", StaffRole.HANDLER)
    session_id, token = await new_session(server, handler, "cy", ref="CAD-9187")
    credential = await server.redeem(token)
    after = await fetch(server, "GET", "/j/")
    as_staff = await fetch(server, "GET", "/j/", http=handler.http)
    assert after.html == before.html
    assert as_staff.html == before.html
    body = after.page.first("body")
    for name in ("data-token", "data-credential", "data-session", "data-expires",
                 "data-consent", "data-problem"):
        assert name not in body
    for private in (session_id, token, credential["credential"], "CAD-9187", "07911",
                    "Hannah", "hannah"):
        assert private not in after.html, private
    assert_neutral(after)
    assert_csp_safe(after.page)
    assert after.page.first("a", data_testid="quick-exit")["href"] == QUICK_EXIT

    welsh = await fetch(server, "GET", "/j/?lang=cy")
    assert welsh.status == 200
    assert welsh.page.first("html")["lang"] == "cy"
    assert CY["victim.joined.heading"] in welsh.page.visible
    assert_neutral(welsh)


# -- refusals in Welsh -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_used_link_is_refused_in_welsh(server: LiveServer, method: str) -> None:
    """?lang=cy on a used link gives the calm refusal from the Welsh catalogue (410), still
    neutral and CSP-safe; without it, the server's English wording."""
    handler = await server.staff_client("hannah", StaffRole.HANDLER)
    _, token = await new_session(server, handler, "cy")
    await server.redeem(token)

    welsh = await fetch(server, method, f"/j/{token}?lang=cy")
    assert welsh.status == 410
    message = welsh.page.first("p", data_testid="link-message")
    assert message["data-i18n"] == "victim.link.used"
    assert CY["victim.link.used"] in welsh.page.visible
    assert VICTIM_MESSAGES[LinkProblem.USED] not in welsh.page.visible
    assert welsh.page.first("html")["lang"] == "cy"
    assert welsh.page.first("body")["data-problem"] == "used"
    assert token not in welsh.html
    assert_neutral(welsh)
    assert_csp_safe(welsh.page)
    assert_calm(welsh.html)

    english = await fetch(server, method, f"/j/{token}?lang=en")
    assert english.status == 410
    assert VICTIM_MESSAGES[LinkProblem.USED] in english.page.visible
    assert CY["victim.link.used"] not in english.page.visible


async def test_a_second_tap_of_the_welsh_form_is_refused_in_welsh(server: LiveServer) -> None:
    """The no-script form carries the language in a field, not the URL: a second tap of the
    Welsh form is refused in Welsh too, not in English."""
    handler = await server.staff_client("hannah", StaffRole.HANDLER)
    _, token = await new_session(server, handler, "en")
    form = form_of((await fetch(server, "GET", f"/j/{token}?lang=cy")).page)
    assert (await fetch(server, "POST", f"/j/{token}", data=form)).status == 200
    again = await fetch(server, "POST", f"/j/{token}", data=form)
    assert again.status == 410
    assert again.page.first("html")["lang"] == "cy"
    assert CY["victim.link.used"] in again.page.visible


async def test_an_unknown_link_is_refused_in_welsh(server: LiveServer) -> None:
    """A made-up token with ?lang=cy gets the Welsh 'not recognised' page (404)."""
    answer = await fetch(server, "GET", "/j/not-a-real-link-Zq9x?lang=cy")
    assert answer.status == 404
    assert CY["victim.link.unknown"] in answer.page.visible
    assert answer.page.first("html")["lang"] == "cy"
    assert_neutral(answer)
