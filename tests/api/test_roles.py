"""The spec's endpoint-role table, enforced: every role against every endpoint, allowed and refused.

Allowed means the request got past authorization (any answer but 401/403: the bodies here are
deliberately about things that do not exist, so nothing changes); refused means 403 naming roles.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import call
from tests.e2e.cluster import Cluster, poll

READ = {"admin", "developer", "operator", "viewer"}
ALL = READ | {"node"}
ROLES = sorted(ALL)

# (method, path, JSON body or None, roles allowed)
TABLE: list[tuple[str, str, Any, set[str]]] = [
    ("POST", "/api/v1/wasm/modules", {"name": "x"}, {"developer", "admin"}),
    ("GET", "/api/v1/wasm/modules", None, ALL),
    ("GET", "/api/v1/wasm/modules/nope-v1.0.0", None, ALL),
    ("DELETE", "/api/v1/wasm/modules/nope-v1.0.0", None, {"admin"}),
    ("POST", "/api/v1/wasm/deployments", {"module": "nope", "version": "1.0.0"}, {"developer", "admin"}),
    ("GET", "/api/v1/wasm/deployments", None, READ),
    ("GET", "/api/v1/wasm/deployments/nope", None, READ),
    ("POST", "/api/v1/wasm/deployments/nope-v1.0.0/execute", None, {"developer", "admin"}),  # a dev fleet
    ("POST", "/api/v1/wasm/deployments/nope/rollback", None, {"operator", "admin"}),
    ("POST", "/api/v1/wasm/deployments/nope/pause", None, {"operator", "admin"}),
    ("POST", "/api/v1/wasm/deployments/nope/resume", None, {"operator", "admin"}),
    ("POST", "/api/v1/wasm/execute", {"module": "nope", "function": "f"}, {"developer", "admin"}),
    ("GET", "/api/v1/wasm/nodes", None, ALL),
    ("POST", "/api/v1/wasm/nodes", {}, {"node", "admin"}),
    ("GET", "/api/v1/wasm/nodes/ghost", None, READ),
    ("GET", "/api/v1/wasm/nodes/ghost/health", None, READ),
    ("DELETE", "/api/v1/wasm/nodes/ghost", None, {"operator", "admin"}),
    ("POST", "/api/v1/wasm/nodes/ghost/drain", None, {"operator", "admin"}),
    ("DELETE", "/api/v1/wasm/nodes/ghost/drain", None, {"operator", "admin"}),
    ("POST", "/api/v1/wasm/nodes/ghost/heartbeat", {"generation": 0}, {"node", "admin"}),
    ("GET", "/api/v1/wasm/nodes/ghost/assignment?after=0", None, {"node", "admin"}),
    ("GET", "/api/v1/wasm/interfaces", None, READ),
    ("POST", "/api/v1/wasm/interfaces", {}, {"developer", "admin"}),
    ("GET", "/api/v1/wasm/interfaces/nope", None, READ),
    ("POST", "/api/v1/wasm/interfaces/nope/approve", None, {"admin"}),
    ("POST", "/api/v1/wasm/interfaces/nope/validate", {}, READ),
    ("GET", "/api/v1/wasm/source", None, READ),
    ("POST", "/api/v1/wasm/source/accept-rewrite", {"head": "0" * 40}, {"admin"}),
    ("GET", "/api/v1/wasm/status", None, READ),
    ("GET", "/api/v1/wasm/snapshot", None, READ),
    ("GET", "/api/v1/openapi.json", None, ALL),
]


async def test_each_role_against_each_endpoint(plane: Cluster) -> None:
    await poll(lambda: plane.plane.source.latest is not None, "the first revision")
    tokens = {role: plane.token(role, subject="ghost" if role == "node" else f"user-{role}") for role in ROLES}
    wrong: list[str] = []
    for method, path, body, allowed in TABLE:
        for role in ROLES:
            answer = await call(plane.url, method, path, tokens[role], json=body)
            if role in allowed and answer.status in (401, 403):
                wrong.append(f"{role} refused on {method} {path}: {answer.status} {answer.body}")
            if role not in allowed and answer.status != 403:
                wrong.append(f"{role} not refused on {method} {path}: {answer.status} {answer.body}")
            if answer.status == 403:
                assert (
                    "needs one of the roles" in answer.body["message"]
                    or "cannot act for node" in answer.body["message"]
                ), answer.body
            assert answer.status < 500 or answer.status == 503, f"{role} {method} {path}: {answer.status} {answer.body}"
    assert not wrong, "\n".join(wrong)


async def test_every_endpoint_but_health_needs_a_token(plane: Cluster) -> None:
    for method, path, body, _ in TABLE:
        answer = await call(plane.url, method, path, json=body)
        assert answer.status == 401, f"{method} {path}: {answer.status}"
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in answer.body["message"]
    health = await call(plane.url, "GET", "/health")
    assert health.status == 200 and health.body["status"] == "ok"


async def test_a_node_token_speaks_for_its_own_node_only(plane: Cluster) -> None:
    token = plane.token("node", subject="edge-a")
    body = {"id": "edge-b", "region": "us-east", "hostname": "h", "url": "http://127.0.0.1:9"}
    answer = await call(plane.url, "POST", "/api/v1/wasm/nodes", token, json=body)
    assert answer.status == 403 and "edge-a" in answer.body["message"]
    answer = await call(plane.url, "POST", "/api/v1/wasm/nodes", token, json={**body, "id": "edge-a"})
    assert answer.status == 201
    assert answer.body["publicKey"] == plane.plane.authority.public_key_pem


@pytest.mark.parametrize("environment", ["production"])
async def test_approving_a_deployment_in_production_is_for_admins(plane: Cluster, environment: str) -> None:
    plane.repo.edit("fleet.yaml", "environment: dev", f"environment: {environment}")
    sha = plane.repo.commit("production")
    await poll(lambda: (r := plane.plane.source.latest) is not None and r.sha == sha, "the production revision")
    path = "/api/v1/wasm/deployments/nope-v1.0.0/execute"
    answer = await call(plane.url, "POST", path, plane.token("developer"))
    assert answer.status == 403
    answer = await call(plane.url, "POST", path, plane.token("admin"))
    assert answer.status == 404  # allowed; the module does not exist
