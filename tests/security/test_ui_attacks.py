"""Attacks on the web console's server side, from someone holding a viewer's key, a node token, a
cookie of another control plane, or nothing: each is refused and leaves the plane as it was."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import aiohttp

from reconciler.api.auth import EDGE_AUDIENCE
from reconciler.ui.events import MAX_STREAMS_PER_SUBJECT
from reconciler.ui.routes import SIGN_INS_PER_MINUTE
from reconciler.ui.sessions import SESSION_COOKIE
from tests.api.conftest import call, plane
from tests.e2e.cluster import Cluster, start_cluster, stop_cluster
from tests.ui.conftest import console

__all__ = ["plane"]


async def test_a_node_token_or_an_edge_token_gets_no_session(plane: Cluster) -> None:
    for token in (plane.plane.mint("edge-1", "node"), plane.plane.mint("dev", "developer", audience=EDGE_AUDIENCE)):
        answer = await call(plane.url, "POST", "/ui/session", json={"token": token})
        assert answer.status == 401, answer.body
        assert "Set-Cookie" not in answer.headers


async def test_a_cookie_of_another_plane_is_refused(plane: Cluster, tmp_path: Path) -> None:
    other = await start_cluster(tmp_path / "other", [])
    try:
        async with console(other, "admin") as foreign:
            cookie = {"Cookie": f"{SESSION_COOKIE}={foreign.cookie}"}
            answer = await call(plane.url, "GET", "/api/v1/wasm/nodes", headers=cookie)
            assert answer.status == 401
            assert (await call(plane.url, "GET", "/ui/session", headers=cookie)).status == 401
    finally:
        await stop_cluster(other)


async def test_csrf_bypass_attempts_are_refused(plane: Cluster) -> None:
    path = "/api/v1/wasm/source/accept-rewrite"
    async with console(plane, "admin") as ui:
        # a "simple" cross-site form post: text/plain body, no custom header
        plain = await ui.call("POST", path, csrf=False, data=b'{"head": "' + b"0" * 40 + b'"}',
                              headers={"Content-Type": "text/plain"})  # fmt: skip
        assert plain.status == 403 and plain.body["error"] == "csrf"
        empty = await ui.call("POST", path, headers={"X-CSRF-Token": ""}, json={"head": "0" * 40})
        assert empty.status == 403
        other_session = await call(plane.url, "POST", "/ui/session", json={"token": plane.token("admin", "mallory")})
        stolen = await ui.call("POST", path, headers={"X-CSRF-Token": other_session.body["csrf"]}, json={})
        assert stolen.status == 403  # a CSRF secret belongs to its own session
        null_origin = await ui.call("POST", path, headers={"Origin": "null"}, json={"head": "0" * 40})
        assert null_origin.status == 403
        # a GET carrying the header, or asking to be treated as a write, is still only a read
        override = await ui.call(
            "GET", "/api/v1/wasm/nodes/edge-1/drain", headers={"X-HTTP-Method-Override": "POST", "X-CSRF-Token": "x"}
        )
        assert override.status in (404, 405)
        assert (await ui.call("GET", "/api/v1/wasm/nodes", headers={"X-CSRF-Token": "wrong"})).status == 200


async def test_a_viewer_session_cannot_write_even_with_its_csrf(plane: Cluster) -> None:
    async with console(plane, "viewer") as ui:
        answer = await ui.call("POST", "/api/v1/wasm/source/accept-rewrite", json={"head": "0" * 40})
        assert answer.status == 403 and answer.body["error"] == "forbidden"


async def test_a_stream_flood_is_capped(plane: Cluster) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    headers = plane.headers("viewer")
    async with aiohttp.ClientSession(timeout=timeout) as http:
        opened = []
        try:
            for _ in range(MAX_STREAMS_PER_SUBJECT):
                response = await http.get(plane.url + "/ui/events", headers=headers)
                assert response.status == 200
                opened.append(response)
            refused = await call(plane.url, "GET", "/ui/events", headers=headers)
            assert refused.status == 429 and "Retry-After" in refused.headers
            plane.plane.broadcaster.max_streams = MAX_STREAMS_PER_SUBJECT  # the total cap, for another subject
            total = await call(plane.url, "GET", "/ui/events", plane.token("viewer", "someone-else"))
            assert total.status == 429
        finally:
            for response in opened:
                response.close()


async def test_an_oversize_sign_in_body_is_refused(plane: Cluster) -> None:
    answer = await call(plane.url, "POST", "/ui/session", json={"token": "x" * (64 * 1024)})
    assert answer.status == 413


async def test_login_codes_cannot_be_brute_forced(plane: Cluster) -> None:
    statuses = []
    async with aiohttp.ClientSession() as http:
        for i in range(SIGN_INS_PER_MINUTE + 5):
            async with http.get(f"{plane.url}/ui/login/guess-{i}", allow_redirects=False) as r:
                statuses.append(r.status)
    assert set(statuses[:SIGN_INS_PER_MINUTE]) == {401}
    assert statuses[-1] == 429
    # sign-in with tokens shares the budget
    answer = await call(plane.url, "POST", "/ui/session", json={"token": plane.token("viewer")})
    assert answer.status == 429


async def test_ref_injection_in_diff_is_refused(plane: Cluster, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    refs = [
        f"--upload-pack=touch {marker}",
        "--upload-pack=touch",
        "-c",
        "../main",
        "main/../../etc",
        "main\0",
        "main branch",
        "main\n--help",
        "x" * 300,
        "@{-1}",
        "HEAD~1",
        "main..other",
        ".hidden",
    ]
    for ref in refs:
        answer = await call(plane.url, "GET", f"/api/v1/wasm/diff?ref={quote(ref, safe='')}", plane.token("viewer"))
        assert answer.status == 400, (ref, answer.status, answer.body)
    assert not marker.exists()
