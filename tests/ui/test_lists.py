"""Lists at scale: nodes and modules take ?limit=&offset=&q= (and nodes ?status=), answering `total`
and `offset` with a limit and exactly as before without one; the audit log filters by ?action= and
?q= on the server."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import call
from tests.e2e.cluster import Cluster, poll


async def get(cluster: Cluster, path: str) -> Any:
    answer = await call(cluster.url, "GET", path, cluster.token("viewer"))
    assert answer.status == 200, answer.body
    return answer.body


async def test_nodes_page_filter_and_total(plane_with_nodes: Cluster) -> None:
    cluster = plane_with_nodes
    whole = await get(cluster, "/api/v1/wasm/nodes")
    assert set(whole) == {"nodes"} and len(whole["nodes"]) == 2
    first = await get(cluster, "/api/v1/wasm/nodes?limit=1")
    second = await get(cluster, "/api/v1/wasm/nodes?limit=1&offset=1")
    assert first["total"] == second["total"] == 2 and first["offset"] == 0 and second["offset"] == 1
    assert [n["id"] for n in first["nodes"] + second["nodes"]] == [n["id"] for n in whole["nodes"]]
    euro = await get(cluster, "/api/v1/wasm/nodes?limit=10&q=EU-CENTRAL")
    assert [n["id"] for n in euro["nodes"]] == ["edge-eu-central-1"] and euro["total"] == 1
    by_module = await get(cluster, "/api/v1/wasm/nodes?limit=10&q=calc@1.0.0")
    assert by_module["total"] == 2
    healthy = await get(cluster, "/api/v1/wasm/nodes?limit=10&status=healthy")
    assert healthy["total"] == 2
    draining = await get(cluster, "/api/v1/wasm/nodes?limit=10&status=Draining")
    assert draining == {"nodes": [], "total": 0, "offset": 0}
    past = await get(cluster, "/api/v1/wasm/nodes?limit=5&offset=10")
    assert past["nodes"] == [] and past["total"] == 2


async def test_bad_page_parameters_are_400(plane: Cluster) -> None:
    long = "q=" + "x" * 201
    assert (await call(plane.url, "GET", f"/api/v1/wasm/audit?{long}", plane.token("viewer"))).status == 400
    for query in ("limit=0", "limit=1001", "limit=x", "offset=-1", long):
        answer = await call(plane.url, "GET", f"/api/v1/wasm/nodes?{query}", plane.token("viewer"))
        assert answer.status == 400, query
        answer = await call(plane.url, "GET", f"/api/v1/wasm/modules?{query}", plane.token("viewer"))
        assert answer.status == 400, query


async def test_modules_page_filter_and_total(plane: Cluster) -> None:
    await poll(lambda: plane.plane.source.latest is not None and plane.plane.controller.state.passes > 0, "a pass")

    async def registered() -> bool:  # every binary the fleet names (a pass may end before the last one)
        latest = plane.plane.source.latest
        wanted = len(latest.fleet.binaries) if latest is not None and latest.fleet is not None else 3
        return len((await get(plane, "/api/v1/wasm/modules"))["modules"]) >= wanted

    await poll(registered, "the fleet's modules to be registered")
    whole = await get(plane, "/api/v1/wasm/modules")
    assert set(whole) == {"modules"}
    calc = await get(plane, "/api/v1/wasm/modules?limit=100&q=CALC")
    assert calc["total"] == len(calc["modules"]) >= 1
    assert all("calc" in m["id"] for m in calc["modules"])
    paged = await get(plane, "/api/v1/wasm/modules?limit=2&offset=1")
    assert paged["total"] == len(whole["modules"]) and paged["modules"] == whole["modules"][1:3]


async def test_audit_filters_by_action_and_text(plane_with_nodes: Cluster) -> None:
    cluster = plane_with_nodes
    everything = await get(cluster, "/api/v1/wasm/audit?limit=1000")
    actions = {e["action"] for e in everything["entries"]}
    assert "node.registered" in actions
    registered = await get(cluster, "/api/v1/wasm/audit?action=node.registered")
    assert registered["entries"] and all(e["action"] == "node.registered" for e in registered["entries"])
    prefix = await get(cluster, "/api/v1/wasm/audit?action=node.")
    assert all(e["action"].startswith("node.") for e in prefix["entries"])
    euro = await get(cluster, "/api/v1/wasm/audit?q=EDGE-EU-CENTRAL")
    assert euro["entries"] and all("edge-eu-central" in str(e).lower() for e in euro["entries"])
    one = await get(cluster, "/api/v1/wasm/audit?action=node.registered&limit=1")
    assert len(one["entries"]) == 1 and one["next"] == one["entries"][0]["seq"]


async def test_deployments_page_newest_first_and_active_only(plane_with_nodes: Cluster) -> None:
    cluster = plane_with_nodes

    async def started() -> bool:
        return len((await get(cluster, "/api/v1/wasm/deployments"))["deployments"]) >= 2

    await poll(started, "the first rollouts")
    whole = (await get(cluster, "/api/v1/wasm/deployments"))["deployments"]
    assert "total" not in await get(cluster, "/api/v1/wasm/deployments")  # unchanged without a limit
    newest = await get(cluster, "/api/v1/wasm/deployments?limit=1&order=desc")
    assert newest["total"] == len(whole) and [d["id"] for d in newest["deployments"]] == [whole[-1]["id"]]
    oldest = await get(cluster, "/api/v1/wasm/deployments?limit=1")
    assert [d["id"] for d in oldest["deployments"]] == [whole[0]["id"]]
    calc = await get(cluster, "/api/v1/wasm/deployments?limit=50&q=CALC")
    assert calc["total"] >= 1 and all(d["module"] == "calc" for d in calc["deployments"])
    active = await get(cluster, "/api/v1/wasm/deployments?limit=50&active=1")
    phases = {"Pending", "WaitingApproval", "Progressing", "Paused"}
    assert all(d["phase"] in phases for d in active["deployments"])
