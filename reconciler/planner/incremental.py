"""The incremental planner: a `Planner` keeps what its last pass derived and plans again only what changed.

Where it sits: the controller holds one `Planner` and calls `Planner.plan(snapshot)` once per pass
instead of `plan(snapshot)`. The plan is the same, actions and records in the same order
(tests/planner/test_incremental.py checks it over random histories); only the work differs. Between
two passes usually a few heartbeats changed a few nodes' rows, and the revision object is the same.

What a module's part of the pass reads (`reconciler.planner.planner`): a module that is settled (its
latest record finished and answering what Git asks for, no rollout to start, no pins or region
overrides) reads only its placement and its latest record: its table entries and conditions are kept
and used again while both are the same objects. Every other module (a rollout under way, one about to
start, pins and overrides) reads the clock, metrics, approvals or the nodes' reports, and is planned
again on every pass: those are few. So a pass:
1. finds the nodes whose `ObservedNode` object changed (the controller hands the same object while a
   node's row is unchanged), and updates the running and smoke indexes for those nodes only, and
   only where what they report changed: a heartbeat that runs the same modules hands the same
   `running` tuple (nodes that report the same share it, `reconciler.apply.observe`), and nodes
   that share it share their per-module version sets too;
2. asks `place()` again only when a node changed (placement keeps the `ModulePlacement` object of a
   module whose nodes did not move), and takes the latest records again only when a record changed;
3. plans the modules whose placement or latest record changed, and the unsettled ones, in name order
   (their actions and records come out in the order a full pass gives them);
4. rebuilds the tables of the nodes those modules put something else in, and compares a node's table
   with the one last published only when either changed.

Anything it cannot tell from identity starts over with everything derived again: the first pass, a
new revision object (a new commit, another fleet), a node id listed twice. `plan(snapshot)` stays the
full recompute; a `Planner` that is `reset()` plans its next pass from scratch.
"""

from __future__ import annotations

import operator
import threading
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain

from reconciler.planner.actions import Action, Plan, SetAssignment
from reconciler.planner.gate import Gate, paused
from reconciler.planner.index import ModuleFacts, facts
from reconciler.planner.placement import ModulePlacement, place
from reconciler.planner.planner import (
    Running,
    Smoke,
    Versions,
    _Pass,
    _steady,
    by_module,
    latest_records,
    node_reports,
    plan,
)
from reconciler.planner.types import (
    AssignmentEntry,
    Condition,
    ObservedNode,
    RolloutRecord,
    RunningEntry,
    Snapshot,
    holds_its_table,
)
from reconciler.spec.fleet import DesiredFleet

__all__ = ["Planner"]

Table = tuple[AssignmentEntry, ...]


@dataclass(frozen=True)
class _Module:
    """What one module's part of a pass gave: its entries per node, and what it read."""

    placed: ModulePlacement
    record: RolloutRecord | None  # the latest record it was planned from
    parts: Mapping[str, Table]  # node id -> the entries it put in that node's table, in order
    settled: bool  # read only `placed` and `record`: the same again while both are the same objects


class _Part(_Pass):
    """A pass over the planner's kept indexes that plans the modules it is given, one at a time, and
    notes which entries each one put in which node's table."""

    def plan_module(self, module: ModuleFacts) -> _Module:
        self.tables = defaultdict(list)
        self.module(module)
        placed = self.placement[module.name]
        record = self.latest.get(module.name)
        target = module.target
        settled = (
            not module.fixed and (record is None or not record.active) and (target is None or _steady(record, target))
        )
        parts = {node_id: tuple(entries) for node_id, entries in self.tables.items() if entries}
        return _Module(placed, record, parts, settled)


class Planner:
    """Plans pass after pass like `plan(snapshot)`, doing again only what the snapshot's changes touch.

    Passes and resets take a lock: the controller plans in a worker thread, and a pass abandoned by a
    cancelled task may still be running there when a new leader's `forget()` resets the planner. A
    pass that fails part way leaves nothing half-kept: the next one starts over. Snapshots of several
    fleets interleaved plan correctly but slowly: each new revision object starts over.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gate = Gate()
        self._clear()

    def reset(self) -> None:
        """Forget everything: the next pass derives everything again."""
        with self._lock:
            self._clear()

    def plan(self, snapshot: Snapshot) -> Plan:
        """The plan `plan(snapshot)` gives; see the module docstring for what is done again."""
        with self._lock:
            held, waits = self._gate.held(snapshot)
            try:
                return paused(self._plan(held), waits)
            except BaseException:
                self._clear()
                raise

    def _clear(self) -> None:
        self._desired: DesiredFleet | None = None
        self._nodes: dict[str, ObservedNode] = {}  # node id -> the row the kept indexes were built from
        self._running: Running = {}
        self._smoke: Smoke = {}
        # id(a node's `running`) -> (it, `by_module(it)`): nodes reporting the same share the sets
        self._by_running: dict[int, tuple[tuple[RunningEntry, ...], dict[str, Versions]]] = {}
        self._placement: Mapping[str, ModulePlacement] = {}
        self._records: tuple[RolloutRecord, ...] = ()
        self._latest: dict[str, RolloutRecord] = {}
        self._modules: dict[str, _Module] = {}
        self._unsettled: set[str] = set()
        self._parts: dict[str, dict[str, Table]] = {}  # node id -> module -> its entries there
        self._tables: dict[str, Table] = {}  # node id -> its whole table
        self._compared: dict[str, tuple[Table, Table, bool]] = {}  # node id -> (table, assigned, differ)
        self._status: dict[str, tuple[Condition, ...]] = {}

    def _plan(self, snapshot: Snapshot) -> Plan:
        nodes = {node.id: node for node in snapshot.nodes}
        if len(nodes) != len(snapshot.nodes):  # a node listed twice: no per-node bookkeeping holds
            self._clear()
            return plan(snapshot)
        if snapshot.desired is not self._desired:
            self._clear()
            self._desired = snapshot.desired
        fleet = facts(snapshot.desired)
        dirty = set(self._unsettled)

        changed = [node for node in snapshot.nodes if self._nodes.get(node.id) is not node]
        gone: list[str] = []
        if len(self._nodes) > len(nodes) - len(changed):  # not every node kept is in the snapshot unchanged
            gone = [node_id for node_id in self._nodes if node_id not in nodes]
        for node_id in gone:
            self._forget_reports(node_id)
            del self._nodes[node_id]
            self._compared.pop(node_id, None)
        for node in changed:
            old = self._nodes.get(node.id)
            if old is not None and old.running is node.running and old.smoke is node.smoke:
                self._nodes[node.id] = node  # a heartbeat that reports what the last one did
                continue
            self._forget_reports(node.id)
            running, smoke = node_reports(node, self._versions(node.running))
            self._running.update(running)
            self._smoke.update(smoke)
            self._nodes[node.id] = node

        if changed or gone:  # reports no node makes any longer are not kept for a node that moved on
            used = {id(node.running) for node in self._nodes.values()}
            if len(self._by_running) > len(used):
                self._by_running = {key: kept for key, kept in self._by_running.items() if key in used}

        if changed or gone or not self._modules:
            placement = place(snapshot.desired, snapshot.nodes)
            if placement is not self._placement:
                kept = self._modules
                for name in fleet.names:
                    known = kept.get(name)
                    if known is None or known.placed is not placement[name]:
                        dirty.add(name)
                self._placement = placement

        records = snapshot.records
        if len(records) != len(self._records) or not all(map(operator.is_, records, self._records)):
            latest = latest_records(records)
            for name in fleet.names:
                if latest.get(name) is not self._latest.get(name):
                    dirty.add(name)
            self._latest = latest
        self._records = records

        step = _Part(snapshot, placement=self._placement, latest=self._latest, running=self._running, smoke=self._smoke)
        touched: set[str] = set()
        for name in sorted(dirty):
            self._replan(step, fleet.modules[name], touched)
        status = self._status  # in name order: the first pass plans every module, in name order
        status.update(step.status)
        for node_id in touched:
            by_module = self._parts.get(node_id)
            if by_module:
                self._tables[node_id] = tuple(chain.from_iterable(by_module[m] for m in sorted(by_module)))
            else:
                self._tables.pop(node_id, None)

        actions: list[Action] = step.actions
        for node in snapshot.nodes:
            if holds_its_table(node, snapshot.now):
                continue
            table = self._tables.get(node.id, ())
            seen = self._compared.get(node.id)
            if seen is not None and seen[0] is table and seen[1] is node.assigned:
                differs = seen[2]
            else:
                differs = table != node.assigned
                self._compared[node.id] = (table, node.assigned, differs)
            if differs:
                actions.append(SetAssignment(node.id, table))
        return Plan(tuple(actions), tuple(step.records), step.requeue, dict(status))

    def _versions(self, running: tuple[RunningEntry, ...]) -> dict[str, Versions]:
        kept = self._by_running.get(id(running))
        if kept is None or kept[0] is not running:
            kept = self._by_running[id(running)] = (running, by_module(running))
        return kept[1]

    def _forget_reports(self, node_id: str) -> None:
        """Drop a node's entries from the running and smoke indexes (before its new row's go in)."""
        old = self._nodes.get(node_id)
        if old is None:
            return
        running, smoke = node_reports(old, self._versions(old.running))
        for key in running:
            del self._running[key]
        for key in smoke:
            del self._smoke[key]

    def _replan(self, step: _Part, module: ModuleFacts, touched: set[str]) -> None:
        """Plan one module again; note the nodes whose table it changes in `touched`."""
        name = module.name
        made = step.plan_module(module)
        old = self._modules.get(name)
        before: Mapping[str, Table] = old.parts if old is not None else {}
        after = made.parts
        if before != after:
            for node_id in before.keys() | after.keys():
                entries = after.get(node_id)
                if entries == before.get(node_id):
                    continue
                touched.add(node_id)
                if entries is None:
                    del self._parts[node_id][name]
                else:
                    self._parts.setdefault(node_id, {})[name] = entries
        self._modules[name] = made
        if made.settled:
            self._unsettled.discard(name)
        else:
            self._unsettled.add(name)
