"""The console's files: /ui redirects to /ui/, index.html and the other files are served public with
the console's Content-Security-Policy and the right content types, and nothing outside
reconciler/ui/static is reachable (`..`, encoded `..`, absolute paths, symlinks out, other suffixes)."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from reconciler.ui.routes import CSP, STATIC, static_path
from tests.api.conftest import call
from tests.e2e.cluster import Cluster
from tests.ui.conftest import raw_get


async def test_ui_redirects_to_the_index(plane: Cluster) -> None:
    async with aiohttp.ClientSession() as http, http.get(plane.url + "/ui", allow_redirects=False) as r:
        assert r.status in (301, 302, 303, 307, 308) and r.headers["Location"] == "/ui/"


async def test_the_index_is_served_public_with_the_console_headers(plane: Cluster) -> None:
    answer = await call(plane.url, "GET", "/ui/")
    assert answer.status == 200
    assert answer.body == (STATIC / "index.html").read_bytes()
    headers = {k.lower(): v for k, v in answer.headers.items()}
    assert headers["content-type"].startswith("text/html")
    assert headers["content-security-policy"] == CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-cache"
    again = await call(plane.url, "GET", "/ui/", headers={"If-None-Match": headers["etag"]})
    assert again.status == 304


async def test_files_get_their_content_types(plane: Cluster) -> None:
    for path in sorted(STATIC.rglob("*")):
        if not path.is_file() or path.suffix not in (".js", ".css", ".svg"):
            continue
        rel = path.relative_to(STATIC).as_posix()
        answer = await call(plane.url, "GET", f"/ui/{rel}")
        assert answer.status == 200, rel
        expected = {".js": "text/javascript; charset=utf-8", ".css": "text/css", ".svg": "image/svg+xml"}
        assert answer.headers["Content-Type"].startswith(expected[path.suffix]), rel
        assert answer.headers["Content-Security-Policy"] == CSP


async def test_session_and_error_answers_under_ui_carry_the_csp_too(plane: Cluster) -> None:
    for path in ("/ui/session", "/ui/nothing-here.js"):
        answer = await call(plane.url, "GET", path)
        assert answer.status in (401, 404)
        assert answer.headers["Content-Security-Policy"] == CSP


async def test_traversal_is_not_found(plane: Cluster) -> None:
    for target in (
        "/ui/../pyproject.toml",
        "/ui/%2e%2e/pyproject.toml",
        "/ui/%2E%2E/%2E%2E/pyproject.toml",
        "/ui/views/../../server.py",
        "/ui/..%2f..%2fserver.py",
        "/ui/%2fetc%2fpasswd",
        "/ui//etc/passwd",
        "/ui/..%5c..%5cserver.py",
        "/ui/routes.py",
        "/ui/.hidden.js",
        "/ui/index.html%00.js",
    ):
        status, body = await raw_get(plane.url, target)
        assert status in (400, 404), (target, status)
        assert b"[build-system]" not in body and b"import" not in body


def test_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "static"
    root.mkdir()
    (root / "ok.js").write_text("export {};")
    secret = tmp_path / "secret.js"
    secret.write_text("secret")
    (root / "out.js").symlink_to(secret)
    assert static_path(root, "ok.js") == (root / "ok.js").resolve()
    assert static_path(root, "out.js") is None
    assert static_path(root, str(secret)) is None
    assert static_path(root, "ok.exe") is None
