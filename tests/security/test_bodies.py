"""Request bodies are read whole, however they arrive, and nesting is bounded (issue 16, item 6).

A body that comes in several TCP segments (a slow client, chunked transfer) used to be cut at its
first segment ("not JSON"); a deeply nested one was a 500. On a real control plane (and the webhook
handler on a real server): each is read whole up to the endpoint's limit, and nesting beyond
MAX_JSON_DEPTH is a 400 that says so.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from reconciler.api.base import MAX_JSON_DEPTH
from reconciler.gitsource.webhook import WEBHOOK_PATH, sign, webhook_handler
from tests.api.conftest import call, plane  # noqa: F401 - the fixture
from tests.e2e.cluster import Cluster


async def _trickle(data: bytes, pieces: int = 8) -> AsyncIterator[bytes]:
    """The body in `pieces` writes with a pause between them: the server sees several segments."""
    step = -(-len(data) // pieces)
    for start in range(0, len(data), step):
        yield data[start : start + step]
        await asyncio.sleep(0.02)  # a slow client, not a synchronisation


async def _post(url: str, token: str, data: bytes, *, chunked: bool) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if not chunked:
        headers["Content-Length"] = str(len(data))
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=_trickle(data), headers=headers, chunked=chunked or None) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_a_body_in_many_segments_is_read_whole(plane: Cluster) -> None:  # noqa: F811
    body = {"module": "calc", "function": "add", "args": [1, 2], "pad": "x" * 500_000}  # a valid 500 KB body
    data = json.dumps(body).encode()
    for chunked in (False, True):
        status, answer = await _post(
            f"{plane.url}/api/v1/wasm/execute", plane.token("developer"), data, chunked=chunked
        )
        # parsed whole: the control plane got as far as looking for a node (it has none)
        assert status in (404, 503) and answer["error"] in ("not_found", "no_node"), (chunked, status, answer)


async def test_a_body_over_the_limit_is_413_even_without_a_length(plane: Cluster) -> None:  # noqa: F811
    data = json.dumps({"image": "x" * (2 << 20)}).encode()  # over the 1 MiB JSON limit of /deployments
    status, answer = await _post(f"{plane.url}/api/v1/wasm/deployments", plane.token("admin"), data, chunked=True)
    assert status == 413 and answer["error"] == "payload_too_large"


async def test_deep_nesting_is_a_400_that_says_so(plane: Cluster) -> None:  # noqa: F811
    token = plane.token("admin")
    for depth in (MAX_JSON_DEPTH + 1, 100_000):
        nested = "[" * depth + "]" * depth
        upload = f'{{"name": "deep", "version": "1.0.0", "wasm": {nested}}}'.encode()
        for path in ("/api/v1/wasm/modules", "/api/v1/wasm/execute", "/api/v1/wasm/deployments"):
            answer = await call(
                plane.url, "POST", path, token, data=upload, headers={"Content-Type": "application/json"}
            )
            assert answer.status == 400, (path, depth, answer.status, answer.body)
            assert f"nested more than {MAX_JSON_DEPTH} levels" in answer.body["message"]
    ok = "[" * (MAX_JSON_DEPTH - 1) + "1" + "]" * (MAX_JSON_DEPTH - 1)
    answer = await call(plane.url, "POST", "/api/v1/wasm/execute", token, data=f'{{"module": "calc", "args": {ok}}}')
    assert answer.status in (404, 503), answer.body  # within the bound: parsed, and no node serves calc here


async def test_the_webhook_checks_the_whole_body() -> None:
    triggered: list[int] = []
    app = web.Application()
    app.router.add_post(WEBHOOK_PATH, webhook_handler("s3cret", lambda: triggered.append(1), branch="main"))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        data = json.dumps({"ref": "refs/heads/main", "pad": "y" * 200_000}).encode()
        headers = {"X-Hotswap-Signature": sign("s3cret", data), "Content-Type": "application/json"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(server.make_url(WEBHOOK_PATH), data=_trickle(data), headers=headers) as response,
        ):
            assert response.status == 202, await response.text()
        assert triggered == [1]
    finally:
        await server.close()
