"""Planner snapshots as JSON, so `hotswap diff` can plan on its own machine from what the control
plane observes (nodes, rollout records, approvals, metrics) and a fleet from the working tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter

from reconciler.planner import ObservedNode, RegionMetrics, RolloutRecord, Snapshot
from reconciler.spec.approvals import Approval
from reconciler.spec.fleet import DesiredFleet

_NODES = TypeAdapter(tuple[ObservedNode, ...])
_RECORDS = TypeAdapter(tuple[RolloutRecord, ...])
_APPROVALS = TypeAdapter(tuple[Approval, ...])
_METRICS = TypeAdapter(tuple[RegionMetrics, ...])


def snapshot_json(
    nodes: Sequence[ObservedNode],
    records: Sequence[RolloutRecord],
    approvals: Sequence[Approval],
    metrics: Sequence[RegionMetrics],
    now: float,
    revision: str | None,
) -> dict[str, Any]:
    return {
        "now": now,
        "revision": revision,
        "nodes": _NODES.dump_python(tuple(nodes), mode="json"),
        "records": _RECORDS.dump_python(tuple(records), mode="json"),
        "approvals": _APPROVALS.dump_python(tuple(approvals), mode="json"),
        "metrics": _METRICS.dump_python(tuple(metrics), mode="json"),
    }


def snapshot_from_json(data: dict[str, Any], desired: DesiredFleet) -> Snapshot:
    return Snapshot(
        desired=desired,
        now=float(data["now"]),
        nodes=_NODES.validate_python(data["nodes"]),
        records=_RECORDS.validate_python(data["records"]),
        approvals=_APPROVALS.validate_python(data["approvals"]),
        metrics=_METRICS.validate_python(data["metrics"]),
    )
