"""Attacks on what changed at trust boundaries: presigned blob URLs, JSON bodies, token roles.

From the outside, with real parts: a real control plane API over S3 (moto behind the recording
front of `tests.s3front`), a real control plane with its own token authority (`tests.api.conftest`),
and a node's real fetch path (`ControlPlaneBlobs` behind `DiskBlobs`) pointed at a hostile control
plane and a hostile blob store, both real aiohttp servers of the test's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import brotli
import jwt
import pytest
from aiohttp import web

from edge.auth import ADMIN_ROLES, EXECUTE_ROLES, Authenticator
from edge.blobfetch import MAX_BINARY_BYTES, MAX_COMPRESSED_BYTES, ControlPlaneBlobs, ControlPlaneLink
from edge.errors import ForbiddenError, LoadError, UnauthorizedError
from edge.nodeapi import BLOB_DIRECT_HEADER, BLOB_ENCODING_HEADER, NODES_PATH
from edge.tablecache import DiskBlobs
from reconciler.api.auth import EDGE_AUDIENCE
from reconciler.store.blobs import BLOBS_PREFIX, digest_hex
from tests.api.conftest import call, plane  # noqa: F401 - the fixture
from tests.e2e.cluster import Cluster
from tests.store.test_presigned_blobs import NODE_TOKEN, VIEWER_TOKEN, Plane, front  # noqa: F401 - fixtures
from tests.store.test_presigned_blobs import plane as s3_plane  # noqa: F401 - the fixture
from tests.store.test_registry import ADD

ADD_DIGEST = "sha256:" + hashlib.sha256(ADD).hexdigest()
SIGV4_QUERY = {
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
}


# --- 1. Presigned URLs, asked of a real control plane over S3 -------------------------------------


async def _get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers, allow_redirects=False) as r:
        await r.read()
        return r.status, dict(r.headers)


async def test_no_presigned_url_without_a_node_token(s3_plane: Plane) -> None:  # noqa: F811
    digest = s3_plane.register("adder", ADD)
    url = f"{s3_plane.url}/api/v1/wasm/blobs/{digest}"
    for headers in (
        {BLOB_DIRECT_HEADER: "br"},  # nobody
        {"Authorization": "Bearer not-a-token", BLOB_DIRECT_HEADER: "br"},
        {"Authorization": f"Bearer {VIEWER_TOKEN}", BLOB_DIRECT_HEADER: "br"},
        {"Authorization": f"Bearer {VIEWER_TOKEN}", BLOB_DIRECT_HEADER: "BR"},
    ):
        status, answer = await _get(url, headers)
        assert status in (200, 401) and "Location" not in answer, (headers, status, answer)
    # A node asking for another encoding than the stored one gets the bytes, not a URL.
    for value in ("BR", "gzip", "br, gzip", ""):
        status, answer = await _get(url, {"Authorization": f"Bearer {NODE_TOKEN}", BLOB_DIRECT_HEADER: value})
        assert status == 200 and "Location" not in answer, (value, status)


async def test_a_node_token_gets_no_url_for_a_key_that_is_not_a_digest(s3_plane: Plane) -> None:  # noqa: F811
    digest = s3_plane.register("adder", ADD)
    hex_digest = digest_hex(digest)
    node = {"Authorization": f"Bearer {NODE_TOKEN}", BLOB_DIRECT_HEADER: "br"}
    base = f"{s3_plane.url}/api/v1/wasm/blobs/"
    for spelled in (
        hex_digest.upper(),
        f"SHA256:{hex_digest}",
        f"sha256:sha256:{hex_digest}",
        f"sha512:{hex_digest}",
        f"sha256:{hex_digest[:63]}",
        f"sha256:{hex_digest}0",
        f"sha256:{hex_digest}%0A",
        f"sha256:{hex_digest}%00",
        f"%20sha256:{hex_digest}",
        f"..%2F..%2Fmetadata%2F{hex_digest}",
        f"sha256:..%2F{hex_digest[3:]}",
        "%2E%2E",
        f"sha256:{hex_digest}%2F..%2F..%2Fmetadata",
        f"sha256:{hex_digest}?x=1&prefix=",
    ):
        status, answer = await _get(base + spelled, node)
        if spelled.endswith("?x=1&prefix="):  # the query is not the digest: the usual URL
            assert status == 307 and urlsplit(answer["Location"]).path.endswith(f"/{BLOBS_PREFIX}{hex_digest}")
            continue
        assert status in (400, 404) and "Location" not in answer, (spelled, status, answer.get("Location"))
    # The one URL a node gets names that object only, and carries nothing but the SigV4 signature.
    for spelled in (digest, hex_digest):
        status, answer = await _get(base + spelled, node)
        assert status == 307, (spelled, status)
        location = urlsplit(answer["Location"])
        assert location.path.endswith(f"/{BLOBS_PREFIX}{hex_digest}") and ".." not in location.path
        assert {k for k, _ in parse_qsl(location.query)} == SIGV4_QUERY, location.query
        assert "secret" not in answer["Location"].lower() and "Security-Token" not in answer["Location"]
        assert answer["Cache-Control"] == "no-store"


# --- 2. A node's fetch path against a hostile control plane and a hostile store -------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Hostile:
    """A real HTTP server whose every request is recorded (path, Authorization) and answered by
    `handler`, which the test sets."""

    handler: Handler
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    url: str = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.path_qs, request.headers.get("Authorization")))
        return await self.handler(request)


@pytest.fixture
async def servers() -> AsyncIterator[Callable[[Handler], Awaitable[Hostile]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> Hostile:
        hostile = Hostile(handler)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", hostile._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        hostile.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return hostile

    yield start
    for runner in runners:
        await runner.cleanup()


def redirect_to(location: Callable[[], str], encoding: str | None = "br") -> Handler:
    """A control plane that redirects a node asking for the store, and streams the wasm otherwise."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get(BLOB_DIRECT_HEADER) == "br":
            headers = {"Location": location()}
            if encoding is not None:
                headers[BLOB_ENCODING_HEADER] = encoding
            return web.Response(status=307, headers=headers)
        return web.Response(body=ADD)

    return handler


async def _fetcher(control: str, tmp_path: Path) -> tuple[ControlPlaneBlobs, DiskBlobs, ControlPlaneLink]:
    link = ControlPlaneLink(control, NODE_TOKEN)
    fetcher = ControlPlaneBlobs(link)
    return fetcher, DiskBlobs(tmp_path / "blobs", fetcher), link


async def test_the_node_token_never_follows_a_redirect_to_any_host(
    servers: Callable[[Handler], Awaitable[Hostile]], tmp_path: Path
) -> None:
    async def store_answer(request: web.Request) -> web.Response:
        return web.Response(body=brotli.compress(ADD))

    store = await servers(store_answer)
    control = await servers(redirect_to(lambda: f"{store.url}/bucket/blobs/x?X-Amz-Signature=1"))
    fetcher, disk, link = await _fetcher(control.url, tmp_path)
    try:
        assert await disk.fetch(ADD_DIGEST) == ADD
        assert fetcher.direct_fetches == 1
        assert store.seen == [("/bucket/blobs/x?X-Amz-Signature=1", None)]  # no token at another host
        # Nor at the control plane's own origin (one ingress for both): the store session has none.
        same = await servers(redirect_to(lambda: f"{same.url}/bucket/blobs/y"))
        same.handler = _same_origin(same.handler)
        _, disk2, link2 = await _fetcher(same.url, tmp_path / "2")
        try:
            assert await disk2.fetch(ADD_DIGEST) == ADD
            assert same.seen[0][1] == f"Bearer {NODE_TOKEN}" and same.seen[1] == ("/bucket/blobs/y", None)
        finally:
            await link2.close()
    finally:
        await link.close()


def _same_origin(control: Handler) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/bucket/"):
            return web.Response(body=brotli.compress(ADD))
        return await control(request)

    return handler


async def test_a_store_that_redirects_again_is_not_followed(
    servers: Callable[[Handler], Awaitable[Hostile]], tmp_path: Path
) -> None:
    async def loop(request: web.Request) -> web.Response:  # every answer a redirect to itself
        return web.Response(status=307, headers={"Location": str(request.url)})

    store = await servers(loop)
    control = await servers(redirect_to(lambda: f"{store.url}/bucket/blobs/x"))
    fetcher, disk, link = await _fetcher(control.url, tmp_path)
    try:
        assert await disk.fetch(ADD_DIGEST) == ADD  # from the control plane, asked without the header
        assert len(store.seen) == 1 and fetcher.direct_fetches == 0
        assert fetcher.direct_paused_until > time.monotonic()
        assert [auth for _, auth in control.seen] == [f"Bearer {NODE_TOKEN}"] * 2
    finally:
        await link.close()


async def test_a_redirect_the_node_cannot_use_falls_back_or_is_refused(
    servers: Callable[[Handler], Awaitable[Hostile]], tmp_path: Path
) -> None:
    # Locations no HTTP client should take: local files, relative paths, other schemes.
    store_dirs: list[str] = []
    for location in ("file:///etc/passwd", "/api/v1/wasm/blobs/other", "ftp://127.0.0.1/x", "http://[::1"):
        control = await servers(redirect_to(lambda location=location: location))  # type: ignore[misc]
        fetcher, disk, link = await _fetcher(control.url, tmp_path / f"location-{len(store_dirs)}")
        try:
            store_dirs.append(location)
            assert await disk.fetch(ADD_DIGEST) == ADD, location
            assert fetcher.direct_fetches == 0 and fetcher.direct_paused_until > time.monotonic()
        finally:
            await link.close()
    # A redirect that does not say the object is brotli is refused outright: nothing is fetched there.
    store_hits: list[str] = []

    async def store_answer(request: web.Request) -> web.Response:
        store_hits.append(request.path)
        return web.Response(body=ADD)

    store = await servers(store_answer)
    for encoding in (None, "identity", "BR", "gzip"):
        control = await servers(redirect_to(lambda: f"{store.url}/blobs/x", encoding=encoding))
        fetcher, disk, link = await _fetcher(control.url, tmp_path / f"enc-{encoding}")
        try:
            with pytest.raises(LoadError, match="redirected blob"):
                await disk.fetch(ADD_DIGEST)
        finally:
            await link.close()
    assert store_hits == []
    # Nor does a control plane asked without the header get to redirect the node.
    control = await servers(redirect_to(lambda: f"{store.url}/blobs/x"))
    fetcher, disk, link = await _fetcher(control.url, tmp_path / "paused")
    fetcher.direct_paused_until = time.monotonic() + 60
    control.handler = _always_redirect(f"{store.url}/blobs/x")
    try:
        with pytest.raises(LoadError, match="answered 307"):
            await disk.fetch(ADD_DIGEST)
        assert store_hits == []
    finally:
        await link.close()


def _always_redirect(location: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": location, BLOB_ENCODING_HEADER: "br"})

    return handler


async def _endless(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()  # no length: chunked, and it never ends
    await response.prepare(request)
    chunk = b"\0" * (1 << 20)
    try:
        while True:
            await response.write(chunk)
    except (ConnectionError, RuntimeError):  # the node hung up
        return response


async def test_endless_and_oversized_bodies_are_cut_at_the_cap(
    servers: Callable[[Handler], Awaitable[Hostile]], tmp_path: Path
) -> None:
    async def too_long(request: web.Request) -> web.Response:  # says so up front, sends little
        return web.Response(body=b"\0" * 10, headers={"Content-Length": str(MAX_COMPRESSED_BYTES + 1)})

    store = await servers(_endless)
    control = await servers(redirect_to(lambda: f"{store.url}/blobs/x"))
    fetcher, disk, link = await _fetcher(control.url, tmp_path / "store")
    try:
        with pytest.raises(LoadError, match=f"over the limit of {MAX_COMPRESSED_BYTES}"):
            await asyncio.wait_for(disk.fetch(ADD_DIGEST), 60)
    finally:
        await link.close()
    # The control plane's own answer (asked without the header) is capped at the module limit.
    control = await servers(_endless)
    fetcher, disk, link = await _fetcher(control.url, tmp_path / "plane")
    fetcher.direct_paused_until = time.monotonic() + 60
    try:
        with pytest.raises(LoadError, match=f"over the limit of {MAX_BINARY_BYTES}"):
            await asyncio.wait_for(disk.fetch(ADD_DIGEST), 60)
    finally:
        await link.close()
    assert not list((tmp_path / "plane" / "blobs").iterdir()) and not list((tmp_path / "store" / "blobs").iterdir())


async def test_a_store_sending_brotli_of_other_bytes_or_garbage_is_never_kept(
    servers: Callable[[Handler], Awaitable[Hostile]], tmp_path: Path
) -> None:
    bodies = {
        "other": brotli.compress(ADD + b"\0"),
        "garbage": b"\xff" * 64,
        "truncated": brotli.compress(ADD)[:-3],
        "trailing": brotli.compress(ADD) + b"extra",
        "plain": ADD,  # wasm as it is, where brotli was promised
    }
    for name, body in bodies.items():

        async def store_answer(request: web.Request, body: bytes = body) -> web.Response:
            return web.Response(body=body)

        store = await servers(store_answer)
        control = await servers(redirect_to(lambda store=store: f"{store.url}/blobs/x"))  # type: ignore[misc]
        fetcher, disk, link = await _fetcher(control.url, tmp_path / name)
        try:
            with pytest.raises(LoadError, match="refused"):
                await disk.fetch(ADD_DIGEST)
            assert not disk.path(ADD_DIGEST).exists(), name
            assert fetcher.direct_fetches == 0, name
        finally:
            await link.close()


# --- 3. JSON bodies on a real control plane ---------------------------------------------------------


async def test_json_bodies_no_parser_path_turns_into_a_500(plane: Cluster) -> None:  # noqa: F811
    admin, developer, node = plane.token("admin"), plane.token("developer"), plane.plane.mint("edge-x-1", "node")
    bodies: list[bytes] = [
        b'{"module": "calc", "function": "add", "args": [NaN, Infinity, -Infinity]}',
        b'{"module": "calc", "function": "add", "args": [1e999999, -1e400, 1e-400]}',
        b'{"module": "calc", "function": "add", "args": [123456789012345678901234567890, -9223372036854775809]}',
        b'{"module": "\\ud800calc", "function": "\\udfff", "args": ["\\ud800"]}',
        b'{"module": "calc", "module": "other", "function": "add", "args": [1, 2]}',
        b'\xef\xbb\xbf{"module": "calc", "function": "add", "args": [1, 2]}',
        '{"module": "calc", "function": "add", "args": [1, 2]}'.encode("utf-16"),
        b'{"module": "c\xe9lc", "args": [1, 2]}',  # Latin-1, not UTF-8
        b'{"module": "calc", "args": ["\xed\xa0\x80"]}',  # a surrogate encoded in UTF-8 bytes
        b'{"a": ' * 5000 + b"1" + b"}" * 5000,
        b'[{"a": ' * 3000 + b"1" + b"}]" * 3000,
        b"[" * 1000 + b"]" * 1000,  # within orjson's own limit: parsed, then refused by depth
        b'"' + b"\\u0000" * 100_000 + b'"',
        b"[" + b"1," * 400_000 + b"1]",
        b"1" * 900_000,  # one long run of digits: json's int conversion limit, not a 500
    ]
    routes = [
        ("/api/v1/wasm/execute", developer),
        ("/api/v1/wasm/deployments", admin),
        ("/api/v1/wasm/interfaces", developer),
        (NODES_PATH, node),
        (f"{NODES_PATH}/edge-x-1/heartbeat", node),
    ]
    for path, token in routes:
        for body in bodies:
            answer = await call(plane.url, "POST", path, token, data=body, headers={"Content-Type": "application/json"})
            assert answer.status < 500, (path, body[:60], answer.status, answer.body)


async def test_json_is_read_as_the_standard_library_reads_it() -> None:
    from reconciler.api.base import ApiError, parse_json

    texts = [
        b"123456789012345678",
        b"1234567890123456789",
        b"-12345678901234567890",
        b"18446744073709551616",
        b"9007199254740993",
        b"[1.0, -0, -0.0, 1E400, 0.1e1]",
        b'{"a": 1, "a": 2}',
        b'"\\ud800\\udc00 \\ud800"',
        b'{"x": "1234567890123456789", "y": 12345678901234567890}',
        b"\xef\xbb\xbf[NaN]",
    ]
    for text in texts:
        got = parse_json(text)
        assert repr(got) == repr(json.loads(text)), text
    for text in (b"[1,]", b"{'a': 1}", b"\x00", b"[" * 70 + b"]" * 70, b"", b"1 2"):
        with pytest.raises(ApiError):
            parse_json(text)


# --- 4. Token roles -----------------------------------------------------------------------------------


def _claims(**more: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": "hotswap", "aud": "hotswap-api", "sub": "mallory", "iat": now, "exp": now + 300, **more}


async def test_role_claims_in_other_shapes_grant_nothing(plane: Cluster) -> None:  # noqa: F811
    authority = plane.plane.authority
    read, admin_only = "/api/v1/wasm/modules", f"{NODES_PATH}/edge-x-1"
    shapes: list[dict[str, Any]] = [
        {"role": ["admin"]},
        {"roles": "admin"},
        {"roles": "viewer"},
        {"roles": ["Admin", "ADMIN", " admin", "admin ", "admin\u0000", "adm\u0131n"]},
        {"roles": [["admin"], {"admin": True}, 1, None, True]},
        {"roles": {"admin": True}},
        {"role": {"name": "admin"}, "roles": None},
        {"Role": "admin", "ROLES": ["admin"]},
        {},
    ]
    for shape in shapes:
        token = authority.sign(_claims(**shape))
        answer = await call(plane.url, "GET", read, token)
        assert answer.status == 403, (shape, answer.status, answer.body)
        answer = await call(plane.url, "DELETE", admin_only, token)
        assert answer.status == 403, (shape, answer.status, answer.body)
    # Both claims are read (role and roles): the union, never more than the token names.
    token = authority.sign(_claims(role="viewer", roles=["nobody", "node"]))
    assert (await call(plane.url, "GET", read, token)).status == 200
    assert (await call(plane.url, "DELETE", admin_only, token)).status == 403


async def test_a_node_token_reaches_no_route_of_a_person(plane: Cluster) -> None:  # noqa: F811
    node = plane.plane.mint("edge-x-1", "node")
    for method, path, body in (
        ("POST", "/api/v1/wasm/deployments", {"module": "calc", "version": "1.0.0"}),
        ("POST", "/api/v1/wasm/execute", {"module": "calc", "function": "add", "args": [1, 2]}),
        ("POST", "/api/v1/wasm/interfaces", {"name": "x", "wit": "package a:b;"}),
        ("DELETE", f"{NODES_PATH}/edge-x-1", None),
        ("DELETE", "/api/v1/wasm/modules/calc@1.0.0", None),
        ("POST", "/api/v1/wasm/source/accept-rewrite", {}),
    ):
        answer = await call(plane.url, method, path, node, json=body)
        assert answer.status == 403, (method, path, answer.status, answer.body)


def test_a_node_reads_role_claims_the_same_way(plane: Cluster) -> None:  # noqa: F811
    authority = plane.plane.authority
    node = Authenticator(authority.public_key_pem, node_id="edge-x-1")

    def edge(**shape: Any) -> str:
        return "Bearer " + authority.sign(_claims(aud=EDGE_AUDIENCE, **shape))

    for shape in (
        {"role": ["admin"]},
        {"roles": "admin"},
        {"roles": ["Admin", "admin "]},
        {"roles": [["developer"]]},
        {"roles": ["node"]},  # a node's own role executes nothing on another node
        {"roles": ["viewer", "operator"]},
    ):
        with pytest.raises(ForbiddenError):
            node.check(edge(**shape), EXECUTE_ROLES)
        with pytest.raises(ForbiddenError):
            node.check(edge(**shape), ADMIN_ROLES)
    assert node.check(edge(role="developer", roles="admin"), EXECUTE_ROLES)["sub"] == "mallory"
    with pytest.raises(ForbiddenError):
        node.check(edge(role="developer", roles="admin"), ADMIN_ROLES)
    # An API token (a person's or a node's) is not accepted by a node, nor one for two audiences.
    for token in (
        plane.token("admin"),
        plane.plane.mint("edge-x-1", "node"),
        authority.sign(_claims(aud=[EDGE_AUDIENCE, "hotswap-api"], roles=["admin"])),
    ):
        with pytest.raises(UnauthorizedError):
            node.check(f"Bearer {token}", EXECUTE_ROLES)
    # A token that is signed by no one (alg none) or with the public key as an HMAC secret.
    unsigned = jwt.encode(_claims(aud=EDGE_AUDIENCE, roles=["admin"]), "", algorithm="none")
    with pytest.raises(UnauthorizedError):
        node.check(f"Bearer {unsigned}", ADMIN_ROLES)


def test_a_store_error_body_cannot_forge_lines_in_the_nodes_log() -> None:
    from edge.blobfetch import _s3_error

    forged = b"<Error><Code>AccessDenied</Code><Message>no\nERROR hotswap.edge: forged line</Message></Error>"
    said = _s3_error(forged)
    assert "\n" not in said and "forged" not in said
    assert said == ": AccessDenied"
