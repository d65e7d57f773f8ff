"""End to end: a version whose health check fails is rolled back, with or without traffic, and the
rollout names the reason (`HealthCheckFailed`) and the module's own words.

Real processes: the control plane in this event loop, four edge node processes on 127.0.0.1, a fleet
Git repository (fleet-example with fast strategies). The sick calc build answers every call and its
smoke check, but its `health` export traps; its Module asks for a health check every second. The
nodes run it after load and count the failures in their heartbeats' metrics; the canary's analysis
sees them before any request reaches the new version (its first step waits for requests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.api.conftest import call
from tests.e2e.cluster import FOUR_NODES, Cluster, ready_cluster

REGIONS = FOUR_NODES
ALL_NODES = [n for n, _ in REGIONS]
HEALTHY = '(func (export "health") (result i32) (i32.const 1))'
TRAPS = '(func (export "health") (result i32) unreachable)'


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with ready_cluster(tmp_path, REGIONS) as cluster:
        yield cluster


async def test_a_version_whose_health_check_traps_is_rolled_back_as_health_check_failed(cluster: Cluster) -> None:
    sick = cluster.repo.derive_wat("calc-1.1.0.wat", "calc-1.2.0-sick.wat", **{HEALTHY: TRAPS})
    cluster.repo.set_module(
        "calc",
        "1.2.0",
        sick,
        **{
            "healthCheck: {function: health}": "healthCheck: {function: health, intervalSeconds: 1}",
            "rollout: blue-green": "rollout: canary",
        },
    )
    record = await cluster.wait_ended("calc", "1.2.0")
    assert (record.phase.value, record.reason) == ("RolledBack", "HealthCheckFailed"), record
    await cluster.wait_all_serving("calc", "1.0.0", ALL_NODES)
    # Why, in the module's own words: the record, the event and the deployments API.
    assert "health checks failed: health check health failed: trap" in record.message, record.message
    assert "unreachable" in record.message, record.message
    assert record.history[-1].reason == "HealthCheckFailed", record.history
    events = [e.message for e in cluster.plane.controller.events if e.reason == "RolledBack"]
    assert any("health checks failed" in m and "unreachable" in m for m in events), events
    answer = await call(cluster.url, "GET", f"/api/v1/wasm/deployments/{record.id}", cluster.token("viewer"))
    assert answer.body["reason"] == "HealthCheckFailed", answer.body
    degraded = [c for c in answer.body["conditions"] if c["type"] == "Degraded"]
    assert [(c["status"], c["reason"]) for c in degraded] == [("True", "HealthCheckFailed")], answer.body
    # The nodes reported it: health check runs and failures of 1.2.0 in their heartbeats, no request.
    window = cluster.plane.hub.metrics
    seen = [window.since("calc", "1.2.0", region, 0.0) for region in {r for _, r in REGIONS}]
    assert sum(t.health_failures for t in seen) > 0 and sum(t.requests for t in seen) == 0, seen
