"""Chaos: PostgreSQL restarted under a running control plane, in the middle of a canary.

The control plane keeps its state in a PostgreSQL server of this test's own. At the canary's second
step the server restarts (`pg_ctl restart -m fast`: every session is cut). The control plane's
passes fail while the server is away and retry with backoff; the store opens new connections; the
replica takes its leader lease again; and the canary completes with each step passed once, in the
record and in the store. Nodes keep heartbeating (they are Healthy and heard from after the
restart) and the load sees no failure.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from tests.chaos.conftest import PrivatePostgres
from tests.e2e.cluster import Load, poll, start_cluster, stop_cluster

REGIONS = [("edge-us-east-1", "us-east"), ("edge-us-east-2", "us-east"), ("edge-eu-central-1", "eu-central")]
NODES = [n for n, _ in REGIONS]


async def test_the_control_plane_reconnects_and_the_canary_completes(
    tmp_path: Path, private_postgres: PrivatePostgres
) -> None:
    cluster = await start_cluster(tmp_path, REGIONS, database_url=private_postgres.url)
    try:
        repo = cluster.repo
        repo.edit("strategies/canary.yaml", "stepSeconds: 0.6", "stepSeconds: 1.5")
        repo.commit("slower canary")
        await cluster.wait_ready(len(REGIONS))
        await cluster.wait_all_serving("greeter", "1.1.0", NODES)
        source = repo.derive_wat(
            "greeter-1.1.0.wat", "greeter-1.3.0.wat", **{"1.1.0": "1.3.0", "hello, friend": "hello, fellow"}
        )
        urls = list(cluster.node_urls().values())
        async with Load(cluster, "greeter", "greet", lambda i: {"name": "x" * (i % 5)}, lambda: urls) as load:
            repo.set_module("greeter", "1.3.0", source)
            await poll(
                lambda: (r := cluster.latest("greeter")) is not None and r.target.version == "1.3.0" and r.step >= 1,
                "the canary's second step",
            )
            await asyncio.to_thread(private_postgres.restart)
            restarted = time.time()
            record = await cluster.wait_ended("greeter", "1.3.0")
            assert record.phase.value == "Promoted", record
            await cluster.wait_all_serving("greeter", "1.3.0", NODES)
            await poll(
                lambda: all((v.last_heartbeat or 0) > restarted for v in cluster.plane.hub.view()),
                "a heartbeat from every node after the restart",
            )
        # Healthy: polled, not read once. With 0.25 s heartbeats a node is Unhealthy after 0.75 s of
        # silence, which a machine busy with other work can give any node at any moment.
        await poll(
            lambda: {v.id: v.status for v in cluster.plane.hub.view()} == dict.fromkeys(NODES, "Healthy"),
            "every node Healthy after the restart",
        )
        history = [(h.step, h.outcome) for h in record.history]
        assert history == [(0, "Passed"), (1, "Passed"), (2, "Passed")], record.history
        stored = await asyncio.to_thread(cluster.plane.store.rollout_steps, record.id, 100)
        assert Counter((s.step, s.event) for s in stored) == Counter(history), stored
        # The store has the nodes' latest reports too: nothing written before the restart was lost.
        rows = {n.id: n for n in await asyncio.to_thread(cluster.plane.store.list_nodes)}
        assert set(rows) == set(NODES)
        assert load.result.failures == []
        assert load.result.module_errors == {}
        assert load.result.versions["1.3.0"] > 0
    finally:
        await stop_cluster(cluster)
