"""A managed node stands alone: restarted while the control plane is down, it serves the table it kept
on disk (signed by the control plane) and says `ServingCachedTable` until the control plane answers;
a cached table that was changed on disk is refused, and the node serves nothing from it."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.cluster import Cluster, EdgeProcess, poll, start_cluster, stop_cluster

NODE, REGION = "edge-us-east-1", "us-east"
CALL = {"module": "greeter", "function": "greet", "args": {"name": "ada"}}
LISTENING = re.compile(rb"hotswap edge: node \S+ \(\S+\) on (http://127\.0\.0\.1:\d+)")


def table_file(cluster: Cluster) -> Path:
    return cluster.data / "cache" / NODE / "nodes" / NODE / "table.json"


async def restart_node(cluster: Cluster, node: EdgeProcess, workers: int = 1) -> tuple[EdgeProcess, str]:
    """Stop `node` and start it again on the same cache dir (with `workers` server processes); its new
    URL, read from its log."""
    node.stop()
    cluster.nodes.remove(node)
    before = len(LISTENING.findall(node.log.read_bytes()))
    again = cluster.start_node(NODE, REGION, workers=workers)
    found: list[bytes] = []

    def listening() -> bool:
        found[:] = LISTENING.findall(again.log.read_bytes())[before:]
        return bool(found) or again.process.poll() is not None

    await poll(listening, "the restarted node to listen")
    assert found, cluster.describe_nodes()
    return again, found[0].decode()


Restart = Callable[[Cluster, EdgeProcess], Awaitable[tuple[EdgeProcess, str]]]


async def restart_with_a_tampered_table(cluster: Cluster, path: Path, restart: Restart) -> tuple[EdgeProcess, str]:
    """With the control plane down, edit the node's kept table by hand (every module's traffic moved)
    and restart the node with `restart`; returns once the node has said it refuses the table."""
    await cluster.stop_control_plane()
    node = cluster.nodes[0]
    node.stop()
    kept = json.loads(path.read_text())
    for entry in kept["modules"]:
        entry["weight"] = 100 - entry["weight"]
    path.write_text(json.dumps(kept))
    node, url = await restart(cluster, node)
    await poll(lambda: b"refusing the cached table" in node.log.read_bytes(), "the node to refuse the table")
    assert "is not what the control plane signed" in node.log.read_text()
    return node, url


async def health(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/health") as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


async def test_a_node_restarted_while_the_control_plane_is_down_serves_its_cached_table(tmp_path: Path) -> None:
    cluster = await start_cluster(tmp_path, [(NODE, REGION)])
    try:
        await cluster.wait_ready(1)
        await cluster.wait_all_serving("greeter", "1.1.0", [NODE])
        await poll(table_file(cluster).exists, "the node to keep its table on disk")
        headers = cluster.edge_headers()
        await cluster.stop_control_plane()
        node, url = await restart_node(cluster, cluster.nodes[0])
        async with aiohttp.ClientSession(headers=headers) as session:
            serving: dict[str, Any] = {}

            async def cached() -> bool:
                serving.update(await health(session, url))
                return "ServingCachedTable" in serving.get("conditions", [])

            await poll(cached, "the restarted node to serve its cached table")
            assert serving["modules"] > 0
            async with session.post(f"{url}/api/v1/wasm/execute", json=CALL) as response:
                assert response.status == 200, await response.text()
                answer = await response.json()
            assert answer["version"] == "1.1.0"
            async with (  # the cached table is served to token holders only
                aiohttp.ClientSession() as anonymous,
                anonymous.post(f"{url}/api/v1/wasm/execute", json=CALL) as response,
            ):
                assert response.status == 401

            await cluster.start_control_plane()

            async def answered() -> bool:
                return (await health(session, url)).get("conditions") == []

            await poll(answered, "ServingCachedTable to clear once the control plane answers")
        audit = cluster.plane.store.audit_log(subject=NODE, limit=1000)
        cached_lines = [a for a in audit if a.action == "node.servingCachedTable"]
        assert cached_lines, [a.action for a in audit]  # the first heartbeat said so
        assert "serving the cached table" in node.log.read_text()
    finally:
        await stop_cluster(cluster)


async def test_a_cached_table_changed_on_disk_is_refused_and_nothing_is_served(tmp_path: Path) -> None:
    cluster = await start_cluster(tmp_path, [(NODE, REGION)])
    try:
        await cluster.wait_ready(1)
        await cluster.wait_all_serving("greeter", "1.1.0", [NODE])
        path = table_file(cluster)
        await poll(path.exists, "the node to keep its table on disk")
        node, url = await restart_with_a_tampered_table(cluster, path, restart_node)
        async with aiohttp.ClientSession(headers=cluster.edge_headers()) as session:
            state = await health(session, url)
            assert state["modules"] == 0 and state["conditions"] == []
            async with session.post(f"{url}/api/v1/wasm/execute", json=CALL) as response:
                assert response.status == 404  # nothing loaded: nothing unverified is served
        assert not path.exists() and path.with_name("table.refused.json").exists()
        assert "serving the cached table" not in node.log.read_text().split("refusing the cached table")[-1]
    finally:
        await stop_cluster(cluster)
