"""A follower replica shows the conditions the leader's passes reported (issue 23): they are written to
the store, and a replica that does not lead answers `GET /status` and `GET /deployments` from there."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.server import ControlPlane
from tests.api.conftest import call
from tests.e2e.cluster import Cluster, FleetRepo, poll
from tests.ha.replicas import replica_pair, status_of

NODE = "edge-us-east-1"


@pytest.fixture
async def replicas(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[FleetRepo, ControlPlane, Cluster]]:
    """A leader, and a follower with one node registered to it, on one PostgreSQL."""
    async with replica_pair(tmp_path, database_url, NODE) as pair:
        yield pair.repo, pair.leader, pair.cluster


def module_conditions(status: dict[str, Any] | None, module: str) -> list[dict[str, Any]]:
    if status is None:
        return []
    return next((m["conditions"] for m in status["modules"] if m["module"] == module), [])


def holds(conditions: list[dict[str, Any]], type_: str, reason: str) -> bool:
    return any(c["type"] == type_ and c["status"] == "True" and c["reason"] == reason for c in conditions)


async def test_a_follower_shows_the_leaders_conditions_of_a_rollout_waiting_for_approval(
    replicas: tuple[FleetRepo, ControlPlane, Cluster],
) -> None:
    repo, leader, cluster = replicas
    follower = cluster.plane
    token = cluster.token("viewer")
    repo.edit("strategies/canary.yaml", "  type: Canary\n", "  type: Canary\n  approval: {beforeStart: true}\n")
    source = repo.derive_wat("greeter-1.1.0.wat", "greeter-1.3.0.wat", **{"1.1.0": "1.3.0"})
    repo.set_module("greeter", "1.3.0", source)

    async def follower_shows_the_wait() -> bool:
        status = await status_of(follower.url, token)
        return holds(module_conditions(status, "greeter"), "Paused", "AwaitingApproval")

    await poll(follower_shows_the_wait, "the follower to show greeter's rollout awaiting approval")
    on_follower = await status_of(follower.url, token)
    on_leader = await status_of(leader.url, token)
    assert on_follower is not None and on_leader is not None
    assert (on_leader["leader"], on_follower["leader"]) == (True, False)
    assert not follower.controller.module_conditions("greeter")  # not from the follower's own memory
    # The rollout waits for a person: nothing changes, and both replicas give the same answer.
    assert module_conditions(on_follower, "greeter") == module_conditions(on_leader, "greeter")
    assert module_conditions(on_follower, "calc") == module_conditions(on_leader, "calc") != []

    listed: list[dict[str, Any]] = []

    async def follower_lists_the_rollout() -> bool:  # its rollout book is read again every second
        answer = await call(follower.url, "GET", "/api/v1/wasm/deployments?module=greeter&active=1", token)
        assert answer.status == 200, answer.body
        listed[:] = answer.body["deployments"]
        return bool(listed)

    await poll(follower_lists_the_rollout, "the follower to list greeter's rollout")
    (deployment,) = listed
    assert deployment["toVersion"] == "1.3.0" and deployment["phase"] == "WaitingApproval"
    assert deployment["conditions"] == module_conditions(on_follower, "greeter")
    one = await call(follower.url, "GET", f"/api/v1/wasm/deployments/{deployment['id']}", token)
    assert one.status == 200 and one.body["conditions"] == deployment["conditions"]
