"""A stopping control plane turns its long-polls away with 503 and `Connection: close` (never an
empty 204 at once, which sent nodes straight back in a tight loop), and its stop finishes while
real nodes are polling it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.e2e.cluster import start_cluster, stop_cluster

NODE = "edge-us-east-1"


async def test_long_polls_get_503_and_close_while_the_plane_stops(tmp_path: Path) -> None:
    cluster = await start_cluster(tmp_path, [(NODE, "us-east")])
    try:
        await cluster.wait_ready(1)
        generation = cluster.plane.hub.table(NODE).generation  # type: ignore[union-attr]
        url = f"{cluster.url}/api/v1/wasm/nodes/{NODE}/assignment"
        async with aiohttp.ClientSession(headers=cluster.headers("admin")) as session:
            poll = asyncio.create_task(session.get(url, params={"after": str(generation), "wait": "30"}))
            while not cluster.plane.hub._changed.get(NODE):  # the poll is parked in the hub
                await asyncio.sleep(0.01)
            stopping = asyncio.create_task(cluster.plane.stop())
            response = await poll
            assert response.status == 503 and response.headers.get("Connection", "").lower() == "close"
            assert response.headers.get("Retry-After") == "1"
            assert (await response.json())["error"] == "stopping"
            response.release()
            await stopping  # and the stop itself ends (the test's own time bound would fail it)
    finally:
        await asyncio.gather(*(asyncio.to_thread(node.stop) for node in cluster.nodes))


async def test_stop_cluster_still_works_on_a_plane_with_nodes(tmp_path: Path) -> None:
    cluster = await start_cluster(tmp_path, [(NODE, "us-east")])
    await cluster.wait_ready(1)
    await stop_cluster(cluster)
    assert cluster.plane.hub._closing
