"""A stopping control plane turns its long-polls away with 503 and `Connection: close` (never an
empty 204 at once, which sent nodes straight back in a tight loop), and its stop finishes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from edge.nodeapi import NODES_PATH
from tests.api.conftest import call
from tests.e2e.cluster import poll, start_cluster

NODE = "edge-waiting"  # a node of the test's own: only its long-poll waits in the hub


async def test_long_polls_get_503_and_close_while_the_plane_stops(tmp_path: Path) -> None:
    cluster = await start_cluster(tmp_path, [])
    admin = cluster.token("admin")
    # a region the fleet places nothing in: no pass gives the node a newer table, which would answer
    # its long-poll before it parks (a busy machine's pass can publish after the generation is read)
    registration = {"id": NODE, "region": "nowhere", "hostname": "h", "url": "http://127.0.0.1:9"}
    assert (await call(cluster.url, "POST", NODES_PATH, admin, json=registration)).status == 201
    generation = cluster.plane.hub.table(NODE).generation  # type: ignore[union-attr]
    url = f"{cluster.url}{NODES_PATH}/{NODE}/assignment"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin}"}) as session:
        waiting = asyncio.create_task(session.get(url, params={"after": str(generation), "wait": "30"}))
        await poll(lambda: NODE in cluster.plane.hub._changed, "the long-poll parked in the hub")
        stopping = asyncio.create_task(cluster.plane.stop())
        response = await waiting
        assert response.status == 503 and response.headers.get("Connection", "").lower() == "close"
        assert response.headers.get("Retry-After") == "1"
        assert (await response.json())["error"] == "stopping"
        response.release()
        await stopping  # and the stop itself ends (the test's own time bound would fail it)
