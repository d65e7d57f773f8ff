"""Second outside attack (issue 16, "Done when"): what a node token holder can put in its reports.

SECURITY.md: "Registration bounds every field (`edge.nodeapi`), including the generation a node
reports", and a node lying about its traffic is "diluted by the others' truth". Seen on a real
control plane with a node token:
- a heartbeat with `generation: 10**29` is taken (registration caps it at 2**53, the heartbeat
  does not) and shown as the node's `appliedGeneration`;
- metric counters may be negative: `{"requests": -1000000, "errors": -1000000}` for a version the
  node was assigned is summed into the analysis as is (reconciler.apply.nodes.Totals.add), so one node
  can cancel every other node's errors instead of being diluted by them;
- registration takes a 200 KB `zone`, a 200 KB `runtimeVersion`, 20,000 `wasi` entries and any
  string as `url` (`file:///etc/passwd`, `http://169.254.169.254/...`), which the control plane
  later POSTs execute calls to.
Safe: each of these is a 400 naming the field.
"""

from __future__ import annotations

from typing import Any

import pytest

from edge.nodeapi import NODES_PATH
from tests.api.conftest import call
from tests.e2e.cluster import Cluster, poll

ROGUE = "edge-rogue"


def _registration(**more: Any) -> dict[str, Any]:
    return {"id": ROGUE, "region": "us-east", "hostname": "rogue", "url": "http://127.0.0.1:9", **more}


@pytest.mark.parametrize(
    "field",
    [
        {"zone": "z" * 200_000},
        {"runtimeVersion": "v" * 200_000},
        {"wasi": ["preview1"] * 20_000},
        {"url": "file:///etc/passwd"},
        {"url": "http://169.254.169.254/latest/meta-data/?"},
        {"url": "u" * 200_000},
    ],
    ids=["zone", "runtimeVersion", "wasi", "file-url", "url-with-query", "url-length"],
)
async def test_registration_bounds_every_field(cluster: Cluster, field: dict[str, Any]) -> None:
    token = cluster.plane.mint(ROGUE, "node")
    answer = await call(cluster.url, "POST", NODES_PATH, token, json=_registration(**field))
    assert answer.status == 400, f"{next(iter(field))}: {answer.status} {str(answer.body)[:200]}"


async def _registered_rogue_with_calc(cluster: Cluster) -> tuple[str, dict[str, Any]]:
    token = cluster.plane.mint(ROGUE, "node")
    assert (await call(cluster.url, "POST", NODES_PATH, token, json=_registration())).status in (200, 201)
    found: dict[str, Any] = {}

    async def assigned() -> bool:
        answer = await call(cluster.url, "GET", f"{NODES_PATH}/{ROGUE}/assignment?after=0", token)
        if answer.status == 200:
            found.update(answer.body)
        beat = {"generation": found.get("generation", 0), "running": _running(found)}
        assert (await call(cluster.url, "POST", f"{NODES_PATH}/{ROGUE}/heartbeat", token, json=beat)).status == 200
        return any(e["module"] == "calc" for e in found.get("modules", []))

    await poll(assigned, "calc assigned to the rogue node")
    return token, found


def _running(table: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"module": e["module"], "version": e["version"], "digest": e["digest"], "weight": e["weight"]}
        for e in table.get("modules", [])
    ]


async def test_a_heartbeat_cannot_report_a_generation_registration_would_refuse(cluster: Cluster) -> None:
    token, table = await _registered_rogue_with_calc(cluster)
    beat = {"generation": 10**29, "running": _running(table)}
    answer = await call(cluster.url, "POST", f"{NODES_PATH}/{ROGUE}/heartbeat", token, json=beat)
    assert answer.status == 400, answer.status
    views = {v.id: v for v in cluster.plane.hub.view()}
    assert views[ROGUE].applied_generation <= 2**53


async def test_a_node_cannot_report_negative_traffic(cluster: Cluster) -> None:
    token, table = await _registered_rogue_with_calc(cluster)
    lie = {"module": "calc", "version": "1.0.0", "requests": -1_000_000, "errors": -1_000_000}
    beat = {"generation": table["generation"], "running": _running(table), "metrics": [lie]}
    answer = await call(cluster.url, "POST", f"{NODES_PATH}/{ROGUE}/heartbeat", token, json=beat)
    assert answer.status == 400, answer.status
    totals = cluster.plane.hub.metrics.since("calc", "1.0.0", "us-east", 0)
    assert totals.requests >= 0 and totals.errors >= 0, (totals.requests, totals.errors)


def test_a_long_load_error_is_cut_not_refused() -> None:
    from edge.nodeapi import FAILED_REASON_CHARS, Heartbeat

    beat = Heartbeat.model_validate({"failed": {"calc@1.0.0": "x" * 100_000}})
    assert len(beat.failed["calc@1.0.0"]) == FAILED_REASON_CHARS  # the node stays Healthy, its reason short
