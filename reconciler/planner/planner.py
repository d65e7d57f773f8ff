"""One planner pass: a frozen `Snapshot` in, a `Plan` out. No I/O, no clock, no asyncio.

Where it sits: the executor calls `plan(snapshot)` once per pass, stores `Plan.records`, then
applies `Plan.actions` (see `reconciler.planner.actions`). The pass:
1. places every module on healthy nodes (`placement`);
2. per module, compares what Git asks for (version, digest, limits, capabilities, health check) with
   the module's latest rollout record and starts, supersedes or advances a rollout (`machine`);
3. derives every node's full table from the records (`weights`), plus pins and region overrides,
   and emits `SetAssignment` for each node whose table differs from the one last published;
4. computes the conditions of every module (`conditions`) and the earliest time to look again.

Which release is stable comes from the latest record: the target of a promoted rollout, else the
release the rollout started from. A rolled-back or aborted release stays so while Git asks for it;
it is retried only when Git asks for another release first (a revert is recorded as `Reverted`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from reconciler.approvals import Approval, ApprovalRule
from reconciler.planner.actions import Action, Plan, RecordEvent, SetAssignment
from reconciler.planner.conditions import ModuleView, module_conditions
from reconciler.planner.machine import RolloutContext, Transition, advance, start, supersede
from reconciler.planner.placement import ModulePlacement, module_regions, place
from reconciler.planner.types import (
    AssignmentEntry,
    Condition,
    Phase,
    Release,
    RolloutRecord,
    Snapshot,
    VersionMetrics,
)
from reconciler.planner.weights import EntryMaker, entry_maker, scope
from reconciler.spec.fleet import DesiredFleet
from reconciler.spec.models import Module, RolloutStrategySpec, StrategyType

__all__ = ["plan", "rollout_rule"]

_NO_METRICS: Mapping[str, tuple[VersionMetrics, ...]] = {}


def rollout_rule(desired: DesiredFleet) -> ApprovalRule:
    """The fleet's rule for rollout approvals; without one, a single admin approval."""
    rule = desired.policy.approvals.rollouts
    if rule is None:
        return ApprovalRule.of(["admin"], 1)
    return ApprovalRule.of([str(role) for role in rule.roles], rule.count)


def latest_records(records: Iterable[RolloutRecord]) -> dict[str, RolloutRecord]:
    """The newest record (highest `seq`) of every module."""
    latest: dict[str, RolloutRecord] = {}
    for record in records:
        known = latest.get(record.module)
        if known is None or record.seq > known.seq:
            latest[record.module] = record
    return latest


class _Pass:
    """The state of one pass, built once from the snapshot; `module()` plans one module."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.desired = snapshot.desired
        self.now = snapshot.now
        self.placement = place(self.desired, snapshot.nodes)
        self.latest = latest_records(snapshot.records)
        self.rule = rollout_rule(self.desired)
        metrics: dict[str, dict[str, list[VersionMetrics]]] = defaultdict(lambda: defaultdict(list))
        for m in snapshot.metrics:
            metrics[m.module][m.version].append(m)
        self.metrics = {name: {v: tuple(ms) for v, ms in by.items()} for name, by in metrics.items()}
        approvals: dict[str, list[Approval]] = defaultdict(list)
        for a in snapshot.approvals:
            approvals[a.module].append(a)
        self.approvals = {name: tuple(items) for name, items in approvals.items()}
        self.tables: dict[str, list[AssignmentEntry]] = {node.id: [] for node in snapshot.nodes}
        self.actions: list[Action] = []
        self.records: list[RolloutRecord] = []
        self.requeue: float | None = None
        self.status: dict[str, tuple[Condition, ...]] = {}

    # --- one module ---------------------------------------------------------------------------

    def module(self, name: str) -> None:
        module = self.desired.modules[name]
        spec = module.spec
        placed = self.placement[name]
        record = self.latest.get(name)
        make = entry_maker(name)
        overrides = {region: o.version for o in spec.placement.version_overrides for region in o.regions}
        regions = [r for r in module_regions(self.desired, name) if r not in overrides]
        digest = self.desired.digest_of(name, spec.version)
        missing_binary = None
        if digest is None:
            missing_binary = f"{name}@{spec.version} has no binary (no source file and no digest)"
            self.actions.append(RecordEvent(name, None, "MissingBinary", missing_binary, warning=True))
        else:
            target = Release.of(spec, spec.version, digest)
            steady = (
                record is not None
                and not record.active
                and (
                    (record.phase in (Phase.PROMOTED, Phase.SUPERSEDED) and record.stable == target)
                    or (record.phase in (Phase.ROLLED_BACK, Phase.ABORTED) and record.target == target)
                )
            )
            if not steady:
                record = self._transition(module, regions, placed, record, target)

        placed_count = len(placed.pins)
        if record is not None:
            ctx_regions, regional, sticky = self._rollout_shape(module, record.strategy, regions)
            nodes = {r: placed.regions.get(r, ()) for r in ctx_regions}
            for node_id, entries in scope(record, ctx_regions, nodes, regional, make, sticky).items():
                self.tables[node_id].extend(entries)
                placed_count += 1
        placed_count += self._fixed_versions(module, placed, overrides, make)
        view = ModuleView(name, spec.version, record, placed_count, placed.missing, missing_binary)
        self.status[name] = module_conditions(view)

    def _transition(
        self,
        module: Module,
        regions: list[str],
        placed: ModulePlacement,
        record: RolloutRecord | None,
        target: Release,
    ) -> RolloutRecord:
        name, spec = module.metadata.name, module.spec

        def context(strategy_name: str | None) -> RolloutContext:
            strategy = self._strategy(strategy_name)
            inner = None
            if strategy is not None and strategy.type is StrategyType.REGIONAL and strategy.regional is not None:
                inner = self._strategy(strategy.regional.per_region)
            ordered, _, _ = self._rollout_shape(module, strategy_name, regions)
            return RolloutContext(
                module=name,
                target=target,
                strategy=strategy,
                inner=inner,
                regions=tuple(ordered),
                scope={r: placed.regions.get(r, ()) for r in ordered},
                rule=self.rule,
                approvals=self.approvals.get(name, ()),
                metrics=self.metrics.get(name, _NO_METRICS),
                now=self.now,
            )

        steps: list[Transition] = []
        if record is None:
            steps.append(start(context(None), 1, None, None))
        elif record.active and record.target == target:
            steps.append(advance(context(record.strategy), record))
        elif record.active:
            steps.append(supersede(context(record.strategy), record, f"{name}@{target.label}"))
            if record.previous != target:
                steps.append(start(context(spec.rollout), record.seq + 1, record.previous, spec.rollout))
        elif record.stable == target:
            # Git went back to the release that runs after a rollback: record it, so that asking
            # again for the rolled-back release starts a new rollout.
            steps.append(start(context(None), record.seq + 1, target, None, reason="Reverted"))
        else:
            steps.append(start(context(spec.rollout), record.seq + 1, record.stable, spec.rollout))

        for step in steps:
            if step.changed:
                self.records.append(step.record)
            self.actions.extend(step.actions)
            if step.requeue_after is not None:
                wait = max(0.0, step.requeue_after)
                self.requeue = wait if self.requeue is None else min(self.requeue, wait)
        return steps[-1].record

    def _strategy(self, name: str | None) -> RolloutStrategySpec | None:
        if name is None:
            return None
        found = self.desired.strategies.get(name)
        return found.spec if found is not None else None

    def _rollout_shape(
        self, module: Module, strategy_name: str | None, regions: list[str]
    ) -> tuple[list[str], bool, str | None]:
        """The rollout's regions in order, whether it is Regional, and the A/B sticky header."""
        strategy = self._strategy(strategy_name)
        if strategy is None:
            return regions, False, None
        if strategy.type is StrategyType.REGIONAL and strategy.regional is not None:
            order = strategy.regional.order or self.desired.spec.region_names
            ordered = [r for r in order if r in regions] + [r for r in regions if r not in order]
            unit = self._strategy(strategy.regional.per_region)
            sticky = unit.ab_test.sticky_header if unit is not None and unit.ab_test is not None else None
            return ordered, True, sticky
        sticky = strategy.ab_test.sticky_header if strategy.ab_test is not None else None
        return regions, False, sticky

    def _fixed_versions(
        self, module: Module, placed: ModulePlacement, overrides: Mapping[str, str], make: EntryMaker
    ) -> int:
        """Entries of version-override regions and pinned nodes; they take no part in rollouts."""
        name, spec = module.metadata.name, module.spec
        releases: dict[str, Release | None] = {}

        def release(version: str) -> Release | None:
            if version not in releases:
                digest = self.desired.digest_of(name, version)
                releases[version] = Release.of(spec, version, digest) if digest is not None else None
            return releases[version]

        count = 0
        for region, version in overrides.items():
            fixed = release(version)
            if fixed is None:
                continue
            for node_id in placed.regions.get(region, ()):
                self.tables[node_id].append(make(fixed, 100, None))
                count += 1
        for node_id, version in placed.pins.items():
            fixed = release(version)
            if fixed is not None:
                self.tables[node_id].append(make(fixed, 100, None))
        return count

    # --- the whole pass -----------------------------------------------------------------------

    def run(self) -> Plan:
        for name in sorted(self.desired.modules):
            self.module(name)
        for node in self.snapshot.nodes:
            table = tuple(self.tables[node.id])
            if table != node.assigned:
                self.actions.append(SetAssignment(node.id, table))
        return Plan(tuple(self.actions), tuple(self.records), self.requeue, self.status)


def plan(snapshot: Snapshot) -> Plan:
    """Plan one pass over `snapshot`: see the module docstring."""
    return _Pass(snapshot).run()
