"""The console's live stream on a real control plane: a hello, then a `nodes` message when a node is
drained, a `pass` message after a reconcile pass, an `event` message for a controller event; and a
plane that stops with streams open stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from tests.api.conftest import call
from tests.e2e.cluster import Cluster, poll
from tests.ui.conftest import Stream, console


@asynccontextmanager
async def stream(url: str, headers: dict[str, str]) -> AsyncIterator[Stream]:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url + "/ui/events", headers=headers) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert r.headers["Cache-Control"] == "no-cache" and r.headers["X-Accel-Buffering"] == "no"
        first = await r.content.readline()
        assert first == b"retry: 1000\n"
        yield Stream(r)


async def test_the_stream_says_hello_then_nodes_pass_and_event(plane_with_nodes: Cluster) -> None:
    cluster = plane_with_nodes
    async with stream(cluster.url, cluster.headers("operator")) as live:
        hello = await live.message()
        assert hello == {"kind": "hello", "subject": "test-operator", "roles": ["operator"]}
        answer = await call(cluster.url, "POST", "/api/v1/wasm/nodes/edge-us-east-1/drain", cluster.token("operator"))
        assert answer.status == 202
        await live.next("nodes")
        cluster.plane.controller.poke()
        passed = await live.next("pass")
        assert passed["revision"] == cluster.plane.controller.state.revision or passed["revision"] is None
        assert isinstance(passed["at"], float)
        cluster.plane.controller.report("ConsoleTest", "a test event", "calc")
        event = await live.next("event", event__reason="ConsoleTest")
        assert event["event"]["message"] == "a test event" and event["event"]["module"] == "calc"
        await call(cluster.url, "DELETE", "/api/v1/wasm/nodes/edge-us-east-1/drain", cluster.token("operator"))


async def test_the_session_cookie_opens_the_stream(plane: Cluster) -> None:
    async with console(plane, "viewer", "vera") as ui, ui.http.get(ui.url + "/ui/events") as r:
        assert r.status == 200
        live = Stream(r)
        assert await live.next("hello", subject="vera")


async def test_the_stream_needs_authentication(plane: Cluster) -> None:
    answer = await call(plane.url, "GET", "/ui/events")
    assert answer.status == 401


async def test_a_slow_subscriber_is_dropped_not_buffered(plane: Cluster) -> None:
    broadcaster = plane.plane.broadcaster
    subscriber = broadcaster.subscribe("slow")
    for i in range(300):
        broadcaster.publish({"kind": "event", "n": i})
    assert subscriber.closed and broadcaster.streams == 0


async def test_stop_ends_open_streams(plane: Cluster) -> None:
    cluster = plane
    async with stream(cluster.url, cluster.headers("viewer")) as live:
        await live.next("hello")
        await poll(lambda: cluster.plane.broadcaster.streams == 1, "the stream to be counted")
        stopping = asyncio.create_task(cluster.plane.stop())
        ended = await live.message()
        assert ended is None  # the stream ended: the plane closed it
        await stopping
        assert stopping.done() and stopping.exception() is None
    # stop_cluster stops the plane again: a second stop must be harmless
    cluster.plane.stop = _noop  # type: ignore[method-assign]


async def _noop() -> None:
    return None
