"""Chaos: the S3 server goes away in the middle of a rolling update.

Binaries live in S3 (moto_server, reached through a TCP gate the test closes: new connections are
refused and open ones cut). wc rolls out node by node. Once the first node runs the new version
the gate closes, so the next node cannot fetch the binary: it reports the failed load, keeps
serving the old version, and the rollout waits (traffic moves on only when every node of a step
runs the new release). When S3 is back, the node's retry loads the binary and the rollout finishes.
No request fails at any point.
"""

from __future__ import annotations

from pathlib import Path

from tests.chaos.conftest import TcpGate
from tests.e2e.cluster import Cluster, Load, poll, start_cluster, stop_cluster

REGIONS = [("edge-us-east-1", "us-east"), ("edge-us-east-2", "us-east"), ("edge-eu-central-1", "eu-central")]
NODES = [n for n, _ in REGIONS]


def on_new(cluster: Cluster) -> set[str]:
    return {n for n, versions in cluster.serving("wc").items() if ("1.1.0", 100) in versions}


async def test_nodes_keep_serving_and_the_rollout_waits_for_s3(tmp_path: Path, s3_gate: tuple[TcpGate, str]) -> None:
    gate, blob_url = s3_gate
    cluster = await start_cluster(tmp_path, REGIONS, blob_url=blob_url)
    try:
        repo = cluster.repo
        repo.edit("modules/wc.yaml", "regions: [us-east, eu-central]\n    replicas: 1", "replicas: all")
        repo.edit("strategies/rolling.yaml", "batchSeconds: 0.5", "batchSeconds: 1")
        repo.commit("wc everywhere, slower batches")
        await cluster.wait_ready(len(REGIONS))
        await cluster.wait_all_serving("wc", "1.0.0", NODES)
        urls = list(cluster.node_urls().values())
        async with Load(cluster, "wc", "_start", lambda i: "ab" * (i % 5), lambda: urls) as load:
            repo.set_module("wc", "1.1.0", "wc-1.1.0.wat")
            await poll(lambda: len(on_new(cluster)) == 1, "the first batch on wc 1.1.0")
            gate.close()
            first = on_new(cluster)

            def failed_load() -> bool:
                return any(any(k.startswith("wc") for k in v.failed) for v in cluster.plane.hub.view())

            await poll(failed_load, "a node to report that wc 1.1.0 did not load")
            stuck = next(v.id for v in cluster.plane.hub.view() if any(k.startswith("wc") for k in v.failed))
            assert cluster.serving("wc")[stuck] == {("1.0.0", 100)}  # it serves the old version meanwhile
            passes = cluster.plane.controller.state.passes
            await poll(lambda: cluster.plane.controller.state.passes > passes + 3, "more reconcile passes")
            record = cluster.latest("wc")
            assert record.phase.value == "Progressing", record  # waiting, not promoted nor rolled back
            assert on_new(cluster) == first  # and no further node moved on
            gate.open()
            record = await cluster.wait_ended("wc", "1.1.0")
            assert record.phase.value == "Promoted", record
            await cluster.wait_all_serving("wc", "1.1.0", NODES)
            assert all(not v.failed for v in cluster.plane.hub.view())
        assert load.result.failures == []
        assert load.result.module_errors == {}
        assert load.result.versions["1.0.0"] > 0 and load.result.versions["1.1.0"] > 0
    finally:
        await stop_cluster(cluster)
