"""Every strategy's happy path, step by step: the steps entered, the weights nodes get, the end."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from reconciler.planner import AdvanceStep, Phase, Promote, StartRollout, StepKind
from reconciler.spec.fleet import DesiredFleet

from .driver import Driver, approval, example, healthy_metrics, kinds, weight_set, with_module, with_strategy


@dataclass
class Case:
    module: str
    old: str
    new: str
    steps: list[tuple[StepKind, int, str | None]]
    tables: list[set[tuple[tuple[str, int], ...]]]
    strategy: str | None = None
    approve: bool = False
    fleet_changes: dict[str, dict[str, object]] = field(default_factory=dict)


W, PREVIEW, SWITCH, BATCH, SPLIT, SETTLE = (
    StepKind.WEIGHT,
    StepKind.PREVIEW,
    StepKind.SWITCH,
    StepKind.BATCH,
    StepKind.SPLIT,
    StepKind.SETTLE,
)


def canary_tables(old: str, new: str) -> list[set[tuple[tuple[str, int], ...]]]:
    return [
        {((old, 90), (new, 10))},
        {((old, 75), (new, 25))},
        {((old, 50), (new, 50))},
        {((old, 0), (new, 100))},
    ]


CASES = {
    "canary": Case(
        "greeter",
        "1.1.0",
        "1.2.0",
        steps=[(W, 10, None), (W, 25, None), (W, 50, None), (W, 100, None)],
        tables=canary_tables("1.1.0", "1.2.0"),
    ),
    "blue-green": Case(
        "calc",
        "1.0.0",
        "1.1.0",
        steps=[(PREVIEW, 0, None), (SWITCH, 100, None)],
        tables=[{(("1.0.0", 100), ("1.1.0", 0))}, {(("1.0.0", 0), ("1.1.0", 100))}],
    ),
    "rolling": Case(
        "wc",
        "1.0.0",
        "1.1.0",
        steps=[(BATCH, 50, None), (BATCH, 100, None)],
        tables=[{(("1.0.0", 100),), (("1.1.0", 100),)}, {(("1.1.0", 100),)}],
    ),
    "regional": Case(
        "greeter",
        "1.1.0",
        "1.2.0",
        strategy="regional",
        approve=True,
        steps=[
            *((W, p, "us-east") for p in (10, 25, 50, 100)),
            (SETTLE, 100, "us-east"),
            *((W, p, "eu-central") for p in (10, 25, 50, 100)),
            (SETTLE, 100, "eu-central"),
        ],
        tables=[],  # filled below
    ),
    "ab-test": Case(
        "greeter",
        "1.1.0",
        "1.2.0",
        strategy="ab-test",
        steps=[(SPLIT, 20, None)],
        tables=[{(("1.1.0", 80), ("1.2.0", 20))}],
    ),
}
# Regional: the current region follows the canary, the other region runs the other version.
_regional = []
for p in (10, 25, 50, 100):
    _regional.append({(("1.1.0", 100 - p), ("1.2.0", p)), (("1.1.0", 100),)})
_regional.append({(("1.2.0", 100),), (("1.1.0", 100),)})
for p in (10, 25, 50, 100):
    _regional.append({(("1.2.0", 100),), (("1.1.0", 100 - p), ("1.2.0", p))})
_regional.append({(("1.2.0", 100),)})
CASES["regional"].tables = _regional


def bumped(case: Case) -> DesiredFleet:
    changes: dict[str, object] = {"version": case.new}
    if case.strategy is not None:
        changes["rollout"] = case.strategy
    return with_module(example(), case.module, **changes)


@pytest.mark.parametrize("name", list(CASES))
def test_strategy_happy_path_walks_every_step_then_promotes(name: str) -> None:
    case = CASES[name]
    d = Driver(example())
    d.run()
    d.desired = bumped(case)
    if case.approve:
        d.approvals = (approval(case.module, case.new),)
    metrics = healthy_metrics(case.module, case.old) + healthy_metrics(case.module, case.new)
    first = d.run()
    assert kinds(first.actions)[0] == "StartRollout"
    entered: list[tuple[StepKind, int, str | None]] = []
    tables = []
    result = first
    for _ in range(500):
        entered += [(a.kind, a.percent, a.region) for a in result.actions if isinstance(a, AdvanceStep)]
        if any(isinstance(a, AdvanceStep) for a in result.actions):
            scoped = {n: w for n, w in d.weights(case.module).items() if not n.startswith("apac")}
            tables.append(weight_set(scoped))
        if d.record(case.module).phase is not Phase.PROGRESSING:
            break
        result = d.later(result.requeue_after or 0.0, metrics)
    record = d.record(case.module)
    assert record.phase is Phase.PROMOTED, (record.reason, record.message)
    assert entered == case.steps
    assert tables == case.tables
    assert any(isinstance(a, Promote) for a in d.last.actions)
    final = {n: w for n, w in d.weights(case.module).items() if not n.startswith("apac")}
    assert weight_set(final) == {((case.new, 100),)}


def test_canary_waits_step_seconds_before_analysing() -> None:
    d = Driver(example())
    d.run()
    d.desired = with_module(example(), "greeter", version="1.2.0")
    started = d.run(at=100.0)
    assert started.requeue_after == 5.0  # analysed every 5 s for early failure
    early = d.run(at=129.0, metrics=healthy_metrics("greeter", "1.2.0"))
    assert early.actions == ()
    assert early.records == ()
    assert early.requeue_after == pytest.approx(1.0)
    assert d.record("greeter").percent == 10


def test_module_without_strategy_is_replaced_at_once() -> None:
    d = Driver(example())
    d.run()
    d.desired = with_module(example(), "greeter", version="1.2.0", rollout=None)
    result = d.run()
    assert kinds(result.actions)[:2] == ["StartRollout", "Promote"]
    assert d.record("greeter").phase is Phase.PROMOTED
    assert d.record("greeter").reason == "Replaced"
    scoped = {n: w for n, w in d.weights("greeter").items() if not n.startswith("apac")}
    assert weight_set(scoped) == {(("1.2.0", 100),)}


def test_first_deployment_places_at_once_without_strategy_steps() -> None:
    d = Driver(example())
    result = d.run()
    starts = [a for a in result.actions if isinstance(a, StartRollout)]
    assert {a.module for a in starts} == {"calc", "greeter", "wc", "hello"}
    assert all(r.phase is Phase.PROMOTED and r.reason == "InitialDeployment" for r in d.records.values())


def test_limits_change_of_same_version_is_applied_at_once() -> None:
    d = Driver(example())
    d.run()
    limits = example().modules["greeter"].spec.limits.model_copy(update={"memory_mb": 96})
    d.desired = with_module(example(), "greeter", limits=limits)
    d.run()
    record = d.record("greeter")
    assert (record.phase, record.reason) == (Phase.PROMOTED, "SameVersionReplaced")
    entries = [e for n in d.nodes.values() for e in n.assigned if e.module == "greeter" and e.version == "1.1.0"]
    assert entries and all(e.limits.memory_mb == 96 for e in entries)


def test_blue_green_keeps_previous_version_loaded_until_keep_previous_seconds_end() -> None:
    d = Driver(example())
    d.run()
    d.desired = with_module(example(), "calc", version="1.1.0")
    d.run(at=0.0)
    metrics = healthy_metrics("calc", "1.1.0")
    switched = d.run(at=20.0, metrics=metrics)
    assert [a.kind for a in switched.actions if isinstance(a, AdvanceStep)] == [StepKind.SWITCH]
    assert weight_set(d.weights("calc")) == {(("1.0.0", 0), ("1.1.0", 100))}
    d.run(at=319.0, metrics=metrics)
    assert d.record("calc").phase is Phase.PROGRESSING
    d.run(at=320.0, metrics=metrics)
    assert d.record("calc").phase is Phase.PROMOTED
    assert weight_set(d.weights("calc")) == {(("1.1.0", 100),)}


def test_blue_green_without_auto_promote_waits_for_approval_to_switch() -> None:
    d = Driver(with_strategy(example(), "blue-green", blue_green={"auto_promote": False}))
    d.run()
    d.desired = with_module(d.desired, "calc", version="1.1.0")
    d.run(at=0.0)
    waiting = d.run(at=20.0, metrics=healthy_metrics("calc", "1.1.0"))
    record = d.record("calc")
    assert (record.phase, record.awaiting, record.kind) == (Phase.WAITING_APPROVAL, "promotion", StepKind.PREVIEW)
    assert kinds(waiting.actions) == ["Pause"]
    assert weight_set(d.weights("calc")) == {(("1.0.0", 100), ("1.1.0", 0))}
    d.approvals = (approval("calc", "1.1.0"),)
    switched = d.run(at=25.0)
    assert [a.kind for a in switched.actions if isinstance(a, AdvanceStep)] == [StepKind.SWITCH]
    assert weight_set(d.weights("calc")) == {(("1.0.0", 0), ("1.1.0", 100))}


def test_ab_test_entries_carry_the_sticky_header() -> None:
    d = Driver(example())
    d.run()
    d.desired = with_module(example(), "greeter", version="1.2.0", rollout="ab-test")
    d.run()
    entries = [e for n in d.nodes.values() for e in n.assigned if e.module == "greeter" and e.version != "1.0.0"]
    assert entries and {e.sticky for e in entries} == {"X-User-Id"}


def test_ab_test_a_winning_rolls_back_automatically() -> None:
    d = Driver(example())
    d.run()
    d.desired = with_module(example(), "greeter", version="1.2.0", rollout="ab-test")
    d.run(at=0.0)
    metrics = healthy_metrics("greeter", "1.1.0", errors=1) + healthy_metrics("greeter", "1.2.0", errors=15)
    d.run(at=600.0, metrics=metrics)
    record = d.record("greeter")
    assert (record.phase, record.reason) == (Phase.ROLLED_BACK, "ABTestLost")
    assert record.ab_result is not None and record.ab_result.winner == "A"


def test_ab_test_with_winner_approval_waits_then_promotes_b() -> None:
    d = Driver(with_strategy(example(), "ab-test", ab_test={"winner": "approval"}))
    d.run()
    d.desired = with_module(d.desired, "greeter", version="1.2.0", rollout="ab-test")
    d.run(at=0.0)
    metrics = healthy_metrics("greeter", "1.1.0", errors=3) + healthy_metrics("greeter", "1.2.0", errors=1)
    d.run(at=600.0, metrics=metrics)
    record = d.record("greeter")
    assert (record.phase, record.awaiting) == (Phase.WAITING_APPROVAL, "winner")
    assert record.ab_result is not None and record.ab_result.winner == "B"
    assert d.run(at=700.0).actions == ()
    d.approvals = (approval("greeter", "1.2.0"),)
    result = d.run(at=701.0)
    assert "WinnerApproved" in [getattr(a, "reason", "") for a in result.actions]
    assert d.record("greeter").phase is Phase.PROMOTED


def test_ab_test_latency_metric_picks_the_faster_version() -> None:
    d = Driver(with_strategy(example(), "ab-test", ab_test={"metric": "latencyP99"}))
    d.run()
    d.desired = with_module(d.desired, "greeter", version="1.2.0", rollout="ab-test")
    d.run(at=0.0)
    metrics = healthy_metrics("greeter", "1.1.0", p99=9.0) + healthy_metrics("greeter", "1.2.0", p99=4.0)
    d.run(at=600.0, metrics=metrics)
    record = d.record("greeter")
    assert record.phase is Phase.PROMOTED
    assert record.ab_result is not None and (record.ab_result.a_value, record.ab_result.b_value) == (9.0, 4.0)


def test_rolling_switches_one_batch_of_nodes_at_a_time() -> None:
    desired = with_module(example(), "wc", placement={"replicas": "all"})
    d = Driver(desired)
    d.run()
    d.desired = with_module(desired, "wc", version="1.1.0")
    d.desired = with_strategy(d.desired, "rolling", rolling={"batch_size": 2})
    d.run(at=0.0)
    metrics = healthy_metrics("wc", "1.1.0")
    on_new = []
    for i in range(1, 4):
        on_new.append(sum(1 for w in d.weights("wc").values() if w == {"1.1.0": 100}))
        d.run(at=15.0 * i, metrics=metrics)
    assert on_new == [2, 4, 6]  # 6 nodes in wc's two regions, 2 per batch
    assert d.record("wc").phase is Phase.PROMOTED


def test_regional_without_inner_strategy_replaces_region_by_region() -> None:
    desired = with_strategy(example(), "regional", regional={"per_region": None}, approval={"before_start": False})
    d = Driver(desired)
    d.run()
    d.desired = with_module(desired, "greeter", version="1.2.0", rollout="regional")
    d.run(at=0.0)
    by_region = {n: w for n, w in d.weights("greeter").items() if not n.startswith("apac")}
    assert {n.split("-")[0] for n, w in by_region.items() if w == {"1.2.0": 100}} == {"us"}
    d.run(at=60.0, metrics=healthy_metrics("greeter", "1.2.0"))
    assert d.record("greeter").region_index == 1
    d.run(at=120.0, metrics=healthy_metrics("greeter", "1.2.0"))
    assert d.record("greeter").phase is Phase.PROMOTED


def test_regional_follows_its_own_region_order() -> None:
    desired = with_strategy(
        example(), "regional", regional={"order": ["eu-central", "us-east"]}, approval={"before_start": False}
    )
    d = Driver(desired)
    d.run()
    d.desired = with_module(desired, "greeter", version="1.2.0", rollout="regional")
    result = d.run(at=0.0)
    (step,) = [a for a in result.actions if isinstance(a, AdvanceStep)]
    assert (step.region, step.percent) == ("eu-central", 10)
    us = {n: w for n, w in d.weights("greeter").items() if n.startswith("us-east")}
    assert weight_set(us) == {(("1.1.0", 100),)}
