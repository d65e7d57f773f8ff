"""A managed node run with `--workers 2` stands alone as a one-process node does: restarted while the
control plane is down, every worker serves the table the supervisor kept on disk (signed by the
control plane) and says `ServingCachedTable` until the control plane answers; a worker that dies
meanwhile comes back with that table and that condition; a cached table changed on disk is refused,
and no worker serves anything from it.

Real processes on 127.0.0.1: a control plane (stopped and started again), the node's supervisor and
its two workers. Each call goes on a new connection, so the kernel spreads calls over both workers.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from edge.ipc import WORKER_HEADER
from tests.e2e.cluster import Cluster, EdgeProcess, poll, start_cluster, stop_cluster
from tests.e2e.test_cached_table import CALL, NODE, REGION, restart_with_a_tampered_table, table_file
from tests.e2e.test_cached_table import restart_node as restart_one_process_or_more

WORKERS = 2


async def start_with_node(tmp_path: Path) -> Cluster:
    """A control plane and the node, with two workers, serving greeter 1.1.0 and keeping its table."""
    cluster = await start_cluster(tmp_path, [])
    cluster.start_node(NODE, REGION, workers=WORKERS)
    await cluster.wait_ready(1)
    await cluster.wait_all_serving("greeter", "1.1.0", [NODE])
    await poll(table_file(cluster).exists, "the node to keep its table on disk")
    return cluster


async def restart_node(cluster: Cluster, node: EdgeProcess) -> tuple[EdgeProcess, str]:
    """Stop `node` and start it again with two workers on the same cache dir; its new URL, from its log."""
    return await restart_one_process_or_more(cluster, node, workers=WORKERS)


def workers_of(pid: int) -> set[int]:
    """The supervisor's child processes: its workers."""
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():  # any of its threads may have started one
        children.update(int(c) for c in (task / "children").read_text().split())
    return children


async def answers_by_worker(url: str, headers: dict[str, str], seen: Counter[str]) -> bool:
    """A few execute calls, each on a new connection; true once every worker answered one with 200."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        for _ in range(8):
            async with session.post(f"{url}/api/v1/wasm/execute", json=CALL) as response:
                if response.status == 200 and (await response.json())["version"] == "1.1.0":
                    seen[response.headers[WORKER_HEADER]] += 1
    return len(seen) == WORKERS


async def conditions_on_every_worker(url: str, headers: dict[str, str], expected: list[str]) -> bool:
    """True once a health answer from each worker (new connections) says `expected`."""
    agreed: set[str] = set()
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        for _ in range(8):
            async with session.get(f"{url}/health") as response:
                body: dict[str, Any] = await response.json()
                if body.get("conditions") == expected and body["modules"] > 0:
                    agreed.add(response.headers[WORKER_HEADER])
    return len(agreed) == WORKERS


async def test_a_node_with_workers_restarted_while_the_control_plane_is_down_serves_its_cached_table(
    tmp_path: Path,
) -> None:
    cluster = await start_with_node(tmp_path)
    try:
        path = table_file(cluster)
        kept = json.loads(path.read_text())
        headers = cluster.edge_headers()
        await cluster.stop_control_plane()
        node, url = await restart_node(cluster, cluster.nodes[0])

        await poll(
            lambda: conditions_on_every_worker(url, headers, ["ServingCachedTable"]),
            "every worker to serve the cached table and say so",
        )
        seen: Counter[str] = Counter()
        await poll(lambda: answers_by_worker(url, headers, seen), "both workers to answer from the cached table")
        async with (  # the cached table is served to token holders only
            aiohttp.ClientSession() as anonymous,
            anonymous.post(f"{url}/api/v1/wasm/execute", json=CALL) as response,
        ):
            assert response.status == 401
        assert "serving the cached table" in node.log.read_text()
        assert json.loads(path.read_text())["signature"] == kept["signature"]  # what was served is what was kept

        # A worker that dies while the plane is away comes back with the cached table and the condition.
        workers = workers_of(node.process.pid)
        assert len(workers) == WORKERS
        os.kill(min(workers), signal.SIGKILL)

        def replaced() -> bool:
            now = workers_of(node.process.pid)
            return len(now) == WORKERS and min(workers) not in now

        await poll(replaced, "the supervisor to start the killed worker again")
        await poll(
            lambda: conditions_on_every_worker(url, headers, ["ServingCachedTable"]),
            "the new worker to say ServingCachedTable too",
        )
        seen.clear()
        await poll(lambda: answers_by_worker(url, headers, seen), "both workers to answer again")

        await cluster.start_control_plane()
        await poll(
            lambda: conditions_on_every_worker(url, headers, []),
            "ServingCachedTable to clear on every worker once the control plane answers",
        )
        audit = cluster.plane.store.audit_log(subject=NODE, limit=1000)
        assert any(a.action == "node.servingCachedTable" for a in audit), [a.action for a in audit]
    finally:
        await stop_cluster(cluster)


async def test_a_cached_table_changed_on_disk_is_refused_by_a_node_with_workers(tmp_path: Path) -> None:
    cluster = await start_with_node(tmp_path)
    try:
        path = table_file(cluster)
        node, url = await restart_with_a_tampered_table(cluster, path, restart_node)
        connector = aiohttp.TCPConnector(force_close=True)  # new connections: both workers get asked
        async with aiohttp.ClientSession(headers=cluster.edge_headers(), connector=connector) as session:
            for _ in range(16):
                async with session.get(f"{url}/health") as response:
                    state = await response.json()
                assert state["modules"] == 0 and state["conditions"] == []
                async with session.post(f"{url}/api/v1/wasm/execute", json=CALL) as response:
                    assert response.status == 404  # nothing loaded: nothing unverified is served
        assert not path.exists() and path.with_name("table.refused.json").exists()
        assert "serving the cached table" not in node.log.read_text().split("refusing the cached table")[-1]
    finally:
        await stop_cluster(cluster)
