"""More attacks on the web console from outside (see test_ui_attacks.py for the first round): a page on
another site that posts a sign-in or a write, a viewer that floods the diff, a node token, hostile
query parameters and refs, and headers on every kind of /ui answer."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from urllib.parse import quote

import aiohttp
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from reconciler.api.auth import AuthOptions, TokenAuthority
from reconciler.api.diff import DIFF
from reconciler.ui.routes import CSP
from reconciler.ui.sessions import CSRF_HEADER, SESSION_COOKIE
from tests.api.conftest import call, plane
from tests.e2e.cluster import Cluster, poll
from tests.git.gitutil import git
from tests.ui.browser.conftest import CHROMIUM, Console, console, page, screenshots, sign_in
from tests.ui.conftest import console as signed_in

__all__ = ["browser", "console", "page", "plane", "screenshots"]
HOSTILE = '<img src=x onerror="window.__pwned=1">'

DRAIN = "/api/v1/wasm/source/accept-rewrite"


async def test_a_cross_site_page_cannot_sign_the_victim_in_as_the_attacker(plane: Cluster) -> None:
    """Login CSRF: a form on another site posts the attacker's token (text/plain, no preflight); the
    browser would keep the Set-Cookie of the answer and the victim would act as the attacker."""
    body = b'{"token": "' + plane.token("viewer", "mallory").encode() + b'", "x": "="}'
    for headers in (
        {"Content-Type": "text/plain", "Origin": "http://evil.example"},
        {"Content-Type": "application/json", "Origin": "null"},
        {"Content-Type": "text/plain", "Sec-Fetch-Site": "cross-site"},
        {"Content-Type": "text/plain", "Sec-Fetch-Site": "same-site"},  # a sibling port on 127.0.0.1
    ):
        answer = await call(plane.url, "POST", "/ui/session", data=body, headers=headers)
        assert answer.status == 403, (headers, answer.status, answer.body)
        assert SESSION_COOKIE not in answer.headers.get("Set-Cookie", "")
    # the page itself, and the CLI or curl (no Origin), still sign in
    own = {"Origin": plane.url, "Sec-Fetch-Site": "same-origin"}
    assert (
        await call(plane.url, "POST", "/ui/session", json={"token": plane.token("viewer")}, headers=own)
    ).status == 200
    assert (await call(plane.url, "POST", "/ui/session", json={"token": plane.token("viewer")})).status == 200


async def test_a_cookie_write_marked_cross_site_is_refused_without_an_origin(plane: Cluster) -> None:
    async with signed_in(plane, "admin") as ui:
        for site in ("cross-site", "same-site"):
            answer = await ui.call("POST", DRAIN, headers={"Sec-Fetch-Site": site}, json={"head": "0" * 40})
            assert answer.status == 403 and answer.body["error"] == "csrf", (site, answer)
        signed_out = await ui.call("DELETE", "/ui/session", headers={"Sec-Fetch-Site": "cross-site"})
        assert signed_out.status == 403
        assert (await ui.call("GET", "/ui/session")).status == 200
        # the page's own writes say same-origin
        mine = await ui.call("POST", DRAIN, headers={"Sec-Fetch-Site": "same-origin"}, json={"head": "0" * 40})
        assert mine.status != 403, mine


async def test_a_diff_flood_does_not_starve_the_plane_of_threads(plane: Cluster) -> None:
    """Every diff waits for the one before it; a viewer's flood of waiting diffs must not hold the
    worker threads the plane needs for its store, its nodes' heartbeats and its reconcile passes."""
    reader = plane.plane.app[DIFF]
    runner = plane.plane._runner
    assert runner is not None and runner.server is not None
    server = runner.server
    viewer = plane.headers("viewer")
    assert reader._lock.acquire(timeout=5)  # a diff that is still fetching
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:

            async def diff() -> int:
                async with http.get(plane.url + "/api/v1/wasm/diff?ref=main", headers=viewer) as r:
                    return r.status

            flood = [asyncio.create_task(diff()) for _ in range(40)]
            await poll(lambda: len(server.connections) >= 40, "the flood's 40 connections")
            # a read that needs a worker thread answers while the flood waits
            async with asyncio.timeout(10):
                answer = await call(plane.url, "GET", "/api/v1/wasm/audit?limit=1", plane.token("viewer"))
            assert answer.status == 200
            reader._lock.release()
            statuses = await asyncio.gather(*flood)
    finally:
        if reader._lock.locked():
            reader._lock.release()
    assert set(statuses) <= {200, 503}, statuses
    assert 200 in statuses


async def test_a_node_token_gets_no_stream_no_session_and_no_diff(plane: Cluster) -> None:
    node = plane.plane.mint("edge-1", "node")
    for path in ("/ui/events", "/ui/session", "/api/v1/wasm/diff", "/api/v1/wasm/audit"):
        answer = await call(plane.url, "GET", path, node)
        assert answer.status in (401, 403), (path, answer.status)
    # and as a cookie: a node token is not a session
    cookie = {"Cookie": f"{SESSION_COOKIE}={node}"}
    for path in ("/ui/events", "/ui/session", "/api/v1/wasm/nodes"):
        assert (await call(plane.url, "GET", path, headers=cookie)).status == 401, path


async def test_refs_that_name_urls_paths_or_options_fetch_nothing(plane: Cluster) -> None:
    viewer = plane.token("viewer")
    for ref in (
        "file:///etc/passwd",
        "https://evil.example/repo.git",
        "/etc/passwd",
        "ext::sh -c touch% /tmp/pwned",
        "origin/main:fleet",
        "main^{tree}",
        "main@{upstream}",
        "refs/heads/main~0",
        "-",
        "main\r\nX-Injected: 1",
        "m\u0430in",  # a Cyrillic a
        "%2e%2e",
    ):
        answer = await call(plane.url, "GET", f"/api/v1/wasm/diff?ref={quote(ref, safe='')}", viewer)
        assert answer.status == 400, (ref, answer.status, answer.body)
    # a valid-looking name that is not a ref is a 404, not a fetch of something else
    unknown = await call(plane.url, "GET", "/api/v1/wasm/diff?ref=" + "f" * 40, viewer)
    assert unknown.status == 404, unknown.body


async def test_hostile_list_parameters_are_refused_or_taken_literally(plane: Cluster) -> None:
    viewer = plane.token("viewer")
    for path in ("/api/v1/wasm/nodes", "/api/v1/wasm/modules"):
        for query in ("limit=0", "limit=-1", "limit=1e9", "limit=99999999", "offset=-1", "offset=1e3",
                      "limit=" + "9" * 5000, "q=" + "a" * 201):  # fmt: skip
            answer = await call(plane.url, "GET", f"{path}?{query}", viewer)
            assert answer.status == 400, (path, query[:40], answer.status)
        for q in (".*", "(a+)+$", "[", "\\", "%", "_", "' OR 1=1 --"):
            answer = await call(plane.url, "GET", f"{path}?limit=50&q={quote(q, safe='')}", viewer)
            assert answer.status == 200 and answer.body["total"] == 0, (path, q, answer.body)
        huge = await call(plane.url, "GET", f"{path}?limit=1000&offset={2**62}", viewer)
        assert huge.status == 200 and huge.body["total"] >= 0
    for query in ("limit=0", "limit=1001", "after=-1", "limit=x"):
        assert (await call(plane.url, "GET", f"/api/v1/wasm/audit?{query}", viewer)).status == 400, query
    for q in (".*", "(a+)+$", "[", "\\", "%"):
        answer = await call(plane.url, "GET", f"/api/v1/wasm/audit?q={quote(q, safe='')}", viewer)
        assert answer.status == 200 and answer.body["entries"] == [], (q, answer.body)


async def test_every_kind_of_ui_answer_carries_the_console_headers(plane: Cluster) -> None:
    """The CSP (no framing), nosniff and no-referrer on answers the console did not plan: a refused
    method, the used-link page, a 401, a 429 and a bad request."""
    answers = [
        await call(plane.url, "GET", "/ui/login/not-a-code"),
        await call(plane.url, "PUT", "/ui/session", json={}),
        await call(plane.url, "PATCH", "/ui/index.html"),
        await call(plane.url, "POST", "/ui/session", data=b"{", headers={"Content-Type": "application/json"}),
        await call(plane.url, "GET", "/ui/events"),
        await call(plane.url, "GET", "/ui/%ff%fe.js"),
        await call(plane.url, "GET", "/ui/index.html", headers={"If-None-Match": "*"}),
    ]
    for answer in answers:
        assert answer.headers.get("Content-Security-Policy") == CSP, answer
        assert answer.headers.get("X-Content-Type-Options") == "nosniff", answer
        assert answer.headers.get("X-Frame-Options") == "DENY", answer
    assert answers[0].status == 401 and answers[0].headers["Content-Type"].startswith("text/html")
    assert all(a.status >= 400 for a in answers[1:6]) and answers[6].status in (200, 304)


async def test_head_options_and_method_override_never_write(plane: Cluster) -> None:
    async with signed_in(plane, "admin") as ui:
        for method in ("HEAD", "OPTIONS"):
            for path in (DRAIN, "/api/v1/wasm/nodes/edge-1/drain"):
                answer = await ui.call(method, path, csrf=False)
                assert answer.status in (404, 405), (method, path, answer.status)
                assert "Access-Control-Allow-Origin" not in answer.headers
        options = await ui.call("OPTIONS", "/ui/session", csrf=False)
        assert options.status in (401, 405) and "Set-Cookie" not in options.headers
        for header in ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"):
            answer = await ui.call("GET", "/ui/session", headers={header: "DELETE"})
            assert answer.status == 200  # still signed in
        assert (await ui.call("GET", "/ui/session")).status == 200


async def test_a_foreign_origin_cannot_read_the_session_or_the_stream(plane: Cluster) -> None:
    """No CORS: the CSRF secret (GET /ui/session) and the live stream are unreadable from another
    origin, even a sibling port on 127.0.0.1 that the browser sends the cookie to."""
    async with signed_in(plane, "viewer") as ui:
        sibling = {"Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-site"}
        answer = await ui.call("GET", "/ui/session", headers=sibling)
        assert not any(k.lower().startswith("access-control-") for k in answer.headers)
        asks = {"Access-Control-Request-Method": "DELETE", "Access-Control-Request-Headers": CSRF_HEADER}
        preflight = await ui.call("OPTIONS", "/ui/session", headers={**sibling, **asks})
        assert not any(k.lower().startswith("access-control-") for k in preflight.headers)


async def test_the_login_link_redirects_only_to_the_console(plane: Cluster) -> None:
    for target in ("/ui//evil.example", "/ui/\\evil.example", "/ui/login/x?next=http://evil.example",
                   "/ui?next=//evil.example", "//evil.example/ui/"):  # fmt: skip
        async with aiohttp.ClientSession() as http, http.get(plane.url + target, allow_redirects=False) as r:
            location = r.headers.get("Location", "")
            assert location in ("", "/ui/"), (target, location)
    link = plane.plane.login_link() + "?next=http://evil.example"
    async with aiohttp.ClientSession() as http, http.get(link, allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/ui/"


# -- in Chromium, on a live `hotswap up` ------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for this module only: the sync driver's loop must be gone before the async tests
    of the modules after this one run."""
    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def test_a_form_on_another_site_cannot_sign_the_browser_in(browser: Browser, console: Console) -> None:
    """Login CSRF in a real browser: another site's auto-submitted text/plain form posts the
    attacker's token to /ui/session; the browser must end up with no session of the attacker's."""
    token = console.token("viewer", "mallory")
    evil = (
        "<!doctype html><form method=post enctype=text/plain action='" + console.url + "/ui/session'>"
        '<input type=hidden name=\'{"token": "' + token + '", "x": "\' value=\'"}\'></form>'
    )
    context = browser.new_context()
    try:
        context.route(
            "http://evil.test/**", lambda route: route.fulfill(status=200, content_type="text/html", body=evil)
        )
        victim = context.new_page()
        victim.goto("http://evil.test/")
        with victim.expect_navigation(url=console.url + "/ui/session") as posted:
            victim.locator("form").evaluate("form => form.submit()")
        answer = posted.value
        assert answer is not None and answer.status == 403
        assert not [c for c in context.cookies() if c["name"] == SESSION_COOKIE]
        victim.goto(console.url + "/ui/")
        expect(victim.get_by_label("API token")).to_be_visible()
        expect(victim.locator("#user")).not_to_contain_text("mallory")
    finally:
        context.close()


def _register(console: Console, node: str, region: str) -> None:
    token = TokenAuthority.load(AuthOptions(), console.data_dir).mint(node, ["node"], ttl_seconds=600)
    body = {"id": node, "region": region, "hostname": HOSTILE, "url": "http://127.0.0.1:9/x"}
    request = urllib.request.Request(
        console.url + "/api/v1/wasm/nodes", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status in (200, 201)


def test_markup_from_a_commit_or_a_node_is_shown_as_text(page: Page, console: Console) -> None:
    """Stored XSS: a pushed commit's author and message, and a node's region and hostname (what a
    node token holder says at registration, also in the audit log), are text on every screen."""
    message = f"<script>window.__pwned=2</script>{HOSTILE}"

    def commit() -> str:
        git(console.repo.root, "-c", f"user.name={HOSTILE}", "commit", "-q", "--allow-empty", "-m", message)
        return git(console.repo.root, "rev-parse", "HEAD").strip()

    console.on_branch(commit, "xss")
    _register(console, "edge-xss", HOSTILE)
    sign_in(page, console, console.token("viewer"))
    page.goto(console.url + "/ui/#/diff?ref=xss")
    expect(page.get_by_text(message)).to_be_visible()
    page.goto(console.url + "/ui/#/nodes/edge-xss")
    expect(page.get_by_role("link", name=HOSTILE)).to_be_visible()
    page.goto(console.url + "/ui/#/audit")
    expect(page.get_by_text("edge-xss").first).to_be_visible()
    page.goto(console.url + "/ui/#/nodes")
    expect(page.get_by_text(HOSTILE).first).to_be_visible()
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator("img, script:not([src])").count() == 0
