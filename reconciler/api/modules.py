"""Module routes: CI systems upload binaries here before they open a pull request, edge nodes download
them, people list and delete them.

    POST   /api/v1/wasm/modules               JSON {"name","version","wasm": base64,"build"} or
                                              multipart (name, version, file wasm, build.commit,
                                              build.timestamp) -> 201 (200 when already there)
    GET    /api/v1/wasm/modules[?name=N]      {"modules": [...]}; ?limit=&offset=&q= for a page
                                              (then also "total" and "offset")
    GET    /api/v1/wasm/modules/{id}          one module
    GET    /api/v1/wasm/modules/{id}/binary   the raw wasm bytes, verified, digest in X-Hotswap-Digest
    GET    /api/v1/wasm/blobs/{digest}        the same by digest (immutable, cacheable forever); a
                                              node that asks (X-Hotswap-Blob-Direct: br) gets a 307
                                              to a presigned S3 URL when the blobs are in S3
    DELETE /api/v1/wasm/modules/{id}          204; 409 while desired state or a rollout uses it

Hashing, compressing and S3 calls run in a worker thread (`asyncio.to_thread`), never on the loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable
from typing import Any

from aiohttp import BodyPartReader, MultipartReader, web

from edge.nodeapi import BLOB_DIRECT_HEADER, BLOB_ENCODING_HEADER
from reconciler.api.base import (
    ANY_ROLE,
    ApiDeps,
    ApiError,
    bad_request,
    deps,
    modules_in_use,
    page_of,
    parse_json,
    read_body,
    require,
)
from reconciler.apply.registry import check_name, module_json
from reconciler.store.blobs import STORED_ENCODING, VerifiedBlob, digest_hex
from reconciler.store.objects import CHUNK
from reconciler.store.records import BuildInfo

WRITERS = ("developer", "admin")
DELETERS = ("admin",)
READERS = (*sorted(ANY_ROLE), "node")
DIGEST_HEADER = "X-Hotswap-Digest"
FIELD_BYTES = 64 * 1024  # name, version, build.* in a multipart upload
JSON_FIELDS = frozenset({"name", "version", "wasm", "build"})
BUILD_FIELDS = frozenset({"commit", "timestamp"})
ROUTES = web.RouteTableDef()  # each handler names its route; setup() adds them all


def setup(app: web.Application, api_deps: ApiDeps) -> None:
    app.router.add_routes(ROUTES)


def upload_limits(max_module_bytes: int) -> tuple[int, int]:
    """(largest JSON body, largest multipart body): each fits a module of the largest size allowed."""
    base64_size = 4 * -(-max_module_bytes // 3)
    return base64_size + (1 << 20), max_module_bytes + (1 << 20)


@ROUTES.post("/api/v1/wasm/modules")
async def upload(request: web.Request) -> web.Response:
    who = require(request, *WRITERS)
    registry = deps(request).registry
    json_limit, multipart_limit = upload_limits(registry.limits.max_module_bytes)
    content_type = request.content_type
    if content_type == "multipart/form-data":
        _check_length(request, multipart_limit)
        name, version, data, build = await _read_multipart(request, registry.limits.max_module_bytes)
    elif content_type == "application/json" or content_type.endswith("+json"):
        _check_length(request, json_limit)
        body = await read_body(request, json_limit)
        name, version, data, build = await asyncio.to_thread(_parse_json_upload, body)  # 60+ MB of JSON
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {content_type or '(none)'}: send application/json "
            '{"name", "version", "wasm": "<base64>"} or multipart/form-data with name, version and a file wasm',
        )
    registration = await asyncio.to_thread(registry.register, name, version, data, build, actor=who.subject)
    if registration.created:
        deps(request).registered()  # a pass stalled on this binary (MissingBinary) goes on at once
    return web.json_response(
        module_json(registration.module),
        status=201 if registration.created else 200,
        headers={"Location": f"/api/v1/wasm/modules/{registration.module.id}"},
    )


def _check_length(request: web.Request, limit: int) -> None:
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "payload_too_large", f"the request body ({request.content_length} bytes) is over {limit}")


def _parse_json_upload(body: bytes) -> tuple[str, str, bytes, BuildInfo | None]:
    document: Any = parse_json(body)
    if not isinstance(document, dict):
        raise bad_request("body", 'must be a JSON object {"name", "version", "wasm": "<base64>", "build"}')
    for key in document:
        if key not in JSON_FIELDS:
            raise bad_request(str(key), f"unknown field (expected {', '.join(sorted(JSON_FIELDS))})")
    name, version = _text(document, "name"), _text(document, "version")
    encoded = document.get("wasm")
    if encoded is None:
        raise bad_request("wasm", "is required (the module's bytes, base64-encoded)")
    if not isinstance(encoded, str):
        raise bad_request("wasm", "must be a base64 string")
    if "\n" in encoded or "\r" in encoded or " " in encoded:
        encoded = "".join(encoded.split())  # as `base64` wraps it
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_request("wasm", f"not valid base64 ({exc})") from None
    return name, version, data, _build(document.get("build"))


def _text(document: dict[str, Any], key: str) -> str:
    value = document.get(key)
    if value is None:
        raise bad_request(key, "is required")
    if not isinstance(value, str):
        raise bad_request(key, f"must be a string, not {type(value).__name__}")
    return value


def _build(value: object) -> BuildInfo | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request("build", 'must be an object {"commit", "timestamp"}')
    for key, item in value.items():
        if key not in BUILD_FIELDS:
            raise bad_request(f"build.{key}", "unknown field (expected commit, timestamp)")
        if item is not None and not isinstance(item, str):
            raise bad_request(f"build.{key}", "must be a string")
    return BuildInfo(commit=value.get("commit"), timestamp=value.get("timestamp"))


async def _read_multipart(request: web.Request, max_module: int) -> tuple[str, str, bytes, BuildInfo | None]:
    try:
        reader = await request.multipart()
        fields: dict[str, bytes] = {}
        while (part := await reader.next()) is not None:
            if isinstance(part, MultipartReader) or not isinstance(part, BodyPartReader):
                raise bad_request("body", "nested multipart is not supported")
            name = part.name or ""
            if name not in ("name", "version", "wasm", "build.commit", "build.timestamp"):
                raise bad_request(name or "(unnamed part)", "unknown field (expected name, version, wasm, build.*)")
            if name in fields:
                raise bad_request(name, "given twice")
            limit = max_module if name == "wasm" else FIELD_BYTES
            fields[name] = await _read_part(part, limit, name)
    except ValueError as exc:  # aiohttp's complaints about a malformed multipart body
        raise bad_request("body", f"malformed multipart ({exc})") from None
    if "wasm" not in fields:
        raise bad_request("wasm", "is required (a file part with the module's bytes)")
    text = {}
    for key in ("name", "version", "build.commit", "build.timestamp"):
        if key in fields:
            try:
                text[key] = fields[key].decode()
            except UnicodeDecodeError:
                raise bad_request(key, "is not UTF-8 text") from None
    for key in ("name", "version"):
        if key not in text:
            raise bad_request(key, "is required")
    build = None
    if "build.commit" in text or "build.timestamp" in text:
        build = BuildInfo(commit=text.get("build.commit"), timestamp=text.get("build.timestamp"))
    return text["name"], text["version"], fields["wasm"], build


async def _read_part(part: BodyPartReader, limit: int, name: str) -> bytes:
    received = bytearray()
    while chunk := await part.read_chunk(CHUNK):
        received += chunk
        if len(received) > limit:
            raise ApiError(413, "payload_too_large", f"{name}: larger than {limit} bytes", name)
    return bytes(received)


@ROUTES.get("/api/v1/wasm/modules")
async def list_modules(request: web.Request) -> web.Response:
    require(request, *READERS)
    name = request.query.get("name")
    if name is not None:
        check_name(name)
    page = page_of(request)
    records = await asyncio.to_thread(deps(request).registry.modules, name)
    found = [module_json(r) for r in records if page.matches(r.id, r.name, r.version)]
    return web.json_response(page.window("modules", found))


@ROUTES.get("/api/v1/wasm/modules/{id}")
async def get_module(request: web.Request) -> web.Response:
    require(request, *READERS)
    record = await asyncio.to_thread(deps(request).registry.get, request.match_info["id"])
    return web.json_response(module_json(record))


@ROUTES.get("/api/v1/wasm/modules/{id}/binary")
async def get_binary(request: web.Request) -> web.StreamResponse:
    require(request, *READERS)
    registry = deps(request).registry
    record = await asyncio.to_thread(registry.get, request.match_info["id"])
    # A version is immutable while it exists, but may be deleted and registered anew: revalidate.
    return await _send(request, record.digest, lambda: registry.open_blob(record.digest), "no-cache")


@ROUTES.get("/api/v1/wasm/blobs/{digest}")
async def get_blob(request: web.Request) -> web.StreamResponse:
    who = require(request, *READERS)
    registry = deps(request).registry
    try:
        digest = "sha256:" + digest_hex(request.match_info["digest"])
    except ValueError as exc:
        raise bad_request("digest", str(exc)) from None
    # Only a node that asks: it decodes the stored object and checks the digest itself, where an
    # older node (or a person's browser) would take brotli bytes for wasm. The node falls back to
    # asking without the header when it cannot reach the URL.
    if "node" in who.roles and request.headers.get(BLOB_DIRECT_HEADER) == STORED_ENCODING:
        url = await asyncio.to_thread(registry.blobs.presigned_url, digest)
        if url is not None:
            headers = {
                "Location": url,
                DIGEST_HEADER: digest,
                BLOB_ENCODING_HEADER: STORED_ENCODING,
                "Cache-Control": "no-store",  # the URL expires; no cache may hand it out later
            }
            return web.Response(status=307, headers=headers)
    return await _send(request, digest, lambda: registry.open_blob(digest), "public, max-age=31536000, immutable")


async def _send(
    request: web.Request, digest: str, open_blob: Callable[[], VerifiedBlob], cache: str
) -> web.StreamResponse:
    """Stream a binary once it has been verified whole; answer 304 to a client that has it."""
    headers = {DIGEST_HEADER: digest, "ETag": f'"{digest}"', "Cache-Control": cache}
    if request.headers.get("If-None-Match", "").strip() in (f'"{digest}"', digest):
        return web.Response(status=304, headers=headers)
    blob = await asyncio.to_thread(open_blob)
    try:
        response = web.StreamResponse(headers=headers)
        response.content_type = "application/wasm"
        response.content_length = blob.size
        await response.prepare(request)
        if request.method != "HEAD":
            while chunk := await asyncio.to_thread(blob.file.read, CHUNK):
                await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        blob.close()


@ROUTES.delete("/api/v1/wasm/modules/{id}")
async def delete_module(request: web.Request) -> web.Response:
    who = require(request, *DELETERS)
    in_use = await modules_in_use(request)
    await asyncio.to_thread(deps(request).registry.delete, request.match_info["id"], in_use, actor=who.subject)
    return web.Response(status=204)
