"""One planner pass: a frozen `Snapshot` in, a `Plan` out. No I/O, no clock, no asyncio.

Where it sits: the executor calls `plan(snapshot)` once per pass, stores `Plan.records`, then
applies `Plan.actions` (see `reconciler.planner.actions`). The pass:
1. places every module on healthy nodes (`placement`);
2. per module, compares what Git asks for (version, digest, limits, capabilities, health check) with
   the module's latest rollout record and starts, supersedes or advances a rollout (`machine`);
3. derives every node's full table from the records (`weights`), plus pins and region overrides
   (which run with the capabilities of the module's stable release, so a change of capabilities
   reaches them only once it is promoted, and which, when the module's rollouts need approvals,
   put on a node only a version already approved and live: `machine`'s docstring says which), and
   emits `SetAssignment` for each node whose table differs from the one last published, except to
   an Unhealthy node heard within the last minute: its modules are placed elsewhere, but its own
   table is left as it is (`types.holds_its_table`);
4. computes the conditions of every module (`conditions`) and the earliest time to look again.

Which release is stable comes from the latest record: the target of a promoted rollout, else the
release the rollout started from. A rolled-back or aborted release stays so while Git asks for it;
it is retried only when Git asks for another release first (a revert is recorded as `Reverted`).
A first deployment, a module without a strategy, and a change of limits, capabilities or health
check that keeps the version (two releases of one version cannot share a node's table) are
replaced at once, with a record saying so. Under an approval policy a module without a strategy
and a change of capabilities wait for an approval first (`machine`'s docstring says which).

What follows from the revision alone (`index`) and the placement for a node set (`placement`) is
computed once and reused by later passes over the same revision object: keep one `DesiredFleet`
per revision and one pass of 10,000 modules stays well under 200 ms (bench/planner.py).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping, Set

from reconciler.planner.actions import Action, Plan, SetAssignment
from reconciler.planner.conditions import ModuleView, module_conditions
from reconciler.planner.gate import Gate, paused
from reconciler.planner.index import ModuleFacts, facts, rollout_rule
from reconciler.planner.machine import advance, start, supersede
from reconciler.planner.placement import ModulePlacement, place
from reconciler.planner.rollout_approvals import approval_asked
from reconciler.planner.rollout_context import RolloutContext, Transition
from reconciler.planner.types import (
    AssignmentEntry,
    Condition,
    ObservedNode,
    Phase,
    RegionMetrics,
    Release,
    RolloutRecord,
    RunningEntry,
    SmokeResult,
    Snapshot,
    StepKind,
    holds_its_table,
)
from reconciler.planner.weights import scope
from reconciler.spec.approvals import Approval, RuleResult, evaluate

__all__ = ["latest_records", "plan", "rollout_rule"]

_NO_METRICS: Mapping[str, tuple[RegionMetrics, ...]] = {}


def latest_records(records: Iterable[RolloutRecord]) -> dict[str, RolloutRecord]:
    """The newest record (highest `seq`) of every module."""
    latest: dict[str, RolloutRecord] = {}
    for record in records:
        known = latest.get(record.module)
        if known is None or record.seq > known.seq:
            latest[record.module] = record
    return latest


def _steady(record: RolloutRecord | None, target: Release) -> bool:
    """Nothing to move: the latest record is finished and already answers what Git asks for."""
    if record is None or record.active:
        return False
    if record.phase in (Phase.ROLLED_BACK, Phase.ABORTED):
        return record.target is target or record.target == target
    stable = record.stable
    return stable is target or stable == target


Versions = frozenset[tuple[str, str, int]]  # {(version, digest, weight)} a node runs of one module
Running = dict[tuple[str, str], Set[tuple[str, str, int]]]  # (module, node) -> its versions
Smoke = dict[tuple[str, str], dict[tuple[str, str], SmokeResult]]  # (module, node) -> {(version, digest): result}


def by_module(entries: Iterable[RunningEntry]) -> dict[str, Versions]:
    """What a node's report runs, by module."""
    out: dict[str, set[tuple[str, str, int]]] = {}
    for entry in entries:
        out.setdefault(entry.module, set()).add((entry.version, entry.digest, entry.weight))
    return {module: frozenset(versions) for module, versions in out.items()}


def node_reports(node: ObservedNode, modules: Mapping[str, Versions] | None = None) -> tuple[Running, Smoke]:
    """What one node reports, indexed by (module, node): what it runs, and its smoke checks (the last
    result of a version wins). `modules` is `by_module(node.running)` when the caller has it (nodes
    that report the same share it)."""
    ran = by_module(node.running) if modules is None else modules
    running: Running = {(module, node.id): versions for module, versions in ran.items()}
    smoke: Smoke = {}
    for result in node.smoke:
        smoke.setdefault((result.module, node.id), {})[(result.version, result.digest)] = result
    return running, smoke


class _Pass:
    """The state of one pass, built once from the snapshot; `module()` plans one module.

    `placement`, `latest`, `running` and `smoke` are derived from the snapshot unless given: the
    incremental planner (`reconciler.planner.incremental`) hands in the ones it kept up to date."""

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        placement: Mapping[str, ModulePlacement] | None = None,
        latest: dict[str, RolloutRecord] | None = None,
        running: Mapping[tuple[str, str], Set[tuple[str, str, int]]] | None = None,
        smoke: Smoke | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.facts = facts(snapshot.desired)
        self.now = snapshot.now
        self.placement = place(snapshot.desired, snapshot.nodes) if placement is None else placement
        self.latest = latest_records(snapshot.records) if latest is None else latest
        metrics: dict[str, dict[str, list[RegionMetrics]]] = defaultdict(lambda: defaultdict(list))
        for m in snapshot.metrics:
            metrics[m.module][m.version].append(m)
        self.metrics = {name: {v: tuple(ms) for v, ms in by.items()} for name, by in metrics.items()}
        approvals: dict[str, list[Approval]] = defaultdict(list)
        for a in snapshot.approvals:
            approvals[a.module].append(a)
        self.approvals = {name: tuple(items) for name, items in approvals.items()}
        if running is None or smoke is None:
            merged: defaultdict[tuple[str, str], set[tuple[str, str, int]]] = defaultdict(set)
            smoke = defaultdict(dict)
            for node in snapshot.nodes:  # a node listed twice: its reports merge, the last smoke result wins
                ran, smoked = node_reports(node)
                for key, versions in ran.items():
                    merged[key] |= versions
                for key, results in smoked.items():
                    smoke[key].update(results)
            running = merged
        self.running: Mapping[tuple[str, str], Set[tuple[str, str, int]]] = running
        self.smoke: Mapping[tuple[str, str], dict[tuple[str, str], SmokeResult]] = smoke
        self.assigned = {node.id: node.assigned for node in snapshot.nodes}
        self.tables: dict[str, list[AssignmentEntry]] = {node.id: [] for node in snapshot.nodes}
        self._were_live: dict[str, set[str]] | None = None
        self.actions: list[Action] = []
        self.records: list[RolloutRecord] = []
        self.requeue: float | None = None
        self.status: dict[str, tuple[Condition, ...]] = {}

    # --- one module ---------------------------------------------------------------------------

    def module(self, module: ModuleFacts) -> None:
        placed = self.placement[module.name]
        record = self.latest.get(module.name)
        target = module.target
        if target is not None and not _steady(record, target):
            record = self._transition(module, placed, record, target)

        tables = self.tables
        count = len(placed.pins)
        if record is not None and not record.active:
            stable = record.stable
            if stable is not None:
                entry = module.entry(stable, 100)
                for region in module.regions:
                    for node_id in placed.regions.get(region, ()):
                        tables[node_id].append(entry)
                        count += 1
        elif record is not None:
            shape = self.facts.shape(module, record.strategy)
            nodes = {r: placed.regions.get(r, ()) for r in shape.regions}
            expected = scope(record, shape.regions, nodes, shape.regional, module.entry, shape.sticky)
            held_back = self._smoke_pending(module.name, record, expected)
            for node_id, entries in expected.items():
                if node_id in held_back:
                    assert record.previous is not None
                    tables[node_id].extend((module.entry(record.previous, 100), module.entry(record.target, 0)))
                else:
                    tables[node_id].extend(entries)
                count += 1
        held: list[str] = []
        if module.fixed:
            count += self._fixed(module, placed, record, held)

        def conditions() -> tuple[Condition, ...]:
            view = ModuleView(
                module.name, module.spec.version, record, count, placed.missing, module.missing_binary, tuple(held)
            )
            return module_conditions(view)

        if record is None or record.active:
            self.status[module.name] = conditions()
        else:  # a finished record: the same conditions as last pass unless something they show changed
            key = (record.id, record.phase, record.reason, record.message, count, placed, tuple(held))
            self.status[module.name] = module.status(key, conditions)

    def _fixed(
        self, module: ModuleFacts, placed: ModulePlacement, record: RolloutRecord | None, held: list[str]
    ) -> int:
        """Put the module's pins and region overrides in the tables; return the override entries placed.

        A pin or override that needs an approval it does not have is held (the rule is in `machine`'s
        docstring): the node keeps what it ran, and `held` gets a message for the Paused condition.
        """
        name = module.name
        stable = record.stable if record is not None else None
        granted = stable.capabilities if stable is not None else None
        shape = self.facts.shape(module, module.spec.rollout)
        asked = approval_asked(self.facts.required, shape.strategy, shape.inner if shape.regional else shape.strategy)
        moving = record.target.version if record is not None and record.phase is not Phase.PROMOTED else None
        waits: dict[str, RuleResult | None] = {}
        places: dict[tuple[str, str], list[str]] = {}

        def with_granted(release: Release) -> Release:
            if granted is None or release.capabilities is granted or release.capabilities == granted:
                return release
            return dataclasses.replace(release, capabilities=granted)

        def ran(node_id: str) -> AssignmentEntry | None:
            """The one version of the module the node ran alone, unless the latest rollout moves to it."""
            entries = [e for e in self.assigned.get(node_id, ()) if e.module == name]
            if len(entries) == 1 and entries[0].weight == 100 and entries[0].version != moving:
                return entries[0]
            return None

        def wait_for(version: str) -> RuleResult | None:
            """What a pin or override of `version` waits for; None: it may go on."""
            if not asked or (stable is not None and stable.version == version):
                return None
            if version not in waits:
                result = evaluate(self.facts.rule, name, version, self.approvals.get(name, ()))
                live = version in self._live(name) and version != moving
                waits[version] = None if result.satisfied or live else result
            return waits[version]

        def put(node_id: str, version: str, fixed: Release, kind: str, where: str) -> None:
            if wait_for(version) is None:
                self.tables[node_id].append(module.entry(with_granted(fixed), 100))
                return
            spots = places.setdefault((kind, version), [])
            if where not in spots:
                spots.append(where)
            last = ran(node_id)
            if last is not None and stable is not None and last.version != stable.version:
                kept = Release(
                    last.version, last.digest, last.limits, last.capabilities, last.health_check, last.smoke, last.argv
                )
                self.tables[node_id].append(module.entry(with_granted(kept), 100))
            elif stable is not None:
                self.tables[node_id].append(module.entry(stable, 100))

        count = 0
        for region, version in module.overrides.items():
            fixed = module.fixed.get(version)
            if fixed is not None:
                for node_id in placed.regions.get(region, ()):
                    put(node_id, version, fixed, "override", region)
                    count += 1
        for node_id, version in placed.pins.items():
            fixed = module.fixed.get(version)
            if fixed is not None:
                put(node_id, version, fixed, "pin", node_id)
        for (kind, version), spots in places.items():
            result = waits[version]
            assert result is not None
            where = ("in " if kind == "override" else "on ") + ", ".join(spots)
            held.append(f"{kind} to {version} {where} waits for approval: {result.message}; the node keeps what it ran")
        return count

    def _live(self, module: str) -> set[str]:
        """Versions of `module` already approved and live: stable at some point (in any record), or
        alone (weight 100) on some node in the tables last published. Built once per pass, when asked."""
        if self._were_live is None:
            live: dict[str, set[str]] = defaultdict(set)
            for r in self.snapshot.records:
                if r.phase is Phase.PROMOTED:
                    live[r.module].add(r.target.version)
                if r.previous is not None:
                    live[r.module].add(r.previous.version)
            for table in self.assigned.values():
                per_module: dict[str, list[AssignmentEntry]] = defaultdict(list)
                for e in table:
                    per_module[e.module].append(e)
                for name, entries in per_module.items():
                    if len(entries) == 1 and entries[0].weight == 100:
                        live[name].add(entries[0].version)
            self._were_live = live
        return self._were_live.get(module, set())

    def _smoke_passed(self, module: str, node_id: str, release: Release) -> bool:
        found = self.smoke.get((module, node_id), {}).get((release.version, release.digest))
        return found is not None and found.passed

    def _smoke_pending(
        self, module: str, record: RolloutRecord, expected: Mapping[str, tuple[AssignmentEntry, ...]]
    ) -> frozenset[str]:
        """Nodes whose step gives the new release weight, held at weight 0 for it until every one of them
        reports its smoke check passed; empty when none is held.

        Only while the step is not applied yet (from then on a node that loads the release again keeps
        it at weight 0 itself until its own check passes), and not for the nodes a Rolling rollout
        already switched. A BlueGreen preview gives no weight: it only waits (`_applied`)."""
        target = record.target
        if not target.smoke or record.applied_at is not None or record.previous is None:
            return frozenset()
        if record.kind is None or record.kind is StepKind.PROMOTE:
            return frozenset()
        done = set(record.done_nodes)
        giving = frozenset(
            node_id
            for node_id, entries in expected.items()
            if node_id not in done
            and any(e.version == target.version and e.digest == target.digest and e.weight > 0 for e in entries)
        )
        if all(self._smoke_passed(module, n, target) for n in giving):
            return frozenset()
        return giving

    def _applied(self, module: ModuleFacts, placed: ModulePlacement, record: RolloutRecord | None) -> frozenset[str]:
        """Nodes of an active rollout's scope that report running exactly what its step gives them, and,
        where that includes a release with smoke calls, its smoke check passed."""
        if record is None or not record.active or record.previous is None or record.strategy_type is None:
            return frozenset()
        shape = self.facts.shape(module, record.strategy)
        nodes = {r: placed.regions.get(r, ()) for r in shape.regions}
        expected = scope(record, shape.regions, nodes, shape.regional, module.entry, shape.sticky)
        empty: Versions = frozenset()
        target = record.target
        return frozenset(
            node_id
            for node_id, entries in expected.items()
            if self.running.get((module.name, node_id), empty) == {(e.version, e.digest, e.weight) for e in entries}
            and (
                not target.smoke
                or all(e.version != target.version for e in entries)
                or self._smoke_passed(module.name, node_id, target)
            )
        )

    def _smoke_failed(self, module: str, placed: ModulePlacement, target: Release) -> tuple[tuple[str, str], ...]:
        """(node, error) for every placed node that reports the smoke check of `target` failed."""
        if not target.smoke:
            return ()
        out = []
        for nodes in placed.regions.values():
            for node_id in nodes:
                found = self.smoke.get((module, node_id), {}).get((target.version, target.digest))
                if found is not None and not found.passed:
                    out.append((node_id, found.error or "failed"))
        return tuple(sorted(out))

    def _transition(
        self,
        module: ModuleFacts,
        placed: ModulePlacement,
        record: RolloutRecord | None,
        target: Release,
    ) -> RolloutRecord:
        name = module.name

        def context(strategy_name: str | None) -> RolloutContext:
            shape = self.facts.shape(module, strategy_name)
            return RolloutContext(
                module=name,
                target=target,
                strategy=shape.strategy,
                inner=shape.inner,
                regions=shape.regions,
                scope={r: placed.regions.get(r, ()) for r in shape.regions},
                rule=self.facts.rule,
                approvals=self.approvals.get(name, ()),
                metrics=self.metrics.get(name, _NO_METRICS),
                now=self.now,
                applied=applied,
                alone=alone,
                smoke_failed=smoke_failed,
                required=self.facts.required,
            )

        applied = self._applied(module, placed, record)
        smoke_failed = self._smoke_failed(name, placed, target)
        only = {(target.version, target.digest, 100)}
        alone = frozenset(n for ns in placed.regions.values() for n in ns if self.running.get((name, n)) == only)
        rollout = module.spec.rollout
        steps: list[Transition] = []
        if record is None:
            steps.append(start(context(None), 1, None, None))
        elif record.active and record.target == target:
            steps.append(advance(context(record.strategy), record))
        elif record.active:
            steps.append(supersede(context(record.strategy), record, f"{name}@{target.label}"))
            if record.previous != target:
                steps.append(start(context(rollout), record.seq + 1, record.previous, rollout, earlier=record.target))
        elif record.stable == target:
            # Git went back to the release that runs after a rollback: record it, so that asking
            # again for the rolled-back release starts a new rollout.
            steps.append(start(context(None), record.seq + 1, target, None, reason="Reverted"))
        else:
            steps.append(start(context(rollout), record.seq + 1, record.stable, rollout, earlier=record.target))

        for step in steps:
            if step.changed:
                self.records.append(step.record)
            self.actions.extend(step.actions)
            if step.requeue_after is not None:
                wait = max(0.0, step.requeue_after)
                self.requeue = wait if self.requeue is None else min(self.requeue, wait)
        return steps[-1].record

    # --- the whole pass -----------------------------------------------------------------------

    def run(self) -> Plan:
        for name in self.facts.names:
            self.module(self.facts.modules[name])
        for node in self.snapshot.nodes:
            if holds_its_table(node, self.snapshot.now):
                continue
            table = tuple(self.tables[node.id])
            if table != node.assigned:
                self.actions.append(SetAssignment(node.id, table))
        return Plan(tuple(self.actions), tuple(self.records), self.requeue, self.status)


def plan(snapshot: Snapshot) -> Plan:
    """Plan one pass over `snapshot`: see the module docstring."""
    held, waits = Gate().held(snapshot)
    return paused(_Pass(held).run(), waits)
