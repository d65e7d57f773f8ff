"""End to end: a version that passes its health check but fails its smoke check never receives a user
request, and its rollout is rolled back in the module's own words.

Real processes: the control plane in this event loop, four edge node processes on 127.0.0.1, a fleet
Git repository (fleet-example, whose calc module smokes `add [3, 2]` and expects 5). The faulty calc
build answers its health check but traps on an odd first operand, so its smoke check fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.api.conftest import call
from tests.e2e.cluster import FOUR_NODES, Cluster, Load, ready_cluster

REGIONS = FOUR_NODES
ALL_NODES = [n for n, _ in REGIONS]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with ready_cluster(tmp_path, REGIONS) as cluster:
        yield cluster


async def test_a_version_that_passes_its_health_check_but_fails_its_smoke_check_never_gets_a_request(
    cluster: Cluster,
) -> None:
    # Odd and even first operands: the faulty build would trap on half of them and answer the rest.
    load = Load(cluster, "calc", "add", lambda i: [i % 10, 1])
    async with load:
        # A canary gives the new version a share of requests at its first step: only the smoke check
        # stands between the faulty build and the users.
        cluster.repo.set_module("calc", "1.2.0", "calc-1.2.0-faulty.wat", **{"rollout: blue-green": "rollout: canary"})
        record = await cluster.wait_ended("calc", "1.2.0")
        await cluster.wait_all_serving("calc", "1.0.0", ALL_NODES)
        sent = load.result.sent
    assert (record.phase.value, record.reason) == ("RolledBack", "SmokeFailed"), record
    assert sent > 0 and load.result.failures == []
    assert set(load.result.versions) == {"1.0.0"}, load.result  # X-Hotswap-Version of every answer
    assert not load.result.module_errors, load.result
    # Why, in the module's own words: the record, the event and the deployments API.
    assert "smoke add [3, 2]: trap: " in record.message and "unreachable" in record.message, record.message
    events = [e.message for e in cluster.plane.controller.events if e.reason == "RolledBack"]
    assert any("unreachable" in m for m in events), events
    answer = await call(cluster.url, "GET", f"/api/v1/wasm/deployments/{record.id}", cluster.token("viewer"))
    assert "unreachable" in answer.body["message"], answer.body
    # The nodes reported it: every node that loaded 1.2.0 said its smoke check failed.
    reports = [s for view in cluster.plane.hub.view() for s in view.smoke if s[:2] == ("calc", "1.2.0")]
    assert all(not passed for *_, passed, _ in reports)
