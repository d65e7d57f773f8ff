"""The running control plane's API with real nodes: status, nodes, deployments, snapshot and diff."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hotswap.cli import main
from tests.e2e.cluster import Cluster, poll, start_cluster, stop_cluster

REGIONS = [("edge-us-east-1", "us-east"), ("edge-eu-central-1", "eu-central")]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = await start_cluster(tmp_path, REGIONS)
    try:
        await cluster.wait_ready(len(REGIONS))
        await cluster.wait_all_serving("calc", "1.0.0", [n for n, _ in REGIONS])
        yield cluster
    finally:
        await stop_cluster(cluster)


async def call(cluster: Cluster, method: str, path: str, role: str = "admin", **kwargs: Any) -> tuple[int, Any]:
    headers = cluster.headers(role) if role else {}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.request(method, cluster.url + path, **kwargs) as r,
    ):
        body = await r.json(content_type=None) if r.status != 204 else None
        return r.status, body


async def test_status_nodes_and_deployments(cluster: Cluster) -> None:
    status, body = await call(cluster, "GET", "/api/v1/wasm/status")
    assert status == 200
    assert body["appliedRevision"] == body["source"]["lastAppliedRevision"]
    assert {m["module"] for m in body["modules"]} == {"calc", "greeter", "wc", "hello"}
    calc = next(m for m in body["modules"] if m["module"] == "calc")
    assert calc["rollout"]["phase"] == "Promoted"
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in calc["conditions"])

    status, body = await call(cluster, "GET", "/api/v1/wasm/nodes")
    nodes = {n["id"]: n for n in body["nodes"]}
    assert set(nodes) == {"edge-us-east-1", "edge-eu-central-1"}
    assert nodes["edge-us-east-1"]["region"] == "us-east"
    assert nodes["edge-us-east-1"]["url"].startswith("http://127.0.0.1:")
    assert {"module": "calc", "version": "1.0.0"}.items() <= nodes["edge-us-east-1"]["modules"][0].items()

    status, health = await call(cluster, "GET", "/api/v1/wasm/nodes/edge-us-east-1/health")
    assert status == 200
    assert set(health) == {
        "status", "modulesDeployed", "cpuUsagePercent", "memoryUsageMB", "lastHeartbeat", "wasmRuntimeVersion"
    }  # fmt: skip
    assert health["status"] == "Healthy" and health["wasmRuntimeVersion"].startswith("wasmtime-")

    status, body = await call(cluster, "GET", "/api/v1/wasm/deployments")
    ids = [d["id"] for d in body["deployments"]]
    status, one = await call(cluster, "GET", f"/api/v1/wasm/deployments/{ids[0]}")
    assert status == 200 and one["id"] == ids[0] and isinstance(one["steps"], list)
    assert (await call(cluster, "GET", "/api/v1/wasm/deployments/nope"))[0] == 404
    status, source = await call(cluster, "GET", "/api/v1/wasm/source")
    assert source["branch"] == "main" and source["path"] == "fleet"


async def test_node_protocol_refuses_bad_requests(cluster: Cluster) -> None:
    assert (await call(cluster, "GET", "/api/v1/wasm/nodes", role=""))[0] == 401
    assert (await call(cluster, "POST", "/api/v1/wasm/nodes", data=b"{nope"))[0] == 400
    status, body = await call(cluster, "POST", "/api/v1/wasm/nodes", json={"id": "Bad Id", "region": "x"})
    assert status == 400 and body["message"].startswith("id:")
    status, body = await call(cluster, "POST", "/api/v1/wasm/nodes/ghost/heartbeat", json={"generation": 1})
    assert status == 404 and "register again" in body["message"]
    assert (await call(cluster, "GET", "/api/v1/wasm/nodes/ghost/assignment?after=0"))[0] == 404
    assert (await call(cluster, "GET", "/api/v1/wasm/nodes/edge-us-east-1/assignment?after=x"))[0] == 400
    assert (await call(cluster, "GET", "/api/v1/wasm/nodes/ghost"))[0] == 404
    # A node already at the newest generation waits, then gets 204.
    node = next(v for v in cluster.plane.hub.view() if v.id == "edge-us-east-1")
    status, _ = await call(
        cluster, "GET", f"/api/v1/wasm/nodes/edge-us-east-1/assignment?after={node.generation}&wait=0.1"
    )
    assert status == 204


async def test_deleted_node_registers_again(cluster: Cluster) -> None:
    status, _ = await call(cluster, "DELETE", "/api/v1/wasm/nodes/edge-eu-central-1")
    assert status == 204
    assert (await call(cluster, "DELETE", "/api/v1/wasm/nodes/ghost"))[0] == 404
    await poll(lambda: cluster.plane.hub.known("edge-eu-central-1"), "the node to register again")
    await cluster.wait_all_serving("calc", "1.0.0", ["edge-eu-central-1"])


async def test_status_and_diff_verbs(
    cluster: Cluster, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = cluster.repo.fleet
    monkeypatch.setenv("HOTSWAP_TOKEN", cluster.token("viewer"))
    monkeypatch.setenv("COLUMNS", "240")  # rich draws for 80 columns without a terminal
    assert await asyncio.to_thread(main, ["status", "--control", cluster.url]) == 0
    out = capsys.readouterr().out
    assert "calc" in out and "Promoted" in out and "us-east" in out  # table cells may be cut, not these
    assert await asyncio.to_thread(main, ["status", "--json", "--control", cluster.url]) == 0
    document = json.loads(capsys.readouterr().out)
    assert {n["id"] for n in document["nodes"]} == {"edge-us-east-1", "edge-eu-central-1"}
    assert await asyncio.to_thread(main, ["diff", str(fleet), "--control", cluster.url]) == 0
    assert "no change" in capsys.readouterr().out
    cluster.repo.edit("modules/calc.yaml", "version: 1.0.0", "version: 1.1.0")
    cluster.repo.edit("modules/calc.yaml", "calc-1.0.0.wat", "calc-1.1.0.wat")
    assert await asyncio.to_thread(main, ["diff", str(fleet), "--control", cluster.url]) == 1
    out = capsys.readouterr().out
    assert "rollout calc: 1.0.0 -> 1.1.0 by blue-green" in out
    assert "edge-us-east-1: + calc@1.1.0 weight 0" in out  # blue-green loads the new version at 0 %


def test_diff_without_control_plane_compares_with_head(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.e2e.cluster import FleetRepo

    repo = FleetRepo(tmp_path)
    repo.edit("modules/calc.yaml", "version: 1.0.0", "version: 1.1.0")
    repo.edit("modules/calc.yaml", "calc-1.0.0.wat", "calc-1.1.0.wat")
    assert main(["diff", str(repo.fleet), "--control", "http://127.0.0.1:9"]) == 1
    captured = capsys.readouterr()
    assert "comparing with Git HEAD" in captured.err
    assert "rollout: calc: 1.0.0 -> 1.1.0 by blue-green" in captured.out


async def test_a_deprecated_interface_shows_in_status(cluster: Cluster) -> None:
    cluster.repo.edit("interfaces/greeter.yaml", "wasi: preview1", "wasi: preview1\n  deprecated: true")
    head = cluster.repo.commit("deprecate greeter 1.0.0")

    async def warned() -> bool:
        status, body = await call(cluster, "GET", "/api/v1/wasm/status", role="viewer")
        return status == 200 and body["revision"] == head and bool(body["warnings"])

    await poll(warned, "the deprecation warning in status")
    _, body = await call(cluster, "GET", "/api/v1/wasm/status", role="viewer")
    assert body["warnings"] == [
        "modules/greeter.yaml:12: spec.implements: warning: interface example:greeter@1.0.0 is deprecated"
    ]
