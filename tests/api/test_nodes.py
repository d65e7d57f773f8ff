"""With real edge nodes: an operator's rollback through the API acts on the next pass, execute on the
control plane routes to a node that holds the module and fails over, and nodes refuse execute
calls without a token the control plane signed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.api.conftest import call
from tests.e2e.cluster import Cluster, poll, start_cluster, stop_cluster

NODES = [("edge-us-east-1", "us-east"), ("edge-us-east-2", "us-east")]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = await start_cluster(tmp_path, NODES)
    try:
        await cluster.wait_ready(len(NODES))
        await cluster.wait_all_serving("calc", "1.0.0", [n for n, _ in NODES])
        yield cluster
    finally:
        await stop_cluster(cluster)


async def test_rollback_through_the_api_acts_on_the_next_pass(cluster: Cluster) -> None:
    await cluster.wait_all_serving("greeter", "1.1.0", [n for n, _ in NODES])
    cluster.repo.set_module("greeter", "1.2.0", "greeter-1.2.0-faulty.wat")
    record = await cluster.wait_phase("greeter", "1.2.0", ["Paused"])  # no traffic: the canary waits
    controller = cluster.plane.controller
    answer = await call(
        cluster.url, "POST", f"/api/v1/wasm/deployments/{record.id}/rollback", cluster.token("operator")
    )
    assert answer.status == 202, answer.body
    assert answer.body["request"] == "rollback" and answer.body["requestedBy"] == "test-operator"
    # The second pass to finish after the answer began after it: it has acted on the request.
    assert await controller.wait_for_pass(controller.state.passes + 1, 10.0)
    latest = cluster.latest("greeter")
    assert latest.id == record.id and latest.reason == "ManualRollback"
    await cluster.wait_all_serving("greeter", "1.1.0", [n for n, _ in NODES])
    by_module_id = await call(cluster.url, "GET", "/api/v1/wasm/deployments/greeter-v1.2.0", cluster.token("viewer"))
    assert by_module_id.status == 200 and by_module_id.body["id"] == record.id
    audit = cluster.plane.store.audit_log(subject=record.id)
    assert ("test-operator", "rollout.rollback") in [(a.actor, a.action) for a in audit]
    again = await call(cluster.url, "POST", f"/api/v1/wasm/deployments/{record.id}/rollback", cluster.token("admin"))
    assert again.status == 409 and "RolledBack" in again.body["message"]


async def test_execute_on_the_control_plane_routes_and_fails_over(cluster: Cluster) -> None:
    token = cluster.token("developer")
    body = {"module": "calc", "function": "add", "args": [2, 3]}
    served = set()
    for _ in range(4):
        answer = await call(cluster.url, "POST", "/api/v1/wasm/execute", token, json=body)
        assert answer.status == 200, answer.body
        assert answer.body["result"] == 5 and answer.headers["X-Hotswap-Version"] == "1.0.0"
        served.add(answer.headers["X-Hotswap-Node"])
    assert served == {n for n, _ in NODES}  # calls spread over the nodes
    cluster.nodes[0].kill()
    for _ in range(4):  # the control plane still thinks the dead node healthy: it tries, then fails over
        answer = await call(cluster.url, "POST", "/api/v1/wasm/execute", token, json=body)
        assert answer.status == 200 and answer.headers["X-Hotswap-Node"] == NODES[1][0], answer.body
    wrong = await call(cluster.url, "POST", "/api/v1/wasm/execute", token, json={**body, "function": "nope"})
    assert wrong.status == 404
    missing = await call(cluster.url, "POST", "/api/v1/wasm/execute", token, json={"module": "ghost", "function": "f"})
    assert missing.status == 404 and "not in the fleet" in missing.body["message"]
    cluster.nodes[1].kill()
    gone = await call(cluster.url, "POST", "/api/v1/wasm/execute", token, json=body)
    assert gone.status in (502, 503), gone.body  # every node serving calc is down


async def test_nodes_accept_only_tokens_the_control_plane_signed(cluster: Cluster) -> None:
    url = cluster.node_urls()[NODES[0][0]]
    body = {"module": "calc", "function": "add", "args": [1, 1]}
    assert (await call(url, "POST", "/api/v1/wasm/execute", json=body)).status == 401
    assert (await call(url, "POST", "/api/v1/wasm/execute", cluster.edge_token("viewer"), json=body)).status == 403
    answer = await call(url, "POST", "/api/v1/wasm/execute", cluster.edge_token("developer"), json=body)
    assert answer.status == 200 and answer.body["result"] == 2


async def test_pause_holds_a_rollout_and_resume_lets_it_go_on(cluster: Cluster) -> None:
    nodes = [n for n, _ in NODES]
    await cluster.wait_all_serving("greeter", "1.1.0", nodes)
    cluster.repo.edit(
        "strategies/canary.yaml", "minRequests: 20, onNoTraffic: pause", "minRequests: 0, onNoTraffic: proceed"
    )
    cluster.repo.edit("strategies/canary.yaml", "stepSeconds: 0.6", "stepSeconds: 1.0")
    cluster.repo.set_module("greeter", "1.0.1", "greeter-1.0.0.wat")
    record = await cluster.wait_phase("greeter", "1.0.1", ["Progressing"])
    answer = await call(cluster.url, "POST", f"/api/v1/wasm/deployments/{record.id}/pause", cluster.token("operator"))
    assert answer.status == 202, answer.body
    controller = cluster.plane.controller
    held = cluster.latest("greeter")
    # Past the step's time, a pass leaves the held rollout where it was.
    deadline = held.step_started_at + 1.5
    await poll(lambda: time.time() > deadline, "the step's time to pass")
    passes = controller.state.passes
    controller.poke()
    assert await controller.wait_for_pass(passes, 5.0)
    now = cluster.latest("greeter")
    assert now.held and now.step == held.step and now.phase.value == "Progressing"
    answer = await call(cluster.url, "POST", f"/api/v1/wasm/deployments/{record.id}/resume", cluster.token("admin"))
    assert answer.status == 202, answer.body
    final = await cluster.wait_phase("greeter", "1.0.1", ["Promoted"])
    assert not final.held
    actions = [a.action for a in cluster.plane.store.audit_log(subject=record.id)]
    assert "rollout.pause" in actions and "rollout.resume" in actions


async def test_a_drained_node_hands_its_modules_over_and_comes_back(cluster: Cluster) -> None:
    nodes = [n for n, _ in NODES]
    await cluster.wait_all_serving("calc", "1.0.0", nodes)
    answer = await call(cluster.url, "POST", "/api/v1/wasm/nodes/edge-us-east-1/drain", cluster.token("operator"))
    assert answer.status == 202 and answer.body["status"] == "Draining"
    await poll(lambda: cluster.serving("calc").get("edge-us-east-1") == set(), "the drained node to empty")
    assert cluster.serving("calc")["edge-us-east-2"] == {("1.0.0", 100)}
    # It stays drained across a re-registration, and comes back when undrained.
    answer = await call(cluster.url, "DELETE", "/api/v1/wasm/nodes/edge-us-east-1/drain", cluster.token("admin"))
    assert answer.status == 202 and answer.body["status"] == "Healthy"
    await cluster.wait_all_serving("calc", "1.0.0", nodes)
    missing = await call(cluster.url, "POST", "/api/v1/wasm/nodes/ghost/drain", cluster.token("admin"))
    assert missing.status == 404


async def test_accept_rewrite_is_refused_when_no_rewrite_is_held(cluster: Cluster) -> None:
    head = cluster.plane.source.latest.sha
    bad = await call(cluster.url, "POST", "/api/v1/wasm/source/accept-rewrite", cluster.token("admin"), json={})
    assert bad.status == 400 and bad.body["message"].startswith("head:")
    answer = await call(
        cluster.url, "POST", "/api/v1/wasm/source/accept-rewrite", cluster.token("admin"), json={"head": head}
    )
    assert answer.status == 409 and answer.body["error"] == "not_pending"
    assert (
        answer.body["message"] == f"{head} is not a rewritten head waiting for acceptance; no rewritten history is held"
    )
    assert cluster.plane.source._accepted_rewrite is None
    assert cluster.plane.store.audit_log(subject=head) == []
