"""Console sessions on a real control plane: an API token buys an HttpOnly SameSite=Strict cookie
that authenticates API calls; a cookie write needs the session's CSRF header and the plane's own
origin; roles are kept; expired, forged and plain API tokens in the cookie are refused; a login link
opens one session, once."""

from __future__ import annotations

import time

import aiohttp

from reconciler.ui.sessions import SESSION_COOKIE
from tests.api.conftest import call
from tests.e2e.cluster import Cluster
from tests.ui.conftest import browser, console


def cookie_header(value: str) -> dict[str, str]:
    return {"Cookie": f"{SESSION_COOKIE}={value}"}


async def test_sign_in_sets_an_httponly_strict_cookie_that_authenticates_reads(plane: Cluster) -> None:
    token = plane.token("operator", "olga")
    answer = await call(plane.url, "POST", "/ui/session", json={"token": token})
    assert answer.status == 200, answer.body
    assert answer.body["subject"] == "olga" and answer.body["roles"] == ["operator"]
    assert answer.body["csrf"] and answer.body["expiresAt"] > time.time()
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="):
        assert attribute in cookie, cookie
    assert "Secure" not in cookie  # plain HTTP here
    async with console(plane, "operator", "olga") as ui:
        nodes = await ui.call("GET", "/api/v1/wasm/nodes")
        assert nodes.status == 200 and "nodes" in nodes.body
        again = await ui.call("GET", "/ui/session")
        assert again.status == 200 and again.body["subject"] == "olga" and again.body["csrf"] == ui.csrf


async def test_the_session_lasts_no_longer_than_the_token(plane: Cluster) -> None:
    token = plane.plane.mint("short", "viewer", ttl_seconds=120)
    answer = await call(plane.url, "POST", "/ui/session", json={"token": token})
    assert answer.status == 200
    assert answer.body["expiresAt"] <= time.time() + 121
    day_long = plane.plane.mint("l", "viewer", ttl_seconds=1e6)
    long = await call(plane.url, "POST", "/ui/session", json={"token": day_long})
    assert long.body["expiresAt"] <= time.time() + 12 * 3600 + 1


async def test_a_cookie_write_needs_the_csrf_header(plane_with_nodes: Cluster) -> None:
    cluster = plane_with_nodes
    node = "/api/v1/wasm/nodes/edge-us-east-1/drain"
    async with console(cluster, "operator") as ui:
        missing = await ui.call("POST", node, csrf=False)
        assert missing.status == 403 and missing.body["error"] == "csrf"
        wrong = await ui.call("POST", node, headers={"X-CSRF-Token": "not-the-one"})
        assert wrong.status == 403 and wrong.body["error"] == "csrf"
        assert {v.id: v.status for v in cluster.plane.hub.view()}["edge-us-east-1"] == "Healthy"
        drained = await ui.call("POST", node)
        assert drained.status == 202, drained.body
        assert drained.body["status"] == "Draining"
        back = await ui.call("DELETE", node)
        assert back.status == 202 and back.body["status"] != "Draining"


async def test_a_cookie_write_from_another_origin_is_refused(plane_with_nodes: Cluster) -> None:
    async with console(plane_with_nodes, "admin") as ui:
        foreign = await ui.call(
            "POST", "/api/v1/wasm/nodes/edge-us-east-1/drain", headers={"Origin": "https://evil.example"}
        )
        assert foreign.status == 403 and foreign.body["error"] == "csrf"
        own = await ui.call("POST", "/api/v1/wasm/nodes/edge-us-east-1/drain", headers={"Origin": ui.url})
        assert own.status == 202
        await ui.call("DELETE", "/api/v1/wasm/nodes/edge-us-east-1/drain")


async def test_a_bearer_write_needs_no_csrf_header_and_wins_over_the_cookie(plane_with_nodes: Cluster) -> None:
    cluster = plane_with_nodes
    async with console(cluster, "viewer") as ui:
        headers = cluster.headers("operator")
        drained = await ui.call("POST", "/api/v1/wasm/nodes/edge-us-east-1/drain", csrf=False, headers=headers)
        assert drained.status == 202
        back = await ui.call("DELETE", "/api/v1/wasm/nodes/edge-us-east-1/drain", csrf=False, headers=headers)
        assert back.status == 202


async def test_a_viewer_session_cannot_drain(plane_with_nodes: Cluster) -> None:
    async with console(plane_with_nodes, "viewer") as ui:
        answer = await ui.call("POST", "/api/v1/wasm/nodes/edge-us-east-1/drain")
        assert answer.status == 403 and answer.body["error"] == "forbidden"


async def test_expired_forged_and_tampered_cookies_are_refused(plane: Cluster) -> None:
    sessions = plane.plane.sessions
    _, expired = sessions.open("old", ["viewer"], time.time() + 1)
    sessions_clock = sessions.clock
    try:
        sessions.clock = lambda: sessions_clock() + 120  # two minutes on: past the expiry and the leeway
        assert (await call(plane.url, "GET", "/api/v1/wasm/nodes", headers=cookie_header(expired))).status == 401
    finally:
        sessions.clock = sessions_clock
    async with console(plane, "admin") as ui:
        head, payload, signature = ui.cookie.split(".")
        tampered = f"{head}.{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{signature}"
        for value in (tampered, "garbage", f"{head}.{payload}."):
            answer = await call(plane.url, "GET", "/api/v1/wasm/nodes", headers=cookie_header(value))
            assert answer.status == 401, value
            assert (await call(plane.url, "GET", "/ui/session", headers=cookie_header(value))).status == 401


async def test_an_api_token_in_the_cookie_is_refused_and_a_session_is_not_a_bearer_token(plane: Cluster) -> None:
    token = plane.token("admin")
    answer = await call(plane.url, "GET", "/api/v1/wasm/nodes", headers=cookie_header(token))
    assert answer.status == 401
    async with console(plane, "admin") as ui:
        as_bearer = await call(plane.url, "GET", "/api/v1/wasm/nodes", ui.cookie)
        assert as_bearer.status == 401
        signin = await call(plane.url, "POST", "/ui/session", json={"token": ui.cookie})
        assert signin.status == 401


async def test_bad_tokens_get_401(plane: Cluster) -> None:
    for token in ("nonsense", plane.plane.mint("x", "viewer", ttl_seconds=-100)):
        answer = await call(plane.url, "POST", "/ui/session", json={"token": token})
        assert answer.status == 401 and answer.body["error"] == "unauthorized"
    assert (await call(plane.url, "POST", "/ui/session", json={})).status == 400
    assert (await call(plane.url, "GET", "/ui/session")).status == 401


async def test_sign_out_clears_the_cookie_and_needs_the_csrf_header(plane: Cluster) -> None:
    async with console(plane, "viewer") as ui:
        refused = await ui.call("DELETE", "/ui/session", csrf=False)
        assert refused.status == 403
        value = ui.cookie
        done = await ui.call("DELETE", "/ui/session")
        assert done.status == 204
        assert "Max-Age=0" in done.headers["Set-Cookie"]
        assert (await ui.call("GET", "/ui/session")).status == 401
        # the old value is signed out on this plane even if a copy of it is replayed
        assert (await call(plane.url, "GET", "/ui/session", headers=cookie_header(value))).status == 401


async def test_a_login_link_works_once(plane: Cluster) -> None:
    link = plane.plane.login_link(subject="up", roles=("admin",), ttl=900)
    assert link.startswith(plane.url + "/ui/login/")
    async with browser() as http:
        async with http.get(link, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/ui/"
            assert "HttpOnly" in r.headers["Set-Cookie"]
        async with http.get(plane.url + "/ui/session") as r:
            assert r.status == 200
            body = await r.json()
            assert body["subject"] == "up" and body["roles"] == ["admin"]
    async with aiohttp.ClientSession() as http, http.get(link, allow_redirects=False) as r:
        assert r.status == 401
        assert "text/html" in r.headers["Content-Type"]
        assert "hotswap token" in await r.text()


async def test_an_expired_login_link_is_refused(plane: Cluster) -> None:
    link = plane.plane.login_link(ttl=-1)
    answer = await call(plane.url, "GET", link.removeprefix(plane.url))
    assert answer.status == 401


async def test_the_up_banner_prints_the_console_and_a_login_link_that_signs_in(plane: Cluster) -> None:
    from reconciler.commands.up import banner

    text = banner(plane.plane, [], "fleet", plane.data)
    line = next(line for line in text.splitlines() if line.strip().startswith("Console:"))
    assert f"{plane.url}/ui/" in line and "one use, 15 min" in line
    link = line.split("sign in: ", 1)[1].split(",", 1)[0]
    assert link.startswith(plane.url + "/ui/login/")
    async with browser() as http, http.get(link, allow_redirects=False) as r:
        assert r.status == 303
