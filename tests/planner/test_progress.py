"""Rollouts that always progress and stop early: strategy defaults, failure judged on every pass, and
steps that count only what the nodes report."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.planner import ConditionType, Phase, RegionMetrics, RunningEntry, StepKind
from reconciler.planner.analysis import LOADED_AND_HEALTHY, TRAFFIC, analysis_for
from reconciler.spec.fleet import DesiredFleet
from reconciler.spec.models import RolloutStrategy
from reconciler.spec.strategies import Analysis, RolloutStrategySpec

from .driver import Driver, approval, example, healthy_metrics, weight_set, with_module, with_strategy


def written(desired: DesiredFleet, name: str, spec: dict[str, Any]) -> DesiredFleet:
    """The fleet with strategy `name` replaced by `spec` as YAML would give it (camelCase, fields left out)."""
    strategies = dict(desired.strategies)
    old = strategies[name]
    strategies[name] = RolloutStrategy(metadata=old.metadata, spec=RolloutStrategySpec.model_validate(spec))
    return DesiredFleet(
        fleet=desired.fleet,
        modules=desired.modules,
        strategies=strategies,
        interfaces=desired.interfaces,
        binaries=desired.binaries,
        locations=desired.locations,
        wit_packages=desired.wit_packages,
        alerts=desired.alerts,
    )


def run_out(d: Driver, module: str, metrics: list[RegionMetrics] | None = None, passes: int = 200) -> None:
    """Pass after pass, each when the planner asks to be looked at again, until the rollout is done."""
    for _ in range(passes):
        if not d.record(module).active:
            return
        d.later(d.last.requeue_after or 1.0, metrics or [])


def scoped(d: Driver, module: str) -> set[tuple[tuple[str, int], ...]]:
    return weight_set({n: w for n, w in d.weights(module).items() if not n.startswith("apac")})


# --- defaults per strategy type ----------------------------------------------------------------

PLAIN_BLUE_GREEN = {"type": "BlueGreen", "blueGreen": {"previewSeconds": 0, "autoPromote": True}}
PLAIN_ROLLING = {"type": "Rolling"}


@pytest.mark.parametrize(
    ("module", "strategy", "spec"),
    [("calc", "blue-green", PLAIN_BLUE_GREEN), ("wc", "rolling", PLAIN_ROLLING)],
    ids=["blue-green", "rolling"],
)
def test_plain_blue_green_and_rolling_finish_without_any_traffic(module: str, strategy: str, spec: Any) -> None:
    d = Driver(written(example(), strategy, spec))
    d.run()
    d.desired = with_module(d.desired, module, version="9.0.0")
    d.run(at=0.0)
    run_out(d, module)  # no metrics at all: nobody sends a request
    record = d.record(module)
    assert (record.phase, record.reason) == (Phase.PROMOTED, "Promoted"), record.message
    assert all(r.outcome == "Passed" for r in record.history)
    assert scoped(d, module) == {(("9.0.0", 100),)}


def test_the_same_blue_green_with_an_explicit_traffic_analysis_says_it_cannot_progress() -> None:
    spec = {**PLAIN_BLUE_GREEN, "analysis": {"minRequests": 20}}  # onNoTraffic: pause by default
    d = Driver(written(example(), "blue-green", spec))
    d.run()
    d.desired = with_module(d.desired, "calc", version="9.0.0")
    d.run(at=0.0)
    run_out(d, "calc", passes=20)
    record = d.record("calc")
    assert (record.phase, record.kind, record.reason) == (Phase.PAUSED, StepKind.PREVIEW, "CannotProgress")
    assert d.condition("calc", ConditionType.PAUSED) == (True, "CannotProgress")
    assert "X-Hotswap-Version" in record.message
    # Preview requests (sent with X-Hotswap-Version) still let it go on.
    d.later(5.0, healthy_metrics("calc", "9.0.0", requests=10))
    assert d.record("calc").kind is StepKind.SWITCH


def test_plain_blue_green_judges_preview_traffic_when_there_is_some() -> None:
    d = Driver(written(example(), "blue-green", {"type": "BlueGreen", "blueGreen": {"previewSeconds": 60}}))
    d.run()
    d.desired = with_module(d.desired, "calc", version="9.0.0")
    d.run(at=0.0)
    d.run(at=10.0, metrics=[RegionMetrics("calc", "9.0.0", "us-east", 4, 4, 1.0)])
    record = d.record("calc")
    assert (record.phase, record.kind, record.reason) == (Phase.ROLLED_BACK, StepKind.PREVIEW, "ErrorRateTooHigh")


def test_plain_canary_keeps_a_traffic_analysis() -> None:
    d = Driver(written(example(), "canary", {"type": "Canary"}))
    d.run()
    d.desired = with_module(d.desired, "greeter", version="9.0.0")
    d.run(at=0.0)
    d.run(at=30.0)
    assert (d.record("greeter").phase, d.record("greeter").reason) == (Phase.PAUSED, "NoTraffic")
    d.run(at=35.0, metrics=healthy_metrics("greeter", "9.0.0", requests=25))  # 50 in its two regions
    assert (d.record("greeter").phase, d.record("greeter").percent) == (Phase.PROGRESSING, 25)


def spec(**fields: Any) -> RolloutStrategySpec:
    return RolloutStrategySpec.model_validate(fields)


@pytest.mark.parametrize(
    ("strategy", "inner", "expected"),
    [
        (spec(type="BlueGreen"), None, LOADED_AND_HEALTHY),
        (spec(type="Rolling"), None, LOADED_AND_HEALTHY),
        (spec(type="Canary"), None, TRAFFIC),
        (spec(type="ABTest"), None, TRAFFIC),
        (spec(type="Regional"), None, LOADED_AND_HEALTHY),
        (spec(type="Regional"), spec(type="Canary"), TRAFFIC),
        (spec(type="Regional"), spec(type="Rolling", analysis={"minRequests": 7}), Analysis(min_requests=7)),
        (spec(type="BlueGreen", analysis={}), None, Analysis()),  # explicit: today's meaning
        (spec(type="Canary", analysis={"minRequests": 0}), None, Analysis(min_requests=0)),
    ],
)
def test_analysis_for_each_strategy_type(
    strategy: RolloutStrategySpec, inner: RolloutStrategySpec | None, expected: Analysis
) -> None:
    assert analysis_for(strategy, inner) == expected


def test_traffic_default_waits_for_requests_and_loaded_default_never_does() -> None:
    assert (TRAFFIC.min_requests, TRAFFIC.on_no_traffic) == (50, "pause")
    assert (LOADED_AND_HEALTHY.min_requests, LOADED_AND_HEALTHY.on_no_traffic) == (0, "proceed")


# --- failure judged on every pass -----------------------------------------------------------------


def canary_started(prompt: bool = True, **strategy: object) -> Driver:
    desired = with_strategy(example(), "canary", **strategy) if strategy else example()
    d = Driver(desired)
    d.run()
    d.prompt = prompt
    d.desired = with_module(desired, "greeter", version="1.2.0")
    d.run(at=0.0)
    return d


def test_faulty_canary_under_light_load_rolls_back_on_its_first_clear_errors() -> None:
    """~2 requests a second, 10 % to the canary, which fails 2 requests in 3: one pass a heartbeat."""
    d = canary_started(analysis={"max_error_rate": 0.05, "min_requests": 100})
    errors = 0
    for second in range(1, 120):
        new_requests = second // 5  # 0.2 requests a second reach the canary
        errors = (2 * new_requests + 2) // 3
        metrics = [
            RegionMetrics("greeter", "1.1.0", "us-east", 2 * second - new_requests, 0, 2.0),
            RegionMetrics("greeter", "1.2.0", "us-east", new_requests, errors, 2.0),
        ]
        d.run(at=float(second), metrics=metrics)
        if not d.record("greeter").active:
            break
    record = d.record("greeter")
    assert (record.phase, record.reason) == (Phase.ROLLED_BACK, "ErrorRateTooHigh")
    assert errors <= 10
    assert record.history[-1].requests < 100  # long before minRequests


def test_failure_is_judged_while_the_step_waits_for_a_node() -> None:
    d = Driver(example())
    d.run()
    d.stuck.add(sorted(d.holders("calc"))[0])
    d.desired = with_module(example(), "calc", version="1.1.0")
    d.run(at=0.0)
    d.run(at=100.0, metrics=[RegionMetrics("calc", "1.1.0", "us-east", 20, 15, 1.0)])
    assert (d.record("calc").phase, d.record("calc").reason) == (Phase.ROLLED_BACK, "ErrorRateTooHigh")


def test_failure_is_judged_while_a_blue_green_waits_for_its_promotion_approval() -> None:
    d = Driver(with_strategy(example(), "blue-green", blue_green={"auto_promote": False}))
    d.run()
    d.desired = with_module(d.desired, "calc", version="1.1.0")
    d.run(at=0.0)
    d.run(at=20.0)
    assert d.record("calc").awaiting == "promotion"
    d.run(at=40.0, metrics=[RegionMetrics("calc", "1.1.0", "us-east", 20, 15, 1.0)])
    assert (d.record("calc").phase, d.record("calc").reason) == (Phase.ROLLED_BACK, "ErrorRateTooHigh")


def test_failure_is_judged_while_paused_for_traffic_without_auto_rollback_pausing_it() -> None:
    d = canary_started(auto_rollback=False)
    d.run(at=30.0)
    assert d.record("greeter").reason == "NoTraffic"
    d.run(at=35.0, metrics=[RegionMetrics("greeter", "1.2.0", "us-east", 3, 3, 1.0)])
    assert (d.record("greeter").phase, d.record("greeter").reason) == (Phase.PAUSED, "AnalysisFailed")


# --- steps count what the nodes report -----------------------------------------------------------


def test_a_step_time_starts_when_every_node_reports_its_weights() -> None:
    d = canary_started(prompt=False)
    assert d.record("greeter").applied_at is None  # published, not yet reported
    d.run(at=10.0)  # the nodes report the 10 % table
    assert d.record("greeter").applied_at == 10.0
    d.run(at=39.0, metrics=healthy_metrics("greeter", "1.2.0"))
    assert d.record("greeter").percent == 10
    d.run(at=40.0, metrics=healthy_metrics("greeter", "1.2.0"))
    assert d.record("greeter").percent == 25


def test_nodes_that_never_report_the_next_weights_hold_the_rollout_short_of_promoted() -> None:
    """The CI hang: nodes kept serving 50/50 while the planner went on to 100 % and Promoted."""
    d = canary_started(canary={"steps": [50, 100], "step_seconds": 30})
    good = healthy_metrics("greeter", "1.1.0") + healthy_metrics("greeter", "1.2.0")
    assert scoped(d, "greeter") == {(("1.1.0", 50), ("1.2.0", 50))}
    d.stuck.update(n for n in d.holders("greeter") if not n.startswith("apac"))  # every node stays at 50/50
    for at in range(30, 3000, 30):
        d.run(at=float(at), metrics=good)
        assert d.record("greeter").phase is Phase.PROGRESSING
    record = d.record("greeter")
    assert (record.kind, record.percent, record.applied_at) == (StepKind.WEIGHT, 100, None)
    d.stuck.clear()
    d.run(at=3000.0, metrics=good)  # they report 0/100: its time starts
    d.run(at=3030.0, metrics=good)
    assert d.record("greeter").phase is Phase.PROMOTED


def test_promoted_is_recorded_only_once_every_node_reports_the_new_release_alone() -> None:
    d = canary_started(canary={"steps": [100], "step_seconds": 30})
    d.run(at=1.0)
    laggard = sorted(n for n in d.holders("greeter") if not n.startswith("apac"))[0]
    d.stuck.add(laggard)
    good = healthy_metrics("greeter", "1.1.0") + healthy_metrics("greeter", "1.2.0")
    d.run(at=31.0, metrics=good)
    record = d.record("greeter")
    assert (record.phase, record.kind, record.reason) == (Phase.PROGRESSING, StepKind.PROMOTE, "Promoting")
    assert scoped(d, "greeter") == {(("1.2.0", 100),)}  # published
    reported = {e.version: e.weight for e in d.nodes[laggard].running if e.module == "greeter"}
    assert reported == {"1.1.0": 0, "1.2.0": 100}  # still holds the previous version at 0 %
    for at in (32.0, 100.0, 1000.0):
        d.run(at=at, metrics=good)
        assert d.record("greeter").phase is Phase.PROGRESSING
    d.stuck.clear()
    d.run(at=1001.0)
    assert d.record("greeter").phase is Phase.PROMOTED


def test_a_node_that_no_longer_reports_the_weights_holds_the_end_of_a_step() -> None:
    d = canary_started()
    node = sorted(n for n in d.holders("greeter") if not n.startswith("apac"))[0]
    d.stuck.add(node)
    d.nodes[node] = d.nodes[node].__class__(**{**d.nodes[node].__dict__, "running": ()})  # it restarted
    d.run(at=30.0, metrics=healthy_metrics("greeter", "1.2.0"))
    assert d.record("greeter").percent == 10
    d.stuck.clear()
    d.run(at=31.0, metrics=healthy_metrics("greeter", "1.2.0"))
    assert d.record("greeter").percent == 25


def test_a_node_running_other_weights_of_the_same_versions_is_not_applied() -> None:
    d = canary_started(prompt=False)
    node = sorted(n for n in d.holders("greeter") if not n.startswith("apac"))[0]
    d.stuck.add(node)
    entries = tuple(
        RunningEntry(e.module, e.version, e.digest, 50)
        if e.module == "greeter"
        else RunningEntry(e.module, e.version, e.digest, e.weight)
        for e in d.nodes[node].assigned
    )
    d.nodes[node] = d.nodes[node].__class__(**{**d.nodes[node].__dict__, "running": entries})
    d.run(at=30.0, metrics=healthy_metrics("greeter", "1.2.0"))
    assert (d.record("greeter").percent, d.record("greeter").applied_at) == (10, None)


def test_approved_gate_then_reported_weights_before_the_time_counts() -> None:
    d = Driver(with_strategy(example(), "canary", approval={"gates": [1]}))
    d.run()
    d.desired = with_module(d.desired, "greeter", version="1.2.0")
    d.run(at=0.0)
    d.run(at=30.0, metrics=healthy_metrics("greeter", "1.2.0"))
    assert d.record("greeter").phase is Phase.WAITING_APPROVAL
    d.approvals = (approval("greeter", "1.2.0"),)
    d.prompt = False
    d.run(at=40.0)
    assert (d.record("greeter").percent, d.record("greeter").applied_at) == (25, None)
    d.run(at=45.0)
    assert d.record("greeter").applied_at == 45.0
