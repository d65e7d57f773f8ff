"""Chaos: an edge node killed with SIGKILL in the middle of a canary.

Greeter runs on one node per region (replicas: 1) and us-east has two nodes. The node carrying the
canary in us-east is killed at the canary's second step: after three missed heartbeats it is
Unhealthy, the planner places greeter on the other us-east node, and the canary goes on to promote
the new version there. Load goes to the nodes that report serving greeter; the only failed requests
are those the killed node never answered.
"""

from __future__ import annotations

from pathlib import Path

from tests.e2e.cluster import Cluster, Load, poll, start_cluster, stop_cluster

REGIONS = [("edge-us-east-1", "us-east"), ("edge-us-east-2", "us-east"), ("edge-eu-central-1", "eu-central")]
US_EAST = {"edge-us-east-1", "edge-us-east-2"}


def greeter_urls(cluster: Cluster) -> list[str]:
    urls = cluster.node_urls()
    return [urls[n] for n, versions in cluster.serving("greeter").items() if versions and n in urls]


async def test_a_killed_node_s_modules_move_and_the_canary_completes(tmp_path: Path) -> None:
    cluster = await start_cluster(tmp_path, REGIONS)
    try:
        repo = cluster.repo
        repo.edit("strategies/canary.yaml", "stepSeconds: 0.6", "stepSeconds: 1.5")
        repo.edit("modules/greeter.yaml", "replicas: 2 ", "replicas: 1 ")
        repo.commit("greeter on one node per region; slower canary")
        await cluster.wait_ready(len(REGIONS))

        def placed_once() -> bool:
            serving = cluster.serving("greeter")
            return sum(1 for n in US_EAST if serving.get(n) == {("1.1.0", 100)}) == 1

        await poll(placed_once, "greeter on exactly one us-east node")
        victim_id = next(n for n in US_EAST if cluster.serving("greeter")[n])
        survivor_id = next(n for n in US_EAST if n != victim_id)
        victim = next(n for n in cluster.nodes if n.node_id == victim_id)
        source = repo.derive_wat(
            "greeter-1.1.0.wat", "greeter-1.3.0.wat", **{"1.1.0": "1.3.0", "hello, friend": "hello, fellow"}
        )
        victim_url = cluster.node_urls()[victim_id]
        args = lambda i: {"name": "x" * (i % 5)}  # noqa: E731
        async with Load(cluster, "greeter", "greet", args, lambda: greeter_urls(cluster)) as load:
            repo.set_module("greeter", "1.3.0", source)
            await poll(
                lambda: (r := cluster.latest("greeter")) is not None and r.target.version == "1.3.0" and r.step >= 1,
                "the canary's second step",
            )
            assert ("1.3.0", 100) not in cluster.serving("greeter")[victim_id]  # mid-rollout, not done
            victim.kill()
            await poll(
                lambda: any(v for v, _ in cluster.serving("greeter")[survivor_id]),
                "greeter placed on the surviving us-east node",
            )
            record = await cluster.wait_ended("greeter", "1.3.0")
            assert record.phase.value == "Promoted", record
            await cluster.wait_all_serving("greeter", "1.3.0", [survivor_id, "edge-eu-central-1"])
        health = {v.id: v.status for v in cluster.plane.hub.view()}
        assert health == {victim_id: "Unhealthy", survivor_id: "Healthy", "edge-eu-central-1": "Healthy"}
        assert cluster.serving("greeter")[victim_id]  # its last report; it is excluded, not re-planned
        passed = [h.step for h in record.history if h.outcome == "Passed"]
        assert passed == sorted(set(passed)), record.history
        assert len(passed) == 3, record.history  # 20 %, 50 %, 100 %
        assert load.result.module_errors == {}
        assert all(f.startswith(victim_url) for f in load.result.failures), load.result.failures
        assert load.result.versions["1.3.0"] > 0
    finally:
        await stop_cluster(cluster)
