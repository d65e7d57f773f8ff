"""What a pass plans from: the hub's node views and tables, the rollout book and the metrics windows,
as the planner's `Snapshot`.

Where it sits: in `apply`, between the node hub (`reconciler.apply.nodes`) and the planner. The
controller owns one `SnapshotBuilder`; it reads `Seen` on the event loop (cheap) and converts in
a pass's worker thread, each node's view and table once while they stay the same objects.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from edge.protocol import ModuleTable
from reconciler import planner
from reconciler.apply.metricswindow import MetricsWindow
from reconciler.apply.noderows import NodeView, RunningKey
from reconciler.apply.tables import from_wire
from reconciler.planner import (
    AssignmentEntry,
    NodeStatus,
    ObservedNode,
    RegionMetrics,
    RunningEntry,
    SmokeResult,
    Snapshot,
)
from reconciler.spec.approvals import Approval
from reconciler.spec.fleet import DesiredFleet


@dataclass(frozen=True)
class Seen:
    """What a snapshot reads of the loop's state, taken on the loop (`Controller._observe`)."""

    views: list[NodeView]
    tables: list[ModuleTable | None]
    records: tuple[planner.RolloutRecord, ...]
    metrics: tuple[RegionMetrics, ...]


def running_entries(running: RunningKey) -> tuple[RunningEntry, ...]:
    return tuple(RunningEntry(m, v, d, w) for m, v, d, w in running)


def observed(
    view: NodeView, assigned: tuple[AssignmentEntry, ...], running: tuple[RunningEntry, ...] | None = None
) -> ObservedNode:
    """The planner's node for a view; `running`, when given, is `running_entries(view.running)`
    already made (and shared)."""
    return ObservedNode(
        id=view.id,
        region=view.region,
        status=NodeStatus(view.status),
        max_modules=view.max_modules,
        assigned=assigned,
        running=running_entries(view.running) if running is None else running,
        last_heartbeat=view.last_heartbeat,
        smoke=tuple(SmokeResult(m, v, d, passed, error) for m, v, d, passed, error in view.smoke),
    )


def metrics_for(window: MetricsWindow, records: tuple[planner.RolloutRecord, ...]) -> tuple[RegionMetrics, ...]:
    """Per active rollout, what each version served in each region since its step began."""
    out: list[RegionMetrics] = []
    for record in planner.latest_records(records).values():
        if not record.active:
            continue
        versions = {record.target.version}
        if record.previous is not None:
            versions.add(record.previous.version)
        out.extend(window.since_by_region(record.module, versions, record.step_started_at).values())
    return tuple(out)


class SnapshotBuilder:
    """`Seen` -> `Snapshot`, converting only the nodes whose view or table object changed. A pass's
    worker thread and the API (on the loop) both build; one at a time.

    Nodes that report the same modules share one tuple of `RunningEntry` (every node of a region, in
    a fleet at rest): a heartbeat that changes nothing it runs makes no new entries, and a switch
    that changes a region makes one tuple for the region, not one per node. That also keeps the
    garbage collector's young generation small. Objects freed as fast as they are made keep its
    allocation count under its threshold, so at 1,000 nodes a pass's 50,000 new entries, sets and
    tuples all waited for one young collection of 20-30 ms, with the GIL, on the event loop's time
    (bench/scale.py's stall sampler). The planner's index of what nodes run keeps sharing them
    (`reconciler.planner.incremental`)."""

    def __init__(self) -> None:
        # node id -> (the hub's table object, its entries as the planner's): what each node was last
        # given, converted once; it counts only while the hub still holds that very table object.
        self._assigned: dict[str, tuple[ModuleTable, tuple[AssignmentEntry, ...]]] = {}
        self._observed: dict[str, tuple[NodeView, tuple[AssignmentEntry, ...], ObservedNode]] = {}
        self._running: dict[RunningKey, tuple[RunningEntry, ...]] = {}  # a view's `running` -> its entries, shared
        self._lock = threading.Lock()

    def given(self, node_id: str, table: ModuleTable, entries: tuple[AssignmentEntry, ...]) -> None:
        """A node was just given `table`, whose entries are `entries` (no conversion back needed)."""
        with self._lock:
            self._assigned[node_id] = (table, entries)

    def forget(self) -> None:
        with self._lock:
            self._assigned.clear()
            self._observed.clear()
            self._running.clear()

    def build(
        self,
        desired: DesiredFleet,
        approvals: tuple[Approval, ...],
        now: float,
        seen: Seen,
        base: DesiredFleet | None = None,
    ) -> Snapshot:
        with self._lock:
            return Snapshot(
                desired=desired,
                now=now,
                nodes=self._nodes(seen),
                records=seen.records,
                approvals=approvals,
                metrics=seen.metrics,
                base=base,
            )

    def _nodes(self, seen: Seen) -> tuple[ObservedNode, ...]:
        nodes = []
        for view, table in zip(seen.views, seen.tables, strict=True):
            cached = self._assigned.get(view.id)
            if cached is not None and cached[0] is table:
                assigned = cached[1]
            elif table is not None:
                assigned = tuple(from_wire(e) for e in table.modules)
                self._assigned[view.id] = (table, assigned)
            else:
                assigned = ()
            known = self._observed.get(view.id)  # the hub hands out the same view until the node's row changes
            if known is None or known[0] is not view or known[1] is not assigned:
                known = (view, assigned, observed(view, assigned, self._shared(view.running)))
                self._observed[view.id] = known
            nodes.append(known[2])
        used = {id(node.running) for node in nodes}
        if len(self._running) > len(used):  # reports no node makes any longer: not kept for a node that moved on
            self._running = {key: entries for key, entries in self._running.items() if id(entries) in used}
        if len(self._assigned) > len(nodes) or len(self._observed) > len(nodes):  # nodes deleted since
            ids = {view.id for view in seen.views}
            for cache in (self._assigned, self._observed):
                for node_id in [n for n in cache if n not in ids]:
                    del cache[node_id]
        return tuple(nodes)

    def _shared(self, running: RunningKey) -> tuple[RunningEntry, ...]:
        entries = self._running.get(running)
        if entries is None:
            entries = self._running[running] = running_entries(running)
        return entries
