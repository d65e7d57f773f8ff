"""A node's row as the hub keeps it: the view the planner and the API read, and the rules for taking
a newer row.

Where it sits: under `reconciler.apply.nodes.NodeHub`, which holds one `NodeRecord` per node (its own
writes, and rows other replicas wrote, `NodeHub.merge`) and hands out `NodeView`s made here, the
same view object while the row is the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from reconciler.store.records import JsonObject, NodeRecord


@dataclass(frozen=True)
class NodeView:
    """A node as the planner sees it: identity, capacity, health and what it runs."""

    id: str
    region: str
    url: str
    status: str  # Healthy | Unhealthy | Draining
    max_modules: int
    generation: int
    applied_generation: int
    running: tuple[tuple[str, str, str, int], ...]  # (module, version, digest, weight)
    failed: dict[str, str]
    last_heartbeat: float | None
    cpu_percent: float
    memory_mb: float
    # (module, version, digest, passed, error): each loaded version's smoke check (edge.smoke)
    smoke: tuple[tuple[str, str, str, bool, str | None], ...] = ()


RunningKey = tuple[tuple[str, str, str, int], ...]  # a view's `running`: (module, version, digest, weight)


class SharedReports:
    """One `running` tuple for the views that report the same (every node of a region, at rest), kept
    while a view holds it: a node that reports something else lets go of what it reported before,
    so what is kept is at most one report per node, as the views themselves."""

    def __init__(self) -> None:
        self._held: dict[RunningKey, tuple[RunningKey, int]] = {}  # report -> (the shared tuple, views)

    def take(self, running: RunningKey) -> RunningKey:
        kept, views = self._held.get(running, (running, 0))
        self._held[running] = (kept, views + 1)
        return kept

    def drop(self, running: RunningKey) -> None:
        held = self._held.get(running)
        if held is None or held[0] is not running:
            return
        kept, views = held
        if views > 1:
            self._held[running] = (kept, views - 1)
        else:
            del self._held[running]


def view_of(node: NodeRecord, status: str, generation: int, shared: SharedReports | None = None) -> NodeView:
    """The planner's view of a node row, with its health as judged now and its table's generation.
    With `shared`, views that report the same hold one `running` tuple (the caller drops a view's when
    it lets the view go): a region's nodes on one table hold one, not a copy each for the collector."""
    reported = node.reported or {}
    running = tuple((r["module"], r["version"], r["digest"], int(r["weight"])) for r in reported.get("running", []))
    if shared is not None:
        running = shared.take(running)
    return NodeView(
        id=node.id,
        region=node.region,
        url=node.url,
        status=status,
        max_modules=node.max_modules,
        generation=generation,
        applied_generation=int(reported.get("generation", 0)),
        running=running,
        failed=dict(reported.get("failed", {})),
        last_heartbeat=epoch(node.last_heartbeat_at),
        cpu_percent=float(reported.get("cpuPercent", 0.0)),
        memory_mb=float(reported.get("memoryMb", 0.0)),
        smoke=tuple(
            (s["module"], s["version"], s["digest"], bool(s["passed"]), s.get("error"))
            for s in reported.get("smoke", [])
        ),
    )


def progress(node: NodeRecord) -> tuple[object, object, object]:
    return node.reported.get("running"), node.reported.get("generation"), node.reported.get("smoke")


def epoch(at: datetime | None) -> float | None:
    return at.timestamp() if at is not None else None


def not_back(before: NodeRecord, row: NodeRecord) -> NodeRecord:
    """`row`, but with `before`'s table and report where those are newer: a row read before a write
    (this replica's publish or heartbeat, or another replica's) may arrive after it, and must not take
    the node's table or report back to an older one."""
    node = row
    if node.generation < before.generation:
        node = replace(node, generation=before.generation, assignment=before.assignment)
    if (epoch(before.last_heartbeat_at) or 0.0) > (epoch(node.last_heartbeat_at) or 0.0):
        node = replace(node, reported=before.reported, last_heartbeat_at=before.last_heartbeat_at)
    return node


class RunningWeights:
    """Each module's version -> the sum of its weights over the nodes' last reports, kept up to date as
    rows are replaced (`replace(before, after)`), so reading it walks no fleet. A version reported at
    weight 0 is listed with 0; one no node reports any more is gone."""

    def __init__(self) -> None:
        self._sums: dict[str, dict[str, list[int]]] = {}  # module -> version -> [weight, reports]

    def replace(self, before: NodeRecord | None, after: NodeRecord | None) -> None:
        old = before.reported.get("running", ()) if before is not None else ()
        new = after.reported.get("running", ()) if after is not None else ()
        if old is new or old == new:  # most heartbeats: the same versions at the same weights
            return
        self._add(old, -1)
        self._add(new, 1)

    def _add(self, entries: Iterable[JsonObject], sign: int) -> None:
        for entry in entries:
            module, version = entry["module"], entry["version"]
            of_module = self._sums.setdefault(module, {})
            total = of_module.setdefault(version, [0, 0])
            total[0] += sign * int(entry["weight"])
            total[1] += sign
            if not total[1]:
                del of_module[version]
                if not of_module:
                    del self._sums[module]

    def of(self, module: str) -> dict[str, int]:
        """Version -> the sum of its weights, for one module."""
        return {version: total[0] for version, total in self._sums.get(module, {}).items()}
