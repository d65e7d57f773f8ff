"""End to end: Git commits become running versions on real edge nodes, under continuous load.

Each test runs the control plane (in this event loop), four edge node processes on 127.0.0.1, and a
load generator; step times are short so rollouts finish in seconds. Every response must name the
version that served it; the only failures allowed are a faulty version's own errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.cluster import FOUR_NODES, GREETER_NODES, Cluster, Load, poll, ready_cluster

REGIONS = FOUR_NODES
ALL_NODES = [n for n, _ in REGIONS]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with ready_cluster(tmp_path, REGIONS) as cluster:
        yield cluster


def greeting(i: int) -> dict[str, str]:
    return {"name": "x" * (i % 7)}  # input lengths of both parities


async def test_canary_promotes_and_every_node_serves_the_new_version(cluster: Cluster) -> None:
    repo = cluster.repo
    changes = {"1.1.0": "1.3.0", "hello, friend": "hello, fellow"}
    source = repo.derive_wat("greeter-1.1.0.wat", "greeter-1.3.0.wat", **changes)
    async with Load(cluster, "greeter", "greet", greeting) as load:
        await cluster.wait_all_serving("greeter", "1.1.0", GREETER_NODES)
        repo.set_module("greeter", "1.3.0", source)
        record = await cluster.wait_ended("greeter", "1.3.0")
        assert record.phase.value == "Promoted", record
        await cluster.wait_all_serving("greeter", "1.3.0", GREETER_NODES)
    steps = [h.outcome for h in record.history]
    assert steps.count("Passed") >= 2, record.history
    assert load.result.failures == []
    assert load.result.module_errors == {}
    assert load.result.versions["1.1.0"] > 0 and load.result.versions["1.3.0"] > 0
    assert cluster.serving("greeter")["edge-apac-east-1"] == {("1.0.0", 100)}  # the override holds


async def test_faulty_version_fails_analysis_and_rolls_back(cluster: Cluster) -> None:
    repo = cluster.repo
    async with Load(cluster, "greeter", "greet", greeting) as load:
        await cluster.wait_all_serving("greeter", "1.1.0", GREETER_NODES)
        repo.set_module("greeter", "1.2.0", "greeter-1.2.0-faulty.wat")
        record = await cluster.wait_phase("greeter", "1.2.0", ["RolledBack", "Promoted"])
        assert record.phase.value == "RolledBack", record
        await cluster.wait_all_serving("greeter", "1.1.0", GREETER_NODES)
        rolled_back_at = load.result.sent
        await poll(lambda: load.result.sent > rolled_back_at + 50, "more load after the rollback")
    assert load.result.failures == []
    assert set(load.result.module_errors) == {"1.2.0:trap"}  # only the faulty version's own errors
    # It stays rolled back: no retry until Git changes the module again.
    assert cluster.latest("greeter").phase.value == "RolledBack"


async def test_blue_green_switches_at_once(cluster: Cluster) -> None:
    repo = cluster.repo
    async with Load(cluster, "calc", "add", lambda i: [2 * i, 1]) as load:
        repo.set_module("calc", "1.1.0", "calc-1.1.0.wat")
        record = await cluster.wait_ended("calc", "1.1.0")
        assert record.phase.value == "Promoted", record
        await poll(
            lambda: all((("1.1.0", 100) in s) for s in cluster.serving("calc").values()),
            "every node switched to calc 1.1.0",
        )
    kinds = [h.kind.value for h in record.history if h.kind is not None]
    assert "Preview" in kinds, record.history
    assert load.result.failures == []
    assert load.result.module_errors == {}
    assert load.result.versions["1.1.0"] > 0


async def test_rolling_continues_when_a_node_dies(cluster: Cluster) -> None:
    repo = cluster.repo
    repo.edit("modules/wc.yaml", "regions: [us-east, eu-central]\n    replicas: 1", "replicas: all")
    repo.commit("wc everywhere")
    await cluster.wait_all_serving("wc", "1.0.0", ALL_NODES)
    victim = next(n for n in cluster.nodes if n.node_id == "edge-apac-east-1")
    async with Load(cluster, "wc", "_start", lambda i: "ab" * (i % 5)) as load:
        repo.set_module("wc", "1.1.0", "wc-1.1.0.wat")
        await poll(lambda: cluster.latest("wc") is not None and cluster.latest("wc").done_nodes, "a first batch")
        victim.kill()
        record = await cluster.wait_ended("wc", "1.1.0")
        assert record.phase.value == "Promoted", record
    survivors = [n for n in ALL_NODES if n != victim.node_id]
    await cluster.wait_all_serving("wc", "1.1.0", survivors)
    unhealthy = {v.id for v in cluster.plane.hub.view() if v.status != "Healthy"}
    assert unhealthy == {victim.node_id}
    # Only requests sent to the killed node failed (refused, cut off, or cut while the body was written)
    killed_url = next(v.url for v in cluster.plane.hub.view() if v.id == victim.node_id)
    killed_url_failures = [f for f in load.result.failures if f.startswith(f"{killed_url}: ")]
    assert load.result.failures == killed_url_failures
    assert load.result.module_errors == {}
