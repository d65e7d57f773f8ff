"""The incremental planner gives the plan of the full recompute, pass after pass, over random histories.

A history is what an executor sees: nodes joining, leaving, coming back, changing status or capacity;
heartbeats from some nodes (what they run, their smoke checks); metrics arriving and going; approvals;
records advanced by the passes, changed by operators, lost or read again; a new revision now and then (a version bump, a
strategy, an approval policy, pins and overrides, an equal copy of the same revision). At every step
`Planner.plan(snapshot)` must equal `plan(snapshot)`, actions and records in the same order.
"""

from __future__ import annotations

import dataclasses

import hypothesis
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.planner import NodeStatus, ObservedNode, Phase, Plan, Planner, RegionMetrics, Snapshot, plan
from reconciler.planner.types import UNHEALTHY_HOLD_SECONDS
from reconciler.spec.fleet import DesiredFleet

from .driver import REGIONS, Driver, approval, example, healthy_metrics, make_nodes, with_module, with_policy
from .test_approval_gates import POLICY, with_extra_versions, with_fixed

MODULES = ("greeter", "calc", "wc", "hello")
STRATEGIES = ("canary", "blue-green", "rolling", "ab-test", "regional", None)
EVENTS = (
    "heartbeat",
    "heartbeat",
    "heartbeat-all",
    "share",
    "unsmoked",
    "join",
    "leave",
    "rejoin",
    "unhealthy",
    "draining",
    "healthy",
    "capacity",
    "good",
    "bad",
    "quiet",
    "approve",
    "bump",
    "policy",
    "pin",
    "copy",
    "hold",
    "release",
    "rollback",
    "lose-records",
    "copy-record",
    "smoke-error",
    "tick",
    "again",
)
HISTORY = st.lists(st.tuples(st.sampled_from(EVENTS), st.integers(min_value=0, max_value=10_000)), max_size=24)


def assert_same(planner: Planner, snapshot: Snapshot) -> Plan:
    full = plan(snapshot)
    made = planner.plan(snapshot)
    assert made == full
    assert list(made.status) == list(full.status)
    return full


class History:
    """A driver and the state a history moves: which module rolls out, to which version, by what."""

    def __init__(self) -> None:
        self.d = Driver(example(), make_nodes(3))
        self.versions = {name: 0 for name in MODULES}
        self.metrics: list[RegionMetrics] = []
        self.joined = 0
        self.left: list[ObservedNode] = []
        self.policy = False
        self.pins: dict[str, str] = {}

    def node(self, pick: int) -> str | None:
        ids = sorted(self.d.nodes)
        return ids[pick % len(ids)] if ids else None

    def revision(self, pick: int) -> DesiredFleet:
        desired = self.d.desired
        module = MODULES[pick % len(MODULES)]
        self.versions[module] += 1
        version = f"2.{self.versions[module]}.0"
        strategy = STRATEGIES[(pick // len(MODULES)) % len(STRATEGIES)]
        desired = with_module(desired, module, version=version, rollout=strategy)
        self.metrics = [
            *healthy_metrics(module, desired.modules[module].spec.version),
            *healthy_metrics(module, version),
        ]
        return desired

    def event(self, kind: str, pick: int) -> None:
        d = self.d
        node_id = self.node(pick)
        if kind == "heartbeat":  # some nodes report what they run now; the others' rows stay the same objects
            every = set(d.nodes)
            d.stuck = {n for i, n in enumerate(sorted(every)) if (i + pick) % 3}
            d.nodes_apply_tables()
            d.stuck = set()
        elif kind == "heartbeat-all":
            d.nodes_apply_tables()
        elif kind == "share":  # nodes reporting the same hand one tuple, as `SnapshotBuilder` does; new rows
            shared: dict[object, object] = {}
            for n, node in list(d.nodes.items()):
                running = shared.setdefault(node.running, node.running)
                d.nodes[n] = dataclasses.replace(node, running=running)  # type: ignore[arg-type]
        elif kind == "unsmoked":  # nodes that report no smoke checks: each reports the same empty tuple
            d.unsmoked = set(d.nodes) if pick % 2 else set()
        elif kind == "join":
            self.joined += 1
            region = REGIONS[pick % len(REGIONS)]
            d.add(ObservedNode(f"{region}-new{self.joined}", region))
        elif kind == "leave" and node_id is not None:
            self.left.append(d.nodes[node_id])
            d.remove(node_id)
        elif kind == "rejoin" and self.left:  # the same id again, a fresh row: it reports nothing yet
            gone = self.left.pop(pick % len(self.left))
            d.add(ObservedNode(gone.id, gone.region))
        elif kind == "unhealthy" and node_id is not None:  # last heard a moment ago (its table held) or long ago
            heard = d.now - (2 * UNHEALTHY_HOLD_SECONDS if pick % 2 else 1.0)
            d.nodes[node_id] = dataclasses.replace(d.nodes[node_id], status=NodeStatus.UNHEALTHY, last_heartbeat=heard)
        elif kind in ("draining", "healthy") and node_id is not None:
            d.set_status(node_id, NodeStatus(kind.capitalize()))
        elif kind == "capacity" and node_id is not None:
            d.nodes[node_id] = dataclasses.replace(d.nodes[node_id], max_modules=1 + pick % 3)
        elif kind == "good":
            module = MODULES[pick % len(MODULES)]
            self.metrics = [m for v in ("1.0.0", "1.1.0", *self.live(module)) for m in healthy_metrics(module, v)]
        elif kind == "bad":
            module = MODULES[pick % len(MODULES)]
            self.metrics = [m for v in self.live(module) for m in healthy_metrics(module, v, errors=500)]
        elif kind == "quiet":
            self.metrics = []
        elif kind == "approve":
            module = MODULES[pick % len(MODULES)]
            version = d.desired.modules[module].spec.version
            n = len(d.approvals)
            d.approvals = (*d.approvals, approval(module, version, f"admin{n}", n=n))
        elif kind == "bump":
            d.desired = self.revision(pick)
        elif kind == "policy":
            self.policy = not self.policy
            d.desired = with_policy(d.desired, rollouts=POLICY if self.policy else None)
        elif kind == "pin" and node_id is not None:
            desired = with_extra_versions(d.desired, "calc", "3.0.0")
            pins = {} if pick % 4 == 0 else {node_id: "3.0.0"}
            overrides = {"apac-east": "3.0.0"} if pick % 2 else {}
            d.desired = with_fixed(desired, "calc", pins, overrides)
        elif kind == "copy":  # the same revision in a new object: the planner cannot tell, and starts over
            d.desired = dataclasses.replace(d.desired)
        elif kind in ("hold", "release", "rollback"):
            module = MODULES[pick % len(MODULES)]
            if module in {r.module for r in d.records.values()} and d.record(module).active:
                if kind == "rollback":
                    d.update_record(module, request="rollback")
                else:
                    d.update_record(module, held=kind == "hold")
        elif kind == "lose-records":  # the store lost a module's records (or another replica rewrote them)
            module = MODULES[pick % len(MODULES)]
            d.records = {i: r for i, r in d.records.items() if r.module != module}
        elif kind == "copy-record" and d.records:  # an equal record read again: a new object, the same plan
            record_id = sorted(d.records)[pick % len(d.records)]
            d.records[record_id] = dataclasses.replace(d.records[record_id])
        elif kind == "smoke-error" and node_id is not None:
            module = MODULES[pick % len(MODULES)]
            d.smoke_errors[(node_id, d.desired.modules[module].spec.version)] = "calc(1) returned 3"
        elif kind == "tick":
            d.now += (5.0, 40.0, 700.0)[pick % 3]

    def live(self, module: str) -> set[str]:
        return {e.version for n in self.d.nodes.values() for e in n.assigned if e.module == module}


@settings(max_examples=50, deadline=None, derandomize=True)
@given(history=HISTORY)
@hypothesis.example(history=[("bump", 0), ("heartbeat", 1), ("tick", 1), ("good", 0), ("heartbeat-all", 0)])
@hypothesis.example(history=[("pin", 5), ("policy", 0), ("bump", 1), ("approve", 1), ("leave", 3), ("join", 0)])
@hypothesis.example(history=[("bump", 4), ("smoke-error", 0), ("heartbeat-all", 0), ("again", 0), ("capacity", 2)])
@hypothesis.example(
    history=[("bump", 0), ("heartbeat-all", 0), ("share", 0), ("tick", 1), ("heartbeat", 2), ("share", 0)]
)
def test_the_incremental_planner_plans_what_the_full_recompute_plans(history: list[tuple[str, int]]) -> None:
    h = History()
    d = h.d
    planner = Planner()
    d.apply(assert_same(planner, d.snapshot()))
    for kind, pick in history:
        h.event(kind, pick)
        snapshot = d.snapshot(h.metrics)
        result = assert_same(planner, snapshot)
        if kind == "again":  # the very same inputs once more: nothing is planned again
            assert planner.plan(snapshot) == result
        d.apply(result)
        d.now += 1.0


def test_a_reset_planner_starts_over_and_still_plans_the_same() -> None:
    h = History()
    d = h.d
    planner = Planner()
    d.apply(assert_same(planner, d.snapshot()))
    d.desired = h.revision(0)
    for _ in range(6):
        d.nodes_apply_tables()
        d.now += 40.0
        d.apply(assert_same(planner, d.snapshot(h.metrics)))
        planner.reset()
    assert d.record("greeter").phase in (Phase.PROGRESSING, Phase.PROMOTED, Phase.PAUSED)


def test_a_node_listed_twice_gets_the_full_recompute() -> None:
    d = Driver(example(), make_nodes(2))
    planner = Planner()
    first = next(iter(d.nodes.values()))
    snapshot = dataclasses.replace(d.snapshot(), nodes=(*d.nodes.values(), first))
    assert_same(planner, snapshot)
    assert_same(planner, d.snapshot())


def test_a_node_back_under_its_old_id_is_not_taken_for_what_it_ran_before_it_left() -> None:
    d = Driver(example(), make_nodes(3))
    planner = Planner()
    d.apply(assert_same(planner, d.snapshot()))
    d.nodes_apply_tables()
    d.apply(assert_same(planner, d.snapshot()))
    d.desired = with_module(example(), "hello", version="2.0.0", rollout="canary")
    d.apply(assert_same(planner, d.snapshot()))  # the canary starts: a step to apply on every holder
    holders = sorted(d.holders("hello"))
    back, late = holders[0], set(holders[1:])
    d.stuck = late  # every holder but one applies the step; the others have not reported yet
    d.nodes_apply_tables()
    d.apply(assert_same(planner, d.snapshot()))
    region = d.nodes[back].region
    d.remove(back)
    d.apply(assert_same(planner, d.snapshot()))
    d.add(ObservedNode(back, region))  # the same id, a fresh row: it runs nothing yet
    d.stuck = {back}
    d.nodes_apply_tables()  # the late ones report now; only the node that came back has not applied
    for _ in range(3):
        d.now += 40.0
        d.apply(assert_same(planner, d.snapshot(healthy_metrics("hello", "1.0.0") + healthy_metrics("hello", "2.0.0"))))
