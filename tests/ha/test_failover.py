"""Two `hotswap serve` replicas on one PostgreSQL: the leader, a process, is killed with SIGKILL in the
middle of a canary; the other replica, which the nodes talk to, takes the lease, resumes the rollout at
its step and finishes it, and no step is applied twice."""

from __future__ import annotations

import time
from pathlib import Path

from reconciler.api.auth import AuthOptions, TokenAuthority
from tests.e2e.cluster import Cluster, FleetRepo, Load, poll
from tests.ha.replicas import (
    assert_no_step_twice,
    shared_key,
    spawn_replica,
    start_replica,
    status_of,
    step_history,
    wait_leader,
)

REGIONS = [("edge-us-east-1", "us-east"), ("edge-eu-central-1", "eu-central")]
NODES = [n for n, _ in REGIONS]
HANDOVER_DEADLINE = 10.0


async def test_killed_leader_hands_over_and_the_rollout_finishes_without_repeating_a_step(
    tmp_path: Path, database_url: str, blob_url: str
) -> None:
    repo = FleetRepo(tmp_path / "repo")
    repo.edit("strategies/canary.yaml", "stepSeconds: 0.6", "stepSeconds: 1.5")
    repo.commit("slower canary")
    key = shared_key(tmp_path)
    token = TokenAuthority.load(AuthOptions(private_key=key), tmp_path / "tokens").mint("test", ["admin"])
    leader = spawn_replica(repo, tmp_path / "leader", database_url, blob_url, key)
    cluster: Cluster | None = None
    try:
        await wait_leader(leader.url, token, "the first replica to lead")
        follower = await start_replica(repo, tmp_path / "follower", database_url, blob_url, key)
        data = tmp_path / "data"
        data.mkdir()
        cluster = Cluster(repo, follower, data)
        status = await status_of(follower.url, token)
        assert status is not None
        assert status["leader"] is False
        assert status["replica"] == follower.controller.replica
        for node_id, region in REGIONS:
            cluster.start_node(node_id, region)  # nodes know only the follower
        await cluster.wait_ready(len(NODES))
        await cluster.wait_all_serving("greeter", "1.1.0", NODES)

        source = repo.derive_wat("greeter-1.1.0.wat", "greeter-1.3.0.wat", **{"1.1.0": "1.3.0"})
        async with Load(cluster, "greeter", "greet", lambda i: {"name": "x" * (i % 5)}) as load:
            repo.set_module("greeter", "1.3.0", source)
            await poll(
                lambda: (r := cluster.latest("greeter")) is not None and r.target.version == "1.3.0" and r.step >= 1,
                "the canary to reach its second step",
            )
            assert not follower.controller.leader
            leader.kill()
            killed = time.monotonic()
            await poll(lambda: follower.controller.leader, "the follower to take the lease", HANDOVER_DEADLINE)
            print(f"handover after SIGKILL: {time.monotonic() - killed:.2f}s")
            record = await cluster.wait_ended("greeter", "1.3.0")
            assert record.phase.value == "Promoted", record
            await cluster.wait_all_serving("greeter", "1.3.0", NODES)
        stored, steps = step_history(database_url, "greeter", "1.3.0")
        history = stored["history"]
        assert_no_step_twice(history, steps)
        assert sorted(h["step"] for h in history if h["outcome"] == "Passed") == [0, 1, 2]  # none skipped
        assert load.result.failures == []
        assert load.result.module_errors == {}
    finally:
        leader.kill()
        if cluster is not None:
            for node in cluster.nodes:
                node.stop()
            await cluster.plane.stop()
