"""A control plane stopped mid-rollout and started again continues at the recorded step."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.cluster import Load, poll, start_cluster, stop_cluster

REGIONS = [("edge-us-east-1", "us-east"), ("edge-us-east-2", "us-east"), ("edge-eu-central-1", "eu-central")]
NODES = [n for n, r in REGIONS]


async def test_restarted_control_plane_resumes_the_rollout_at_its_step(tmp_path: Path) -> None:
    cluster = await start_cluster(tmp_path, REGIONS)
    try:
        repo = cluster.repo
        repo.edit("strategies/canary.yaml", "stepSeconds: 0.6", "stepSeconds: 1.5")
        repo.commit("slower canary")
        await cluster.wait_ready(len(REGIONS))
        await cluster.wait_all_serving("greeter", "1.1.0", NODES)
        changes = {"1.1.0": "1.3.0", "hello, friend": "hello, fellow"}
        source = repo.derive_wat("greeter-1.1.0.wat", "greeter-1.3.0.wat", **changes)
        async with Load(cluster, "greeter", "greet", lambda i: {"name": "x" * (i % 5)}) as load:
            repo.set_module("greeter", "1.3.0", source)
            await poll(
                lambda: (r := cluster.latest("greeter")) is not None and r.target.version == "1.3.0" and r.step >= 1,
                "the canary to reach its second step",
            )
            before = cluster.latest("greeter")
            await cluster.restart_control_plane()
            resumed = cluster.latest("greeter")
            assert resumed.id == before.id  # the same rollout, read back from the store
            assert resumed.step >= before.step  # not started over
            record = await cluster.wait_ended("greeter", "1.3.0")
            assert record.phase.value == "Promoted", record
            await cluster.wait_all_serving("greeter", "1.3.0", NODES)
            # Promoted only once the nodes report it: every node runs the last table published to it.
            views = {v.id: v for v in cluster.plane.hub.view()}
            assert all(views[n].applied_generation == views[n].generation for n in NODES), views
        steps = [h.step for h in record.history if h.outcome == "Passed"]
        assert steps == sorted(set(steps)), f"a step was passed twice or out of order: {record.history}"
        assert len(steps) == 3  # 20 %, 50 %, 100 %: none skipped
        assert load.result.module_errors == {}
        # Nodes kept serving while the control plane was away: nothing failed.
        assert load.result.failures == []
    finally:
        await stop_cluster(cluster)
