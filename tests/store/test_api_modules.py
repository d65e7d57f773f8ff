"""The module routes over a real aiohttp server on 127.0.0.1, with good and bad input."""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from reconciler.api.app import ROUTE_FILES, RouteSetup, create_app
from reconciler.api.base import ApiDeps, ApiError, Principal, bad_request, principal, public
from reconciler.apply.registry import Registry, RegistryLimits
from reconciler.store.blobs import BLOBS_PREFIX, digest_hex, open_blob_store
from reconciler.store.errors import StoreError
from reconciler.store.state import open_state_store
from tests.store.test_blobs import overwrite_object
from tests.store.test_registry import ADD, ADD2, HELLO, UNSTABLE

MODULES = "/api/v1/wasm/modules"


def leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def data_module(payload: bytes) -> bytes:
    """A valid module whose size is mostly one data segment (to test large binaries)."""
    pages = max(1, -(-len(payload) // 65536))
    memory = b"\x01\x00" + leb(pages)
    data = b"\x01\x00\x41\x00\x0b" + leb(len(payload)) + payload
    return b"\0asm\x01\0\0\0" + b"\x05" + leb(len(memory)) + memory + b"\x0b" + leb(len(data)) + data


@dataclass
class Api:
    client: TestClient[web.Request, web.Application]
    registry: Registry
    in_use: set[str] = field(default_factory=set)


def json_upload(name: str = "adder", version: str = "1.0.0", data: bytes = ADD, **more: Any) -> dict[str, Any]:
    return {"name": name, "version": version, "wasm": base64.b64encode(data).decode(), **more}


async def make_api(
    tmp_path: Path, *, limits: RegistryLimits | None = None, routes: Sequence[RouteSetup] = ROUTE_FILES, **deps: Any
) -> AsyncIterator[Api]:
    registry = Registry(
        open_state_store(data_dir=tmp_path), open_blob_store(data_dir=tmp_path), limits=limits or RegistryLimits()
    )
    in_use: set[str] = set()
    deps.setdefault("modules_in_use", lambda: in_use)
    app = create_app(ApiDeps(registry=registry, **deps), routes)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Api(client, registry, in_use)
    registry.state.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async for built in make_api(tmp_path):
        yield built


async def post_json(api: Api, document: object, **kwargs: Any) -> aiohttp.ClientResponse:
    """POST a JSON body from a stream (aiohttp warns about large in-memory bodies)."""
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    return await api.client.post(MODULES, data=io.BytesIO(json.dumps(document).encode()), headers=headers, **kwargs)


async def error_of(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    body = await response.json()
    assert isinstance(body, dict) and set(body) >= {"error", "message"}
    return body


async def test_a_json_upload_answers_201_then_200(api: Api) -> None:
    response = await api.client.post(
        MODULES, json=json_upload(build={"commit": "abc", "timestamp": "2026-01-01T00:00:00Z"})
    )
    assert response.status == 201, await response.text()
    body = await response.json()
    assert set(body) >= {"id", "digest", "size", "compressedSize", "imports", "exports", "wasi"}
    assert body["id"] == "adder-v1.0.0" and body["digest"].startswith("sha256:") and body["size"] == len(ADD)
    assert body["build"] == {"commit": "abc", "timestamp": "2026-01-01T00:00:00Z"}
    assert response.headers["Location"] == f"{MODULES}/adder-v1.0.0"
    again = await post_json(api, json_upload())
    assert again.status == 200 and (await again.json())["digest"] == body["digest"]


async def test_a_multipart_upload_works_like_curl_F(api: Api) -> None:
    form = aiohttp.FormData()
    form.add_field("name", "hello")
    form.add_field("version", "0.1.0")
    form.add_field("build.commit", "deadbeef")
    form.add_field("wasm", HELLO, filename="hello.wasm", content_type="application/wasm")
    response = await api.client.post(MODULES, data=form)
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["id"] == "hello-v0.1.0" and body["wasi"]["imports"] == ["fd_write"]
    assert body["build"] == {"commit": "deadbeef", "timestamp": None}


async def test_base64_wrapped_in_lines_is_accepted(api: Api) -> None:
    wrapped = base64.encodebytes(ADD).decode()  # 76-column lines, as `base64` prints
    response = await post_json(api, {**json_upload(), "wasm": wrapped})
    assert response.status == 201, await response.text()


async def test_other_bytes_for_a_registered_version_are_a_409(api: Api) -> None:
    await post_json(api, json_upload())
    body = await error_of(await post_json(api, json_upload(data=ADD2)), 409)
    assert body["error"] == "conflict" and "adder-v1.0.0" in body["message"]


async def test_invalid_webassembly_is_a_400_saying_why(api: Api) -> None:
    body = await error_of(await post_json(api, json_upload(data=b"\0asm junk")), 400)
    assert body == {**body, "error": "invalid_module", "field": "wasm"}
    assert "not valid WebAssembly" in body["message"]
    body = await error_of(await post_json(api, json_upload(data=UNSTABLE)), 400)
    assert "wasi_unstable.fd_write" in body["message"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"{not json", "body"),
        (b"[1, 2]", "body"),
        (json.dumps({**json_upload(), "colour": "blue"}).encode(), "colour"),
        (json.dumps({"version": "1.0.0", "wasm": "AA=="}).encode(), "name"),
        (json.dumps({**json_upload(), "name": 7}).encode(), "name"),
        (json.dumps({**json_upload(), "name": "Adder"}).encode(), "name"),
        (json.dumps({**json_upload(), "version": "one"}).encode(), "version"),
        (json.dumps({"name": "adder", "version": "1.0.0"}).encode(), "wasm"),
        (json.dumps({**json_upload(), "wasm": 12}).encode(), "wasm"),
        (json.dumps({**json_upload(), "wasm": "!!not base64!!"}).encode(), "wasm"),
        (json.dumps({**json_upload(), "build": "abc"}).encode(), "build"),
        (json.dumps({**json_upload(), "build": {"sha": "abc"}}).encode(), "build.sha"),
        (json.dumps({**json_upload(), "build": {"commit": 5}}).encode(), "build.commit"),
        (json.dumps({**json_upload(), "build": {"timestamp": "soon"}}).encode(), "build.timestamp"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_a_bad_json_upload_is_a_400_naming_the_field(api: Api, payload: bytes, field: str) -> None:
    response = await api.client.post(MODULES, data=payload, headers={"Content-Type": "application/json"})
    body = await error_of(response, 400)
    assert body["field"] == field and body["message"].startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("parts", "field"),
    [
        ([("name", "adder"), ("version", "1.0.0")], "wasm"),
        ([("version", "1.0.0"), ("wasm", ADD)], "name"),
        ([("name", "adder"), ("wasm", ADD)], "version"),
        ([("name", "adder"), ("version", "1.0.0"), ("wasm", ADD), ("colour", "blue")], "colour"),
        ([("name", "adder"), ("name", "other"), ("version", "1.0.0"), ("wasm", ADD)], "name"),
        ([("name", b"\xff\xfe"), ("version", "1.0.0"), ("wasm", ADD)], "name"),
    ],
    ids=["no-wasm", "no-name", "no-version", "unknown-part", "twice", "not-utf8"],
)
async def test_a_bad_multipart_upload_is_a_400_naming_the_field(api: Api, parts: list[Any], field: str) -> None:
    form = aiohttp.FormData(default_to_multipart=True)
    for name, value in parts:
        if isinstance(value, bytes):
            form.add_field(name, value, filename=f"{name}.bin", content_type="application/octet-stream")
        else:
            form.add_field(name, value)
    body = await error_of(await api.client.post(MODULES, data=form), 400)
    assert body["field"] == field


async def test_a_malformed_multipart_body_is_a_400(api: Api) -> None:
    response = await api.client.post(
        MODULES, data=b"--xyz\r\ngarbage", headers={"Content-Type": "multipart/form-data; boundary=abc"}
    )
    assert response.status == 400
    assert (await api.client.get(MODULES)).status == 200  # and the server keeps serving


async def test_other_content_types_are_a_415(api: Api) -> None:
    body = await error_of(await api.client.post(MODULES, data=b"hello", headers={"Content-Type": "text/plain"}), 415)
    assert "multipart/form-data" in body["message"]


async def test_oversized_uploads_are_a_413(tmp_path: Path) -> None:
    async for api in make_api(tmp_path, limits=RegistryLimits(max_module_bytes=4096)):
        big = data_module(os.urandom(1 << 21))  # 2 MB: over the ~1 MB slack of either route
        response = await post_json(api, json_upload(data=big))
        assert (await error_of(response, 413))["error"] == "payload_too_large"
        form = aiohttp.FormData()
        form.add_field("name", "big")
        form.add_field("version", "1.0.0")
        form.add_field("wasm", io.BytesIO(data_module(os.urandom(8192))), filename="big.wasm")
        body = await error_of(await api.client.post(MODULES, data=form), 413)
        assert body["field"] == "wasm"
        # Within the body cap but over the module limit: the registry's own 400.
        body = await error_of(await post_json(api, json_upload(data=data_module(bytes(8192)))), 400)
        assert "limited to 4096 bytes" in body["message"]


async def test_listing_and_reading_modules(api: Api) -> None:
    await post_json(api, json_upload("adder", "1.0.0"))
    await post_json(api, json_upload("hello", "1.0.0", HELLO))
    listed = await (await api.client.get(MODULES)).json()
    assert [m["id"] for m in listed["modules"]] == ["adder-v1.0.0", "hello-v1.0.0"]
    only = await (await api.client.get(MODULES, params={"name": "hello"})).json()
    assert [m["id"] for m in only["modules"]] == ["hello-v1.0.0"]
    assert (await error_of(await api.client.get(MODULES, params={"name": "Bad Name"}), 400))["field"] == "name"
    one = await (await api.client.get(f"{MODULES}/hello-v1.0.0")).json()
    assert one["wasi"]["version"] == "preview1"
    assert (await error_of(await api.client.get(f"{MODULES}/nope-v1.0.0"), 404))["error"] == "not_found"
    # Everything the fleet model accepts registers: a leading digit, build metadata in the version.
    created = await post_json(api, json_upload("7zip", "1.0.0+build.5"))
    assert (await created.json())["id"] == "7zip-v1.0.0+build.5"
    assert (await api.client.get(f"{MODULES}/7zip-v1.0.0+build.5/binary")).status == 200


async def test_nodes_download_the_verified_binary(api: Api) -> None:
    big = data_module(os.urandom(3 << 20))
    created = await (await post_json(api, json_upload("big", "1.0.0", big))).json()
    response = await api.client.get(f"{MODULES}/big-v1.0.0/binary")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/wasm"
    assert response.headers["X-Hotswap-Digest"] == created["digest"]
    assert int(response.headers["Content-Length"]) == len(big)
    assert await response.read() == big
    cached = await api.client.get(f"{MODULES}/big-v1.0.0/binary", headers={"If-None-Match": f'"{created["digest"]}"'})
    assert cached.status == 304
    head = await api.client.head(f"{MODULES}/big-v1.0.0/binary")
    assert head.status == 200 and head.headers["X-Hotswap-Digest"] == created["digest"]
    by_digest = await api.client.get(f"/api/v1/wasm/blobs/{created['digest']}")
    assert await by_digest.read() == big and "immutable" in by_digest.headers["Cache-Control"]
    bare = await api.client.get(f"/api/v1/wasm/blobs/{digest_hex(created['digest'])}")
    assert bare.status == 200
    assert (await error_of(await api.client.get(f"{MODULES}/nope-v1.0.0/binary"), 404))["error"] == "not_found"


async def test_bad_and_unknown_digests(api: Api) -> None:
    body = await error_of(await api.client.get("/api/v1/wasm/blobs/sha256:xyz"), 400)
    assert body["field"] == "digest"
    await error_of(await api.client.get(f"/api/v1/wasm/blobs/sha256:{'0' * 64}"), 404)


async def test_a_corrupted_binary_is_never_served(api: Api) -> None:
    created = await (await post_json(api, json_upload())).json()
    overwrite_object(api.registry.blobs, BLOBS_PREFIX + digest_hex(created["digest"]), b"rotten bits")
    for path in (f"{MODULES}/adder-v1.0.0/binary", f"/api/v1/wasm/blobs/{created['digest']}"):
        response = await api.client.get(path)
        body = await error_of(response, 500)
        assert body["error"] == "corrupted" and created["digest"] in body["message"]


async def test_delete_is_refused_while_in_use(api: Api) -> None:
    await post_json(api, json_upload())
    api.in_use.add("adder-v1.0.0")
    assert (await error_of(await api.client.delete(f"{MODULES}/adder-v1.0.0"), 409))["error"] == "in_use"
    api.in_use.clear()
    response = await api.client.delete(f"{MODULES}/adder-v1.0.0")
    assert response.status == 204
    await error_of(await api.client.get(f"{MODULES}/adder-v1.0.0"), 404)
    await error_of(await api.client.delete(f"{MODULES}/adder-v1.0.0"), 404)


async def test_the_in_use_set_may_come_from_a_coroutine(tmp_path: Path) -> None:
    async def in_use() -> Collection[str]:
        return {"adder-v1.0.0"}

    async for api in make_api(tmp_path, modules_in_use=in_use):
        await post_json(api, json_upload())
        await error_of(await api.client.delete(f"{MODULES}/adder-v1.0.0"), 409)


async def test_roles_come_from_the_authentication_seam(tmp_path: Path) -> None:
    async def by_header(request: web.Request) -> Principal:
        role = request.headers.get("X-Role")
        if role is None:
            raise ApiError(401, "unauthorized", "no credentials")
        return Principal(f"someone-{role}", frozenset({role}))

    @public
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"who": principal(request).subject})

    def health_route(app: web.Application, deps: ApiDeps) -> None:
        app.router.add_get("/health", health)

    async for api in make_api(tmp_path, authenticate=by_header, routes=(*ROUTE_FILES, health_route)):
        await error_of(await api.client.get(MODULES), 401)
        assert await (await api.client.get("/health")).json() == {"who": "anonymous"}
        viewer = {"X-Role": "viewer"}
        assert (await api.client.get(MODULES, headers=viewer)).status == 200
        assert (await error_of(await post_json(api, json_upload(), headers=viewer), 403))["error"] == "forbidden"
        developer = {"X-Role": "developer"}
        assert (await post_json(api, json_upload(), headers=developer)).status == 201
        await error_of(await api.client.delete(f"{MODULES}/adder-v1.0.0", headers=developer), 403)
        assert (await api.client.delete(f"{MODULES}/adder-v1.0.0", headers={"X-Role": "admin"})).status == 204
        actors = [e.actor for e in api.registry.state.audit_log()]
        assert actors == ["someone-developer", "someone-admin"]


async def test_unknown_routes_and_methods_answer_json(api: Api) -> None:
    assert (await error_of(await api.client.get("/api/v1/wasm/nothing"), 404))["error"] == "not_found"
    assert (await error_of(await api.client.put(MODULES), 405))["error"] == "method_not_allowed"


async def test_a_route_file_plugs_in_and_failures_never_take_the_server_down(tmp_path: Path) -> None:
    async def whoami(request: web.Request) -> web.Response:
        return web.json_response({"subject": principal(request).subject})

    async def crash(request: web.Request) -> web.Response:
        raise RuntimeError("bug")

    async def store_down(request: web.Request) -> web.Response:
        raise StoreError("database unreachable")

    async def refuse(request: web.Request) -> web.Response:
        raise bad_request("thing", "is wrong")

    def extra_routes(app: web.Application, deps: ApiDeps) -> None:
        app.router.add_get("/api/v1/wasm/whoami", whoami)
        app.router.add_get("/crash", crash)
        app.router.add_get("/store", store_down)
        app.router.add_get("/refuse", refuse)

    registry = Registry(open_state_store(data_dir=tmp_path), open_blob_store(data_dir=tmp_path))
    app = create_app(ApiDeps(registry=registry), routes=[extra_routes])
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert await (await client.get("/api/v1/wasm/whoami")).json() == {"subject": "anonymous"}
        assert (await error_of(await client.get("/crash"), 500))["error"] == "internal"
        assert (await error_of(await client.get("/store"), 503))["message"] == "database unreachable"
        assert (await error_of(await client.get("/refuse"), 400))["field"] == "thing"
        assert (await client.get("/api/v1/wasm/whoami")).status == 200
        await error_of(await client.get(MODULES), 404)  # only the route files given are mounted
    registry.state.close()
