"""Deleting a live node (issue 16, item 8): it re-joins cleanly, with a table numbered above the one it
had applied, so it can never take a new table for one it already runs."""

from __future__ import annotations

from pathlib import Path

from tests.api.conftest import call
from tests.e2e.cluster import poll, start_cluster, stop_cluster

NODE = "edge-us-east-1"


async def test_a_deleted_live_node_rejoins_on_a_fresh_generation_and_runs_its_new_table(tmp_path: Path) -> None:
    cluster = await start_cluster(tmp_path, [(NODE, "us-east")])
    try:
        await cluster.wait_ready(1)
        assert f"{NODE}: Healthy" in cluster.describe_nodes()  # what a failed wait_ready would say
        hub = cluster.plane.hub
        before = next(v for v in hub.view() if v.id == NODE)
        applied = before.applied_generation
        answer = await call(cluster.url, "DELETE", f"/api/v1/wasm/nodes/{NODE}", cluster.token("admin"))
        assert answer.status == 204
        cluster.repo.set_module("calc", "1.1.0", "calc-1.1.0.wat")  # its table changes while it is away

        def rejoined_and_current() -> bool:
            view = next((v for v in hub.view() if v.id == NODE), None)
            table = hub.table(NODE)
            if view is None or table is None:
                return False
            wanted = {(e.module, e.version, e.weight) for e in table.modules}
            running = {(m, v, w) for m, v, _, w in view.running}
            current = view.generation > applied and view.applied_generation == view.generation and running == wanted
            # It is given its table again as soon as it is back; the new calc comes with a later pass.
            return current and any(m == "calc" and v == "1.1.0" for m, v, _ in running)

        await poll(rejoined_and_current, "the deleted node back, on a newer generation, running calc 1.1.0")
        assert any(m == "calc" and v == "1.1.0" for m, v, _, w in next(v for v in hub.view() if v.id == NODE).running)
    finally:
        await stop_cluster(cluster)
