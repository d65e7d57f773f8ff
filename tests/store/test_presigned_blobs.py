"""Binaries fetched from S3 itself: the control plane redirects a node to a presigned URL.

Real parts throughout: the control plane's API on a real aiohttp server, its blob store in a real S3
server (moto_server) behind a recording front (`tests.s3front`: what reached S3, and with which
headers), and a node's own fetch path (`Router` -> `DiskBlobs` -> `ControlPlaneBlobs`) loading the
binary into wasmtime. Only the authentication seam is the test's: a fixed bearer token per role.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import brotli
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from edge.agent import Agent
from edge.blobfetch import DIRECT_PAUSE_SECONDS, MAX_BINARY_BYTES, ControlPlaneBlobs, ControlPlaneLink
from edge.nodeapi import BLOB_DIRECT_HEADER, Registration
from edge.protocol import ModuleEntry
from edge.router import Router
from edge.runtime import Runtime
from edge.tablecache import DiskBlobs
from reconciler.api.app import ROUTE_FILES, create_app
from reconciler.api.base import ApiDeps, ApiError, Principal
from reconciler.apply.registry import Registry
from reconciler.store.blobs import BLOBS_PREFIX, BlobStore, digest_hex
from reconciler.store.errors import StoreConfigError
from reconciler.store.objects import S3Objects
from reconciler.store.state import open_state_store
from tests.s3front import S3Front, running_front
from tests.services import S3Server
from tests.store.test_blobs import overwrite_object
from tests.store.test_registry import ADD, ADD2

NODE_TOKEN = "node-secret-token"
VIEWER_TOKEN = "viewer-token"


async def by_bearer(request: web.Request) -> Principal:
    given = request.headers.get("Authorization")
    if given == f"Bearer {NODE_TOKEN}":
        return Principal("edge-test-1", frozenset({"node"}))
    if given == f"Bearer {VIEWER_TOKEN}":
        return Principal("someone", frozenset({"viewer"}))
    raise ApiError(401, "unauthorized", "no credentials")


@dataclass
class Plane:
    url: str
    registry: Registry
    front: S3Front

    def register(self, name: str, data: bytes) -> str:
        return self.registry.register(name, "1.0.0", data).module.digest


@dataclass
class EdgeNode:
    router: Router
    fetcher: ControlPlaneBlobs
    cache: Path

    async def load(self, name: str, digest: str) -> dict[str, str]:
        """Apply a one-module table; what failed to load (empty when it loaded)."""
        report = await self.router.apply_table([ModuleEntry(module=name, version="1.0.0", digest=digest)])
        return report.failed


@pytest.fixture
def front(s3_server: S3Server) -> Iterator[S3Front]:
    with running_front(s3_server) as started:
        yield started


async def start_plane(
    tmp_path: Path, front: S3Front, presign: str = "300", clock: Callable[[], datetime] | None = None
) -> AsyncIterator[Plane]:
    bucket = f"presign-{uuid.uuid4().hex[:12]}"
    blobs = BlobStore(S3Objects.from_url(front.url(bucket, presign=presign), clock=clock))
    registry = Registry(open_state_store(data_dir=tmp_path), blobs)
    app = create_app(ApiDeps(registry=registry, authenticate=by_bearer), ROUTE_FILES)
    async with TestServer(app, host="127.0.0.1") as server:
        yield Plane(str(server.make_url("")).rstrip("/"), registry, front)
    registry.state.close()


@pytest.fixture
async def plane(tmp_path: Path, front: S3Front) -> AsyncIterator[Plane]:
    async for started in start_plane(tmp_path, front):
        yield started


async def start_node(plane: Plane, cache: Path) -> AsyncIterator[EdgeNode]:
    """A node's fetch path as `edge.managed` wires it: router -> disk cache -> control plane."""
    link = ControlPlaneLink(plane.url, NODE_TOKEN)
    fetcher = ControlPlaneBlobs(link)
    router = Router(Runtime(), DiskBlobs(cache, fetcher))
    registration = Registration(id="edge-test-1", region="us-east", hostname="localhost", url="http://127.0.0.1:1")
    agent = Agent(link, registration, router)
    try:
        yield EdgeNode(router, fetcher, cache)
    finally:
        await agent.close()


@pytest.fixture
async def node(plane: Plane, tmp_path: Path) -> AsyncIterator[EdgeNode]:
    async for started in start_node(plane, tmp_path / "node-cache"):
        yield started


def reads_of(front: S3Front, digest: str, since: int = 0) -> list[tuple[bool, int, str | None]]:
    """(presigned, status, Authorization) of each GET of the binary's object that reached S3."""
    key = BLOBS_PREFIX + digest_hex(digest)
    return [(r.presigned, r.status, r.headers.get("Authorization")) for r in front.requests()[since:] if r.reads(key)]


async def test_a_node_loads_a_binary_from_s3_not_through_the_control_plane(plane: Plane, node: EdgeNode) -> None:
    digest = plane.register("adder", ADD)
    before = len(plane.front.requests())
    assert await node.load("adder", digest) == {}
    # One read of the object, by the node's presigned GET, and none by the control plane: had the
    # control plane streamed the bytes, its own signed GET (an Authorization header) would be here.
    assert reads_of(plane.front, digest, before) == [(True, 200, None)]
    assert node.fetcher.direct_fetches == 1
    assert (node.cache / f"{digest_hex(digest)}.wasm").read_bytes() == ADD
    # Nothing the node sent to S3 carried its token, in any header.
    for seen in plane.front.requests()[before:]:
        assert all(NODE_TOKEN not in value for value in seen.headers.values()), seen


async def test_only_a_node_that_asks_is_redirected(plane: Plane) -> None:
    digest = plane.register("adder", ADD)
    url = f"{plane.url}/api/v1/wasm/blobs/{digest}"
    node = {"Authorization": f"Bearer {NODE_TOKEN}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={**node, BLOB_DIRECT_HEADER: "br"}, allow_redirects=False) as answer:
            assert answer.status == 307
            assert answer.headers["Location"].startswith(f"http://{plane.front.endpoint}/")
            assert "X-Amz-Signature=" in answer.headers["Location"]
            assert answer.headers["Cache-Control"] == "no-store"
            assert answer.headers["X-Hotswap-Digest"] == digest
        for headers in (node, {"Authorization": f"Bearer {VIEWER_TOKEN}", BLOB_DIRECT_HEADER: "br"}):
            async with session.get(url, headers=headers, allow_redirects=False) as answer:
                assert answer.status == 200  # an older node, or a person: the verified wasm bytes
                assert await answer.read() == ADD


async def test_presign_0_keeps_binaries_streamed_by_the_control_plane(tmp_path: Path, front: S3Front) -> None:
    async for plane in start_plane(tmp_path, front, presign="0"):
        async for node in start_node(plane, tmp_path / "node-cache"):
            digest = plane.register("adder", ADD)
            before = len(front.requests())
            assert await node.load("adder", digest) == {}
            reads = reads_of(front, digest, before)
            assert reads and all(not presigned and auth is not None for presigned, _, auth in reads)
            assert node.fetcher.direct_fetches == 0


def test_presign_must_be_seconds_within_sigv4s_limit() -> None:
    for value in ("soon", "-1", str(7 * 24 * 3600 + 1)):
        with pytest.raises(StoreConfigError, match="presign"):
            S3Objects.from_url(f"s3://bucket?endpoint=127.0.0.1:1&presign={value}")


async def test_a_tampered_object_is_refused_by_the_node_and_not_kept(plane: Plane, node: EdgeNode) -> None:
    digest = plane.register("adder", ADD)
    other = "sha256:" + hashlib.sha256(ADD2).hexdigest()
    overwrite_object(plane.registry.blobs, BLOBS_PREFIX + digest_hex(digest), brotli.compress(ADD2))
    before = len(plane.front.requests())
    failed = await node.load("adder", digest)
    assert f"arrived with digest {other}; refused" in failed["adder@1.0.0"], failed
    assert reads_of(plane.front, digest, before) == [(True, 200, None)]  # the node's own read and check
    assert not (node.cache / f"{digest_hex(digest)}.wasm").exists()
    assert node.fetcher.direct_paused_until == 0  # wrong bytes are not an unreachable store


async def test_an_object_that_expands_past_the_module_limit_is_refused(plane: Plane, node: EdgeNode) -> None:
    digest = plane.register("adder", ADD)
    bomb = brotli.compress(b"\0" * (MAX_BINARY_BYTES + 1), quality=1)
    overwrite_object(plane.registry.blobs, BLOBS_PREFIX + digest_hex(digest), bomb)
    failed = await node.load("adder", digest)
    assert f"expands beyond {MAX_BINARY_BYTES} bytes; refused" in failed["adder@1.0.0"], failed
    assert not (node.cache / f"{digest_hex(digest)}.wasm").exists()


async def test_an_expired_url_is_reported_and_the_node_asks_the_control_plane(
    tmp_path: Path, front: S3Front, caplog: pytest.LogCaptureFixture
) -> None:
    def an_hour_ago() -> datetime:  # a control plane whose clock is behind S3's: every URL is stale
        return datetime.now(UTC) - timedelta(hours=1)

    caplog.set_level(logging.WARNING, logger="hotswap.edge.agent")
    async for plane in start_plane(tmp_path, front, clock=an_hour_ago):
        async for node in start_node(plane, tmp_path / "node-cache"):
            digest = plane.register("adder", ADD)
            before = len(front.requests())
            assert await node.load("adder", digest) == {}
            presigned, refused, _ = reads_of(front, digest, before)[0]
            assert (presigned, refused) == (True, 403)
            assert [(p, s) for p, s, _ in reads_of(front, digest, before)[1:]] == [(False, 200)]  # the control plane's
            warning = next(r.getMessage() for r in caplog.records if digest in r.getMessage())
            assert "403: AccessDenied: Request has expired" in warning, warning
            assert f"through the control plane for the next {DIRECT_PAUSE_SECONDS:.0f} s" in warning
            # For a while the node does not try S3 again: the next binary comes streamed at once.
            second = plane.register("adder2", ADD2)
            since = len(front.requests())
            assert await node.load("adder2", second) == {}
            assert [p for p, _, _ in reads_of(front, second, since)] == [False]
            assert node.fetcher.direct_fetches == 0
