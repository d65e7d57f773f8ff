"""Chaos: nodes cut off from the control plane keep serving, and rejoin cleanly.

The control plane stops while load runs on every node: the nodes keep serving their last
assignment (no request fails, every answer names its version), their agents retry with backoff,
and when a control plane comes back on the same address and data they register again, report what
they run, and take the next change as if nothing had happened.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.e2e.cluster import Load, poll, start_cluster, stop_cluster

REGIONS = [("edge-us-east-1", "us-east"), ("edge-us-east-2", "us-east"), ("edge-eu-central-1", "eu-central")]
NODES = [n for n, _ in REGIONS]
OUTAGE_SECONDS = 3.0  # twelve heartbeat periods: the control plane would call a silent node Unhealthy


async def test_nodes_serve_their_last_assignment_while_cut_off_and_rejoin(tmp_path: Path) -> None:
    cluster = await start_cluster(tmp_path, REGIONS)
    try:
        await cluster.wait_ready(len(REGIONS))
        await cluster.wait_all_serving("calc", "1.0.0", NODES)
        urls = cluster.node_urls()
        generations = {v.id: v.generation for v in cluster.plane.hub.view()}
        async with Load(cluster, "calc", "add", lambda i: [i, 1], lambda: list(urls.values())) as load:
            await poll(lambda: load.result.sent > 50, "load on every node")
            await cluster.stop_control_plane()
            cut_at, sent_before = time.monotonic(), load.result.sent
            await poll(
                lambda: time.monotonic() - cut_at > OUTAGE_SECONDS and load.result.sent > sent_before + 300,
                "load while the control plane is away",
            )
            served_while_cut = load.result.sent - sent_before
            await cluster.start_control_plane()
            await cluster.wait_ready(len(REGIONS))
            # Rejoined: every node is Healthy, on the generation it had, reporting what it runs.
            views = {v.id: v for v in cluster.plane.hub.view()}
            assert {n: v.status for n, v in views.items()} == dict.fromkeys(NODES, "Healthy")
            assert {n: v.generation for n, v in views.items()} == generations
            assert all(cluster.serving("calc")[n] == {("1.0.0", 100)} for n in NODES)
            # And it takes the next change: a blue-green switch reaches every node.
            cluster.repo.set_module("calc", "1.1.0", "calc-1.1.0.wat")
            record = await cluster.wait_ended("calc", "1.1.0")
            assert record.phase.value == "Promoted", record
            await poll(
                lambda: all(("1.1.0", 100) in cluster.serving("calc")[n] for n in NODES), "calc 1.1.0 on every node"
            )
        assert served_while_cut > 300
        assert load.result.failures == []
        assert load.result.module_errors == {}
        assert set(load.result.versions) <= {"1.0.0", "1.1.0"}
        assert load.result.versions["1.1.0"] > 0
    finally:
        await stop_cluster(cluster)
