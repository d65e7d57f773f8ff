"""Analysis outcomes, gates, operator requests, superseding commits, node loss and replay."""

from __future__ import annotations

import dataclasses

import pytest

from reconciler.planner import (
    ConditionType,
    NodeStatus,
    ObservedNode,
    Pause,
    Phase,
    RecordEvent,
    RegionMetrics,
    Rollback,
    SetAssignment,
    StepKind,
    plan,
)
from reconciler.planner.types import UNHEALTHY_HOLD_SECONDS

from .driver import (
    Driver,
    approval,
    example,
    healthy_metrics,
    kinds,
    weight_set,
    with_module,
    with_policy,
    with_strategy,
)


def canary_started(**strategy: object) -> Driver:
    desired = with_strategy(example(), "canary", **strategy) if strategy else example()
    d = Driver(desired)
    d.run()
    d.desired = with_module(desired, "greeter", version="1.2.0")
    d.run(at=0.0)
    return d


def scoped(d: Driver, module: str = "greeter") -> set[tuple[tuple[str, int], ...]]:
    return weight_set({n: w for n, w in d.weights(module).items() if not n.startswith("apac")})


# --- analysis --------------------------------------------------------------------------------

FAILING = {
    "error rate": healthy_metrics("greeter", "1.2.0", errors=50),
    "p99 latency": healthy_metrics("greeter", "1.2.0", p99=80.0),
}


@pytest.mark.parametrize(("why", "reason"), [("error rate", "ErrorRateTooHigh"), ("p99 latency", "LatencyTooHigh")])
def test_failed_analysis_rolls_back_at_once_when_auto_rollback(why: str, reason: str) -> None:
    d = canary_started()
    result = d.run(at=30.0, metrics=healthy_metrics("greeter", "1.1.0") + FAILING[why])
    record = d.record("greeter")
    assert (record.phase, record.reason) == (Phase.ROLLED_BACK, reason)
    rollback = next(a for a in result.actions if isinstance(a, Rollback))
    assert rollback.to_version == "1.1.0"
    assert scoped(d) == {(("1.1.0", 100),)}  # new version unloaded everywhere
    assert record.history[-1].outcome == "Failed"


def test_failed_analysis_without_auto_rollback_pauses_degraded() -> None:
    d = canary_started(auto_rollback=False)
    result = d.run(at=30.0, metrics=FAILING["error rate"])
    record = d.record("greeter")
    assert (record.phase, record.reason) == (Phase.PAUSED, "AnalysisFailed")
    assert kinds(result.actions) == ["Pause"]
    assert scoped(d) == {(("1.1.0", 90), ("1.2.0", 10))}  # holds the step's weights
    assert d.condition("greeter", ConditionType.DEGRADED) == (True, "AnalysisFailed")
    assert d.condition("greeter", ConditionType.STALLED)[0] is True
    assert d.run(at=500.0, metrics=healthy_metrics("greeter", "1.2.0")).actions == ()


def test_too_few_requests_pauses_with_no_traffic_then_resumes_when_traffic_comes() -> None:
    d = canary_started()
    d.run(at=30.0, metrics=healthy_metrics("greeter", "1.2.0", requests=5))
    record = d.record("greeter")
    assert (record.phase, record.reason) == (Phase.PAUSED, "NoTraffic")
    assert d.condition("greeter", ConditionType.PAUSED) == (True, "NoTraffic")
    assert d.last.requeue_after == 5.0
    again = d.run(at=35.0, metrics=healthy_metrics("greeter", "1.2.0", requests=10))
    assert again.actions == () and again.records == ()
    d.run(at=40.0, metrics=healthy_metrics("greeter", "1.2.0", requests=40))
    assert d.record("greeter").phase is Phase.PROGRESSING
    assert d.record("greeter").percent == 25


def test_no_traffic_proceeds_when_on_no_traffic_is_proceed() -> None:
    d = canary_started(analysis={"on_no_traffic": "proceed"})
    d.run(at=30.0)
    record = d.record("greeter")
    assert (record.phase, record.percent) == (Phase.PROGRESSING, 25)
    assert record.history[-1].reason == "NoTrafficProceed"


def test_stable_version_failing_the_same_threshold_is_inconclusive_not_a_failure() -> None:
    d = canary_started()
    metrics = healthy_metrics("greeter", "1.1.0", errors=60) + healthy_metrics("greeter", "1.2.0", errors=40)
    d.run(at=30.0, metrics=metrics)
    record = d.record("greeter")
    assert (record.phase, record.reason) == (Phase.PAUSED, "BaselineDegraded")


def test_new_version_worse_than_a_failing_stable_version_still_fails() -> None:
    d = canary_started()
    metrics = healthy_metrics("greeter", "1.1.0", errors=20) + healthy_metrics("greeter", "1.2.0", errors=90)
    d.run(at=30.0, metrics=metrics)
    assert d.record("greeter").phase is Phase.ROLLED_BACK


def test_regional_failure_in_second_region_rolls_back_every_region() -> None:
    desired = with_strategy(example(), "regional", approval={"before_start": False})
    desired = with_strategy(desired, "canary", canary={"steps": [100]})
    d = Driver(desired)
    d.run()
    d.desired = with_module(desired, "greeter", version="1.2.0", rollout="regional")
    d.run(at=0.0)
    good = healthy_metrics("greeter", "1.2.0")
    d.run(at=30.0, metrics=good)  # us-east at 100 %: settle
    d.run(at=90.0, metrics=good)  # eu-central starts
    assert d.record("greeter").region_index == 1
    bad = [RegionMetrics("greeter", "1.2.0", "us-east", 1000, 0, 5.0)]
    bad.append(RegionMetrics("greeter", "1.2.0", "eu-central", 1000, 300, 5.0))
    d.run(at=120.0, metrics=bad)
    record = d.record("greeter")
    assert (record.phase, record.reason) == (Phase.ROLLED_BACK, "ErrorRateTooHigh")
    assert record.history[-1].region == "eu-central"
    assert scoped(d) == {(("1.1.0", 100),)}


# --- gates -----------------------------------------------------------------------------------


def test_before_start_gate_waits_for_approval_with_stable_weights() -> None:
    d = Driver(example())
    d.run()
    d.desired = with_module(example(), "greeter", version="1.2.0", rollout="regional")
    result = d.run()
    record = d.record("greeter")
    assert (record.phase, record.awaiting, record.step) == (Phase.WAITING_APPROVAL, "gate", -1)
    assert kinds(result.actions) == ["StartRollout", "Pause"]
    assert scoped(d) == {(("1.1.0", 100),)}
    assert d.condition("greeter", ConditionType.PAUSED) == (True, "AwaitingApproval")
    assert d.run(at=1000.0).actions == ()


def test_before_start_gate_opens_on_approval() -> None:
    d = Driver(example())
    d.run()
    d.desired = with_module(example(), "greeter", version="1.2.0", rollout="regional")
    d.run()
    d.approvals = (approval("greeter", "1.2.0"),)
    d.run(at=10.0)
    record = d.record("greeter")
    assert (record.phase, record.kind, record.percent) == (Phase.PROGRESSING, StepKind.WEIGHT, 10)
    assert record.approvals_used == (approval("greeter", "1.2.0").commit,)
    assert record.step_started_at == 10.0


def test_approval_by_a_role_the_rule_does_not_name_does_not_open_the_gate() -> None:
    d = Driver(example())
    d.run()
    d.desired = with_module(example(), "greeter", version="1.2.0", rollout="regional")
    d.approvals = (approval("greeter", "1.2.0", "bob", roles=("developer",)),)
    d.run()
    assert d.record("greeter").phase is Phase.WAITING_APPROVAL


def test_fleet_rule_needing_two_principals_waits_for_the_second() -> None:
    from reconciler.spec.models import ApprovalRule, Role

    desired = with_policy(example(), rollouts=ApprovalRule(roles=[Role.OPERATOR, Role.ADMIN], count=2))
    d = Driver(desired)
    d.run()
    d.desired = with_module(desired, "greeter", version="1.2.0", rollout="regional")
    d.approvals = (approval("greeter", "1.2.0", "alice", n=1), approval("greeter", "1.2.0", "alice", n=2))
    d.run()
    assert d.record("greeter").phase is Phase.WAITING_APPROVAL
    d.approvals = (*d.approvals, approval("greeter", "1.2.0", "carol", roles=("operator",), n=3))
    d.run()
    assert d.record("greeter").phase is Phase.PROGRESSING


def test_gate_at_a_step_needs_an_approval_not_spent_on_an_earlier_gate() -> None:
    d = canary_started(approval={"before_start": True, "gates": [2]})
    assert d.record("greeter").phase is Phase.WAITING_APPROVAL
    d.approvals = (approval("greeter", "1.2.0", n=1),)
    d.run(at=1.0)
    d.run(at=31.0, metrics=healthy_metrics("greeter", "1.2.0"))
    assert d.record("greeter").percent == 25
    d.run(at=61.0, metrics=healthy_metrics("greeter", "1.2.0"))
    record = d.record("greeter")
    assert (record.phase, record.percent, record.awaiting) == (Phase.WAITING_APPROVAL, 25, "gate")
    assert scoped(d) == {(("1.1.0", 75), ("1.2.0", 25))}
    d.approvals = (*d.approvals, approval("greeter", "1.2.0", "dave", n=2))
    d.run(at=70.0)
    assert (d.record("greeter").phase, d.record("greeter").percent) == (Phase.PROGRESSING, 50)


# --- operator requests -----------------------------------------------------------------------


def test_manual_pause_holds_the_rollout_at_its_step() -> None:
    d = canary_started()
    d.update_record("greeter", held=True)
    result = d.run(at=300.0, metrics=healthy_metrics("greeter", "1.2.0"))
    assert result.records == ()
    assert d.record("greeter").percent == 10
    assert d.condition("greeter", ConditionType.PAUSED) == (True, "ManualPause")
    d.update_record("greeter", held=False)
    d.run(at=301.0, metrics=healthy_metrics("greeter", "1.2.0"))
    assert d.record("greeter").percent == 25


@pytest.mark.parametrize(("request_", "phase"), [("rollback", Phase.ROLLED_BACK), ("abort", Phase.ABORTED)])
def test_operator_rollback_or_abort_returns_to_the_stable_version(request_: str, phase: Phase) -> None:
    d = canary_started()
    d.update_record("greeter", request=request_)
    d.run(at=5.0)
    assert d.record("greeter").phase is phase
    assert scoped(d) == {(("1.1.0", 100),)}


def test_blue_green_switch_back_during_keep_window_is_instant() -> None:
    d = Driver(example())
    d.run()
    d.desired = with_module(example(), "calc", version="1.1.0")
    d.run(at=0.0)
    d.run(at=20.0, metrics=healthy_metrics("calc", "1.1.0"))
    d.update_record("calc", request="rollback")
    result = d.run(at=25.0)
    assert weight_set(d.weights("calc")) == {(("1.0.0", 100),)}
    # every node already held 1.0.0: the switch back is a weight change on loaded versions
    assert all(isinstance(a, SetAssignment | Rollback) for a in result.actions)


# --- rolled back stays rolled back; Git moves on ---------------------------------------------


def test_rolled_back_release_is_not_retried_while_git_asks_for_it() -> None:
    d = canary_started()
    d.run(at=30.0, metrics=FAILING["error rate"])
    for at in (60.0, 600.0, 6000.0):
        result = d.run(at=at, metrics=healthy_metrics("greeter", "1.2.0"))
        assert result.actions == () and result.records == ()
    assert d.record("greeter").phase is Phase.ROLLED_BACK


def test_new_commit_after_a_rollback_starts_a_new_rollout_from_the_stable_version() -> None:
    d = canary_started()
    d.run(at=30.0, metrics=FAILING["error rate"])
    d.desired = with_module(example(), "greeter", version="1.2.1")
    d.run(at=40.0)
    record = d.record("greeter")
    assert (record.seq, record.phase, record.percent) == (3, Phase.PROGRESSING, 10)
    assert record.previous is not None and record.previous.version == "1.1.0"


def test_asking_again_for_a_rolled_back_release_after_a_revert_retries_it() -> None:
    d = canary_started()
    d.run(at=30.0, metrics=FAILING["error rate"])
    d.desired = example()
    result = d.run(at=40.0)
    assert (d.record("greeter").phase, d.record("greeter").reason) == (Phase.PROMOTED, "Reverted")
    # Nothing starts (1.1.0 runs already): no "1.1.0 -> 1.1.0" rollout, one event that says so.
    assert [(a.reason, a.message) for a in result.actions if isinstance(a, RecordEvent)] == [
        ("Reverted", f"greeter: Git returned to {d.record('greeter').target.label}, which runs: nothing to roll out")
    ]
    assert kinds(result.actions) == ["RecordEvent"]
    d.desired = with_module(example(), "greeter", version="1.2.0")
    d.run(at=50.0)
    assert (d.record("greeter").phase, d.record("greeter").seq) == (Phase.PROGRESSING, 4)


def test_new_commit_supersedes_a_running_rollout_and_restarts_from_stable() -> None:
    d = canary_started()
    d.run(at=30.0, metrics=healthy_metrics("greeter", "1.2.0"))
    assert d.record("greeter").percent == 25
    first_id = d.record("greeter").id
    d.desired = with_module(example(), "greeter", version="1.3.0")
    result = d.run(at=35.0)
    assert d.records[first_id].phase is Phase.SUPERSEDED
    record = d.record("greeter")
    assert record.previous is not None and record.previous.version == "1.1.0"
    assert (record.target.version, record.percent) == ("1.3.0", 10)
    assert kinds(result.actions)[:3] == ["RecordEvent", "StartRollout", "AdvanceStep"]
    assert scoped(d) == {(("1.1.0", 90), ("1.3.0", 10))}


def test_commit_reverting_a_running_rollout_returns_to_stable_without_a_new_rollout() -> None:
    d = canary_started()
    d.desired = example()
    d.run(at=5.0)
    assert d.record("greeter").phase is Phase.SUPERSEDED
    assert scoped(d) == {(("1.1.0", 100),)}
    assert d.run(at=50.0).actions == ()


def test_strategy_removed_from_git_aborts_the_running_rollout() -> None:
    import dataclasses

    d = canary_started()
    strategies = {k: v for k, v in d.desired.strategies.items() if k != "canary"}
    d.desired = dataclasses.replace(d.desired, strategies=strategies)
    d.run(at=5.0)
    assert (d.record("greeter").phase, d.record("greeter").reason) == (Phase.ABORTED, "StrategyMissing")


# --- node loss -------------------------------------------------------------------------------


def test_node_lost_mid_canary_is_replaced_with_the_current_step_weights() -> None:
    d = canary_started()
    holders = {n for n in d.holders("greeter") if n.startswith("us-east")}
    lost = sorted(holders)[0]
    held = d.nodes[lost].assigned
    d.nodes[lost] = dataclasses.replace(d.nodes[lost], status=NodeStatus.UNHEALTHY, last_heartbeat=9.0)
    result = d.run(at=10.0)
    now_holding = {n for n in d.holders("greeter") if n.startswith("us-east") and n != lost}
    assert len(now_holding) == 2
    (replacement,) = now_holding - holders
    assert d.weights("greeter")[replacement] == {"1.1.0": 90, "1.2.0": 10}
    # The lost node's table is left as it was: placed elsewhere, but not emptied under a node that
    # may only be silent for a moment (it would answer 404 for every module until heard again).
    assert d.nodes[lost].assigned == held
    assert not any(getattr(a, "node_id", None) == lost for a in result.actions)
    assert result.records == ()  # placement changed, the rollout did not
    d.run(at=30.0, metrics=healthy_metrics("greeter", "1.2.0"))
    assert d.record("greeter").percent == 25
    assert d.nodes[lost].assigned == held  # still silent: still as it was
    # Heard again: it takes the table the placement now gives it (its place back, at the current
    # step's weights), and the replacement gives it up.
    d.set_status(lost, NodeStatus.HEALTHY)
    d.run(at=31.0)
    assert d.weights("greeter")[lost] == {"1.1.0": 75, "1.2.0": 25}
    assert {n for n in d.holders("greeter") if n.startswith("us-east")} == holders


def test_a_node_silent_past_the_hold_is_emptied() -> None:
    d = canary_started()
    lost = sorted(n for n in d.holders("greeter") if n.startswith("us-east"))[0]
    d.nodes[lost] = dataclasses.replace(d.nodes[lost], status=NodeStatus.UNHEALTHY, last_heartbeat=9.0)
    d.run(at=9.0 + UNHEALTHY_HOLD_SECONDS - 1)
    assert d.nodes[lost].assigned != ()
    d.run(at=9.0 + UNHEALTHY_HOLD_SECONDS)
    assert d.nodes[lost].assigned == ()  # a node that polls but cannot heartbeat serves no stale release
    never = sorted(n for n in d.holders("greeter") if n.startswith("eu-central"))[0]
    d.set_status(never, NodeStatus.UNHEALTHY)  # never heard: nothing to hold for
    d.later(1.0)
    assert d.nodes[never].assigned == ()


def test_node_lost_mid_rolling_batch_does_not_stop_the_rollout() -> None:
    desired = with_module(example(), "wc", placement={"replicas": "all"})
    d = Driver(desired)
    d.run()
    d.desired = with_module(desired, "wc", version="1.1.0")
    d.run(at=0.0)
    (first,) = d.record("wc").batch
    d.remove(first)
    metrics = healthy_metrics("wc", "1.1.0")
    for i in range(1, 10):
        d.run(at=15.0 * i, metrics=metrics)
        if d.record("wc").phase is Phase.PROMOTED:
            break
    assert d.record("wc").phase is Phase.PROMOTED
    assert weight_set(d.weights("wc")) == {(("1.1.0", 100),)}
    assert len(d.weights("wc")) == 5


# --- pins and overrides ----------------------------------------------------------------------


def test_pinned_node_keeps_its_version_and_takes_no_part_in_rollouts() -> None:
    desired = with_module(example(), "greeter", placement={"pins": {"eu-central-2": "1.0.0"}})
    d = Driver(desired)
    d.run()
    assert d.weights("greeter")["eu-central-2"] == {"1.0.0": 100}
    d.desired = with_module(desired, "greeter", version="1.2.0")
    d.run(at=0.0)
    assert d.weights("greeter")["eu-central-2"] == {"1.0.0": 100}
    eu = {n for n in d.holders("greeter") if n.startswith("eu-central") and n != "eu-central-2"}
    assert len(eu) == 2  # the pinned node is extra: replicas are placed on other nodes


def test_version_override_region_keeps_its_version_during_a_rollout() -> None:
    d = canary_started()
    apac = {n: w for n, w in d.weights("greeter").items() if n.startswith("apac")}
    assert len(apac) == 2 and weight_set(apac) == {(("1.0.0", 100),)}


# --- replay ----------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["canary", "blue-green", "rolling", "ab-test", "regional"])
def test_replaying_a_pass_from_its_records_plans_nothing_new(strategy: str) -> None:
    module, new = {"blue-green": ("calc", "1.1.0"), "rolling": ("wc", "1.1.0")}.get(strategy, ("greeter", "1.2.0"))
    d = Driver(example())
    d.run()
    d.desired = with_module(example(), module, version=new, rollout=strategy)
    d.approvals = (approval(module, new),)
    metrics = healthy_metrics(module, new) + healthy_metrics(module, "1.1.0") + healthy_metrics(module, "1.0.0")
    at = 0.0
    for _ in range(15):
        d.run(at=at, metrics=metrics)
        again = plan(d.snapshot(metrics))
        assert again.actions == () and again.records == (), d.record(module)
        at += 600.0


def test_a_pass_interrupted_before_publishing_republishes_the_same_tables() -> None:
    d = canary_started()
    d.nodes_apply_tables()
    before = d.snapshot(healthy_metrics("greeter", "1.2.0"))
    d.now = 30.0
    first = plan(d.snapshot(healthy_metrics("greeter", "1.2.0")))
    for record in first.records:  # records stored, then the reconciler dies before publishing
        d.records[record.id] = record
    second = plan(d.snapshot(healthy_metrics("greeter", "1.2.0")))
    assert second.records == ()
    tables = {a.node_id: a.table for a in first.actions if isinstance(a, SetAssignment)}
    assert {a.node_id: a.table for a in second.actions if isinstance(a, SetAssignment)} == tables
    assert before.records != d.snapshot().records


def test_unhealthy_and_draining_nodes_get_an_empty_table() -> None:
    nodes = (
        ObservedNode("us-east-0", "us-east"),
        ObservedNode("us-east-1", "us-east", NodeStatus.DRAINING),
        ObservedNode("eu-central-0", "eu-central", NodeStatus.UNHEALTHY),
    )
    d = Driver(example(), nodes)
    d.run()
    assert d.nodes["us-east-1"].assigned == () and d.nodes["eu-central-0"].assigned == ()
    assert {e.module for e in d.nodes["us-east-0"].assigned} == {"calc", "greeter", "wc", "hello"}


def test_pause_action_names_the_reason() -> None:
    d = canary_started()
    result = d.run(at=30.0)
    pause = next(a for a in result.actions if isinstance(a, Pause))
    assert pause.reason == "NoTraffic" and "50" in pause.message


# --- nodes coming and going, timing ----------------------------------------------------------


def test_rollout_without_any_node_in_scope_is_pending_until_one_is_healthy() -> None:
    nodes = [ObservedNode(f"us-east-{i}", "us-east", NodeStatus.UNHEALTHY) for i in range(2)]
    d = Driver(example(), nodes)
    d.run()
    d.desired = with_module(example(), "wc", version="1.1.0")
    result = d.run(at=1.0)
    record = d.record("wc")
    assert (record.phase, record.reason) == (Phase.PENDING, "NoNodes")
    assert kinds(result.actions) == ["StartRollout", "Pause"]
    assert d.run(at=2.0).actions == ()
    d.set_status("us-east-0", NodeStatus.HEALTHY)
    d.run(at=3.0)
    assert (d.record("wc").phase, d.record("wc").batch) == (Phase.PROGRESSING, ("us-east-0",))


def test_joining_node_mid_canary_gets_the_current_step_weights() -> None:
    desired = with_module(example(), "greeter", placement={"replicas": "all"})
    d = Driver(desired)
    d.run()
    d.desired = with_module(desired, "greeter", version="1.2.0")
    d.run(at=0.0)
    d.add(ObservedNode("us-east-9", "us-east"))
    d.run(at=1.0)
    assert d.weights("greeter")["us-east-9"] == {"1.1.0": 90, "1.2.0": 10}


def test_requeue_after_never_lets_a_step_end_pass_unseen() -> None:
    d = Driver(example())
    d.run()
    desired = with_module(example(), "greeter", version="1.2.0")
    d.desired = with_module(desired, "calc", version="1.1.0")
    assert d.run(at=0.0).requeue_after == 5.0  # every running step is looked at every 5 s
    assert d.run(at=17.0).requeue_after == 3.0  # calc's blue-green preview (20 s) ends first
    assert d.run(at=28.0).requeue_after == 2.0  # then greeter's canary step (30 s)


def test_finished_rollouts_ask_for_no_requeue() -> None:
    d = Driver(example())
    assert d.run().requeue_after is None


def test_regional_gate_at_a_region_index_waits_before_that_region() -> None:
    desired = with_strategy(example(), "regional", approval={"before_start": False, "gates": [1]})
    desired = with_strategy(desired, "canary", canary={"steps": [100]})
    d = Driver(desired)
    d.run()
    d.desired = with_module(desired, "greeter", version="1.2.0", rollout="regional")
    d.run(at=0.0)
    good = healthy_metrics("greeter", "1.2.0")
    d.run(at=30.0, metrics=good)
    d.run(at=90.0, metrics=good)
    record = d.record("greeter")
    assert (record.phase, record.region_index, record.kind) == (Phase.WAITING_APPROVAL, 0, StepKind.SETTLE)
    d.approvals = (approval("greeter", "1.2.0"),)
    d.run(at=100.0)
    assert (d.record("greeter").phase, d.record("greeter").region_index) == (Phase.PROGRESSING, 1)


def test_failing_metrics_mid_step_roll_back_before_the_step_ends() -> None:
    d = canary_started()
    early = d.run(at=3.0, metrics=FAILING["error rate"])
    assert d.record("greeter").phase is Phase.ROLLED_BACK
    assert any(isinstance(a, Rollback) for a in early.actions)


def test_too_few_requests_with_an_unclear_failure_mid_step_do_not_fail_it_early() -> None:
    d = canary_started(analysis={"max_error_rate": 0.05})  # minRequests 50: 2.5 errors allowed
    one_in_30 = [RegionMetrics("greeter", "1.2.0", "us-east", 30, 1, 5.0)]
    d.run(at=3.0, metrics=healthy_metrics("greeter", "1.1.0") + one_in_30)
    assert (d.record("greeter").phase, d.record("greeter").percent) == (Phase.PROGRESSING, 10)


def test_too_few_requests_that_fail_clearly_fail_the_step_at_once() -> None:
    d = canary_started(analysis={"max_error_rate": 0.05})
    two_in_3 = [RegionMetrics("greeter", "1.2.0", "us-east", 3, 2, 5.0)]
    d.run(at=3.0, metrics=healthy_metrics("greeter", "1.1.0") + two_in_3)
    record = d.record("greeter")
    assert (record.phase, record.reason) == (Phase.ROLLED_BACK, "ErrorRateTooHigh")
    assert "99% lower bound" in record.message


@pytest.mark.parametrize("strategy", ["canary", "blue-green", "ab-test", "rolling", "regional"])
def test_strategy_edited_into_another_type_mid_rollout_never_breaks_a_pass(strategy: str) -> None:
    from reconciler.spec.strategies import CanaryParams, StrategyType

    module = {"blue-green": "calc", "rolling": "wc"}.get(strategy, "greeter")
    d = Driver(example())
    d.run()
    d.desired = with_module(example(), module, version="2.0.0", rollout=strategy)
    d.approvals = (approval(module, "2.0.0"),)
    d.run(at=0.0)
    edited = {"type": StrategyType.CANARY, "canary": CanaryParams(steps=[50, 100], step_seconds=1)}
    edited |= {k: None for k in ("blue_green", "rolling", "regional", "ab_test")}
    d.desired = with_strategy(d.desired, strategy, **edited)
    metrics = healthy_metrics(module, "2.0.0")
    for at in range(1000, 1010):
        d.run(at=float(at), metrics=metrics)
    assert d.record(module).phase is Phase.PROMOTED


def test_traffic_waits_for_every_node_of_the_step_to_load_the_new_release() -> None:
    d = Driver(example())
    d.run()
    stuck = sorted(d.holders("calc"))[0]
    d.stuck.add(stuck)  # this node gets tables but cannot load them (its blob store is down, say)
    d.desired = with_module(example(), "calc", version="1.1.0")
    d.run(at=0.0)
    assert d.record("calc").kind is StepKind.PREVIEW
    result = d.run(at=60.0)
    assert d.record("calc").kind is StepKind.PREVIEW  # no switch while a node lacks 1.1.0
    assert result.requeue_after is not None and result.requeue_after <= 0.25
    assert all(w.get("1.1.0", 0) == 0 for w in d.weights("calc").values())
    d.stuck.clear()  # it loads 1.1.0 before the next pass
    d.run(at=61.0)
    assert d.record("calc").applied_at == 61.0  # the preview's 20 s count from here
    d.run(at=80.0)
    assert d.record("calc").kind is StepKind.PREVIEW
    d.run(at=81.0)
    assert d.record("calc").kind is StepKind.SWITCH
