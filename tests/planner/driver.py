"""Test helpers for the planner: the example fleet with variations, nodes, and a driver that plays the
executor (stores the plan's records, publishes its tables) so a test reads as a sequence of passes.

The driver's nodes apply a published table at once and report it (as real nodes do: a node's report
wakes the executor for another pass), so one `run` is a pass plus the passes that follow at the same
instant while the nodes take new tables. `prompt = False` makes reports wait for the next `run`, and
`stuck` nodes never report what they get.

Nodes smoke every version whose entry has smoke calls and report it passed, unless `smoke_errors`
names the node and version (it reports the error, and serves that version at weight 0, as a real
node does) or the node is `unsmoked` (its smoke checks have not finished: it reports no outcome)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from reconciler.planner import (
    Action,
    AdvanceStep,
    ConditionType,
    NodeStatus,
    ObservedNode,
    Plan,
    RegionMetrics,
    RolloutRecord,
    RunningEntry,
    SetAssignment,
    SmokeResult,
    Snapshot,
    latest_records,
    plan,
)
from reconciler.spec.approvals import Approval
from reconciler.spec.fleet import DesiredFleet
from reconciler.spec.loader import load_fleet
from reconciler.spec.models import Module, RolloutStrategy, Source

ROOT = Path(__file__).resolve().parents[2]
REGIONS = ("us-east", "eu-central", "apac-east")


def digest(tag: str) -> str:
    return "sha256:" + (tag.encode().hex() * 64)[:64]


@cache
def example() -> DesiredFleet:
    result = load_fleet(ROOT / "fleet-example")
    assert result.fleet is not None, result.problems
    return result.fleet


def with_module(desired: DesiredFleet, name: str, **spec: Any) -> DesiredFleet:
    """The fleet with module `name`'s spec fields replaced (a new version gets a registry digest)."""
    module = desired.modules[name]
    if "version" in spec and "source" not in spec and (name, spec["version"]) not in desired.binaries:
        spec["source"] = Source(digest=digest(f"{name}-{spec['version']}"))
    placement = spec.pop("placement", None)
    new_spec = module.spec.model_copy(update=spec)
    if placement is not None:
        new_spec = new_spec.model_copy(update={"placement": new_spec.placement.model_copy(update=placement)})
    modules = dict(desired.modules)
    modules[name] = Module(metadata=module.metadata, spec=new_spec)
    return dataclasses.replace(desired, modules=modules)


def only(desired: DesiredFleet, *names: str) -> DesiredFleet:
    return dataclasses.replace(desired, modules={n: desired.modules[n] for n in names})


def with_strategy(desired: DesiredFleet, name: str, **spec: Any) -> DesiredFleet:
    """The fleet with strategy `name`'s spec fields replaced; nested dicts update nested models."""
    strategy = desired.strategies[name]
    updates: dict[str, Any] = {}
    for key, value in spec.items():
        current = getattr(strategy.spec, key)
        updates[key] = current.model_copy(update=value) if isinstance(value, dict) else value
    strategies = dict(desired.strategies)
    strategies[name] = RolloutStrategy(metadata=strategy.metadata, spec=strategy.spec.model_copy(update=updates))
    return dataclasses.replace(desired, strategies=strategies)


def with_policy(desired: DesiredFleet, **approvals: Any) -> DesiredFleet:
    policy = desired.policy.model_copy(update={"approvals": desired.policy.approvals.model_copy(update=approvals)})
    spec = desired.spec.model_copy(update={"policy": policy})
    return dataclasses.replace(desired, fleet=desired.fleet.model_copy(update={"spec": spec}))


def make_nodes(per_region: int = 3, regions: Iterable[str] = REGIONS, **kw: Any) -> tuple[ObservedNode, ...]:
    return tuple(ObservedNode(f"{r}-{i}", r, **kw) for r in regions for i in range(per_region))


def approval(
    module: str, version: str, principal: str = "alice", roles: Iterable[str] = ("admin",), n: int = 1
) -> Approval:
    return Approval(module, version, principal, frozenset(roles), f"c{n:039d}")


def _goes_on(last: Plan) -> bool:
    """Would the executor plan again at once? When nodes got new tables (their reports wake it), or
    when a record changed and asks to be looked at again within a heartbeat's fraction."""
    if any(isinstance(a, SetAssignment) for a in last.actions):
        return True
    return bool(last.records) and last.requeue_after is not None and last.requeue_after <= 0.25


class Driver:
    """Plays the executor: stores each plan's records, publishes its tables, keeps the clock."""

    def __init__(self, desired: DesiredFleet, nodes: Iterable[ObservedNode] = (), now: float = 0.0) -> None:
        self.desired = desired
        self.nodes: dict[str, ObservedNode] = {n.id: n for n in (nodes or make_nodes())}
        self.records: dict[str, RolloutRecord] = {}
        self.approvals: tuple[Approval, ...] = ()
        self.now = now
        self.last: Plan = Plan()
        self.stuck: set[str] = set()  # nodes that get tables but never report running them
        self.prompt = True  # nodes report a new table within the same instant (see the module docstring)
        self.smoke_errors: dict[tuple[str, str], str] = {}  # (node, version) -> the smoke check's error
        self.unsmoked: set[str] = set()  # nodes whose smoke checks have not finished
        self.passes: list[tuple[Snapshot, Plan]] = []  # the passes of the last `run`: what each saw and did

    def snapshot(self, metrics: Iterable[RegionMetrics] = ()) -> Snapshot:
        return Snapshot(
            self.desired,
            self.now,
            tuple(self.nodes.values()),
            tuple(self.records.values()),
            self.approvals,
            tuple(metrics),
        )

    def apply(self, result: Plan) -> Plan:
        for record in result.records:
            self.records[record.id] = record
        for action in result.actions:
            if isinstance(action, SetAssignment):
                self.nodes[action.node_id] = dataclasses.replace(self.nodes[action.node_id], assigned=action.table)
        self.last = result
        return result

    def nodes_apply_tables(self) -> None:
        """Between passes, every node (but the stuck ones) loads its table and reports running it."""
        for node_id, node in self.nodes.items():
            if node_id not in self.stuck:
                smoke: tuple[SmokeResult, ...] = ()
                if node_id not in self.unsmoked:
                    smoke = tuple(
                        SmokeResult(
                            e.module,
                            e.version,
                            e.digest,
                            (node_id, e.version) not in self.smoke_errors,
                            self.smoke_errors.get((node_id, e.version)),
                        )
                        for e in node.assigned
                        if e.smoke
                    )
                failed = {(r.module, r.version) for r in smoke if not r.passed}
                running = tuple(
                    RunningEntry(e.module, e.version, e.digest, 0 if (e.module, e.version) in failed else e.weight)
                    for e in node.assigned
                )
                self.nodes[node_id] = dataclasses.replace(node, running=running, smoke=smoke)

    def run(self, at: float | None = None, metrics: Iterable[RegionMetrics] = ()) -> Plan:
        """One pass at time `at` (default: now), applied, after the nodes applied the previous one; with
        `prompt`, more passes at the same time while the nodes report new tables. Returns them merged.

        A pass after one that entered a step sees no metrics: the executor's window starts at the step.
        """
        if at is not None:
            self.now = at
        metrics = tuple(metrics)
        seen: list[tuple[Snapshot, Plan]] = []
        entered = False
        while True:
            self.nodes_apply_tables()
            snapshot = self.snapshot(() if entered else metrics)
            result = self.apply(plan(snapshot))
            seen.append((snapshot, result))
            entered = entered or any(isinstance(a, AdvanceStep) for a in result.actions)
            if not (self.prompt and len(seen) < 20 and _goes_on(result)):
                break
        self.passes = seen
        passes = [p for _, p in seen]
        records = {r.id: r for p in passes for r in p.records}
        merged = Plan(
            tuple(a for p in passes for a in p.actions),
            tuple(records.values()),
            passes[-1].requeue_after,
            passes[-1].status,
        )
        self.last = merged
        return merged

    def settle(self) -> None:
        self.run()

    def later(self, seconds: float, metrics: Iterable[RegionMetrics] = ()) -> Plan:
        return self.run(self.now + seconds, metrics)

    def record(self, module: str) -> RolloutRecord:
        return latest_records(self.records.values())[module]

    def set_status(self, node_id: str, status: NodeStatus) -> None:
        self.nodes[node_id] = dataclasses.replace(self.nodes[node_id], status=status)

    def remove(self, node_id: str) -> None:
        del self.nodes[node_id]

    def add(self, node: ObservedNode) -> None:
        self.nodes[node.id] = node

    def update_record(self, module: str, **changes: Any) -> None:
        record = self.record(module)
        self.records[record.id] = dataclasses.replace(record, **changes)

    def weights(self, module: str) -> dict[str, dict[str, int]]:
        """node id -> {version: weight} of `module` in the published tables."""
        out: dict[str, dict[str, int]] = {}
        for node in self.nodes.values():
            entries = {e.version: e.weight for e in node.assigned if e.module == module}
            if entries:
                out[node.id] = entries
        return out

    def holders(self, module: str) -> set[str]:
        return set(self.weights(module))

    def condition(self, module: str, kind: ConditionType) -> tuple[bool, str]:
        found = next(c for c in self.last.status[module] if c.type is kind)
        return found.status, found.reason


def healthy_metrics(
    module: str, version: str, requests: int = 1000, errors: int = 0, p99: float = 5.0
) -> list[RegionMetrics]:
    return [RegionMetrics(module, version, region, requests, errors, p99) for region in REGIONS]


def kinds(actions: Iterable[Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


def weight_set(weights: Mapping[str, Mapping[str, int]]) -> set[tuple[tuple[str, int], ...]]:
    """The distinct weight tables across nodes, e.g. {(("1.1.0", 90), ("1.2.0", 10))}."""
    return {tuple(sorted(w.items())) for w in weights.values()}
