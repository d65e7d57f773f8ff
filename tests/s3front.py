"""A recording HTTP front for the session's S3 server (moto_server), for tests of presigned URLs.

Where it sits: between everything that talks S3 in a test (the control plane's blob store, an edge
node following a presigned URL) and moto_server. It forwards every request as it came and keeps
what it saw (method, path, query, headers), so a test can tell who read an object and with what
credentials. It runs on a thread and an event loop of its own: the control plane's blob store is
synchronous and may be called from the test's own loop.

It adds the one check of real S3 that moto does not make (moto 5 neither verifies a presigned
signature nor its expiry; see `S3Response._key_response` in moto/s3/responses.py): a presigned
request whose `X-Amz-Date` + `X-Amz-Expires` has passed is refused as S3 refuses it, 403 with an
`AccessDenied` / `Request has expired` error document. Everything else is moto's answer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, MultiDict

from tests.services import S3Server, free_port

HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})
EXPIRED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Request has expired</Message></Error>"
)


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    query: MultiDict[str]
    headers: CIMultiDict[str]
    status: int

    @property
    def presigned(self) -> bool:
        return "X-Amz-Signature" in self.query

    def reads(self, key_suffix: str) -> bool:
        return self.method == "GET" and self.path.endswith(key_suffix)


class S3Front:
    def __init__(self, upstream: S3Server) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.seen: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="s3-front", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, bucket: str, **options: str) -> str:
        """An `s3://` blob URL for `bucket` through this front (`presign="60"`, ...)."""
        more = "".join(f"&{key}={value}" for key, value in options.items())
        return (
            f"s3://{bucket}?endpoint={self.endpoint}&secure=false"
            f"&access_key={self.upstream.access_key}&secret_key={self.upstream.secret_key}{more}"
        )

    def requests(self) -> list[SeenRequest]:
        with self._lock:
            return list(self.seen)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        query = MultiDict(request.query)
        if _expired(query):
            self._record(request, query, 403)
            return web.Response(status=403, body=EXPIRED, content_type="application/xml")
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._session.request(
            request.method,
            f"http://{self.upstream.endpoint}{request.rel_url}",
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as answer:
            body = await answer.read()
            self._record(request, query, answer.status)
            out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
            if request.method == "HEAD":  # the size is in the length header (minio's stat reads it)
                out["Content-Length"] = answer.headers.get("Content-Length", "0")
                return web.Response(status=answer.status, headers=out)
            return web.Response(status=answer.status, body=body, headers=out)

    def _record(self, request: web.Request, query: MultiDict[str], status: int) -> None:
        seen = SeenRequest(request.method, request.path, query, CIMultiDict(request.headers), status)
        with self._lock:
            self.seen.append(seen)


def _expired(query: MultiDict[str]) -> bool:
    """Whether a presigned request is past its `X-Amz-Date` + `X-Amz-Expires`, as S3 judges it."""
    if "X-Amz-Date" not in query or "X-Amz-Expires" not in query:
        return False
    signed = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return datetime.now(UTC) > signed + timedelta(seconds=int(query["X-Amz-Expires"]))


@contextmanager
def running_front(upstream: S3Server) -> Iterator[S3Front]:
    front = S3Front(upstream)
    front.start()
    try:
        yield front
    finally:
        front.stop()
