"""Approvals hold, whatever the nodes do: gates before any step or promotion, the Fleet's policy on
every rollout, and a change of capabilities held like a new version (issue 16, items 2 and 5)."""

from __future__ import annotations

import dataclasses

import hypothesis
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.planner import ConditionType, NodeStatus, Phase, Promote, StepKind
from reconciler.spec.fleet import DesiredFleet
from reconciler.spec.models import ApprovalRule, Mount, Role

from .driver import (
    Driver,
    approval,
    example,
    healthy_metrics,
    make_nodes,
    weight_set,
    with_module,
    with_policy,
    with_strategy,
)

POLICY = ApprovalRule(roles=[Role.ADMIN], count=1)


def rolling_before_start() -> DesiredFleet:
    return with_strategy(example(), "rolling", approval={"before_start": True})


def new_weight(d: Driver, module: str, version: str) -> int:
    """The highest weight any node's published table gives `module@version`."""
    return max((w.get(version, 0) for w in d.weights(module).values()), default=0)


def drain_all(d: Driver) -> None:
    for node_id in list(d.nodes):
        d.set_status(node_id, NodeStatus.DRAINING)


def heal_all(d: Driver) -> None:
    for node_id in list(d.nodes):
        d.set_status(node_id, NodeStatus.HEALTHY)


# --- gates before promotion ----------------------------------------------------------------------


def test_rolling_with_before_start_is_not_promoted_when_every_node_is_drained() -> None:
    d = Driver(rolling_before_start())
    d.run()
    d.desired = with_module(rolling_before_start(), "wc", version="1.1.0")
    d.run(at=1.0)
    assert (d.record("wc").phase, d.record("wc").awaiting) == (Phase.WAITING_APPROVAL, "gate")
    drain_all(d)
    for at in (2.0, 100.0, 1000.0):
        d.run(at=at)
        assert d.record("wc").phase is Phase.WAITING_APPROVAL
    assert d.condition("wc", ConditionType.PAUSED) == (True, "AwaitingApproval")


def test_approval_given_while_every_node_is_drained_waits_for_nodes_then_starts() -> None:
    d = Driver(rolling_before_start())
    d.run()
    d.desired = with_module(rolling_before_start(), "wc", version="1.1.0")
    d.run(at=1.0)
    drain_all(d)
    d.approvals = (approval("wc", "1.1.0"),)
    d.run(at=2.0)
    record = d.record("wc")
    assert (record.phase, record.reason, record.approvals_used) == (Phase.PENDING, "NoNodes", ())
    d.run(at=500.0)
    assert d.record("wc").phase is Phase.PENDING
    heal_all(d)
    d.run(at=501.0)
    record = d.record("wc")
    assert (record.phase, record.kind, record.step) == (Phase.PROGRESSING, StepKind.BATCH, 0)
    assert record.approvals_used == (approval("wc", "1.1.0").commit,)


def test_flapping_nodes_never_carry_a_rolling_rollout_past_its_gate() -> None:
    d = Driver(rolling_before_start())
    d.run()
    d.desired = with_module(rolling_before_start(), "wc", version="1.1.0")
    for i in range(8):
        for node_id in list(d.nodes):
            d.set_status(node_id, NodeStatus.UNHEALTHY if i % 2 == 0 else NodeStatus.HEALTHY)
        d.run(at=10.0 * i, metrics=healthy_metrics("wc", "1.1.0"))
        assert d.record("wc").phase is not Phase.PROMOTED
        assert new_weight(d, "wc", "1.1.0") == 0


def test_gate_on_a_batch_that_never_happens_holds_the_promotion() -> None:
    """One node, batches of one: there is no step 1, yet its gate holds before promoting."""
    desired = with_strategy(example(), "rolling", approval={"gates": [1]})
    d = Driver(desired, nodes=make_nodes(1, ("us-east",)))
    d.run()
    d.desired = with_module(desired, "wc", version="1.1.0")
    d.run(at=1.0)
    assert (d.record("wc").kind, d.record("wc").step) == (StepKind.BATCH, 0)
    d.run(at=100.0, metrics=healthy_metrics("wc", "1.1.0"))
    record = d.record("wc")
    assert (record.phase, record.awaiting) == (Phase.WAITING_APPROVAL, "promotion")
    d.approvals = (approval("wc", "1.1.0"),)
    d.run(at=101.0)
    assert d.record("wc").phase is Phase.PROMOTED


# --- the Fleet's policy holds every rollout --------------------------------------------------------


def test_fleet_policy_holds_a_rollout_whose_strategy_asks_no_approval() -> None:
    desired = with_policy(example(), rollouts=POLICY)
    assert not desired.strategies["canary"].spec.approval.before_start
    d = Driver(desired)
    d.run()
    d.desired = with_module(desired, "greeter", version="1.2.0")
    d.run(at=1.0)
    assert d.record("greeter").phase is Phase.WAITING_APPROVAL
    assert new_weight(d, "greeter", "1.2.0") == 0
    d.approvals = (approval("greeter", "1.2.0"),)
    d.run(at=2.0)
    assert (d.record("greeter").phase, d.record("greeter").percent) == (Phase.PROGRESSING, 10)


def test_fleet_policy_holds_a_module_without_a_strategy_until_approved() -> None:
    desired = with_policy(example(), rollouts=POLICY)
    d = Driver(desired)
    d.run()
    d.desired = with_module(desired, "greeter", version="1.2.0", rollout=None)
    d.run(at=1.0)
    record = d.record("greeter")
    assert (record.phase, record.reason) == (Phase.WAITING_APPROVAL, "AwaitingApproval")
    assert new_weight(d, "greeter", "1.2.0") == 0
    assert new_weight(d, "greeter", "1.1.0") == 100
    d.approvals = (approval("greeter", "1.2.0", "bob", roles=("developer",)),)
    d.run(at=2.0)
    assert d.record("greeter").phase is Phase.WAITING_APPROVAL
    d.approvals = (*d.approvals, approval("greeter", "1.2.0", n=2))
    d.run(at=3.0)
    assert (d.record("greeter").phase, d.record("greeter").reason) == (Phase.PROMOTED, "Replaced")
    assert new_weight(d, "greeter", "1.2.0") == 100


# --- a change of capabilities is a rollout ---------------------------------------------------------


def with_data_dir(desired: DesiredFleet, module: str = "greeter") -> DesiredFleet:
    caps = desired.modules[module].spec.capabilities.model_copy(
        update={"filesystem": [Mount(host="/srv/hotswap/greeter", guest="/data", mode="rw")]}
    )
    return with_module(desired, module, capabilities=caps)


def greeter_hosts(d: Driver) -> set[tuple[str, ...]]:
    """The filesystem grants (host dirs) of every greeter entry the nodes were given."""
    return {
        tuple(m.host for m in e.capabilities.filesystem)
        for n in d.nodes.values()
        for e in n.assigned
        if e.module == "greeter"
    }


def test_capability_change_under_a_policy_waits_for_an_approval_given_after_it() -> None:
    desired = with_policy(example(), rollouts=POLICY)
    d = Driver(desired)
    d.approvals = (approval("greeter", "1.1.0", n=1),)  # given for 1.1.0 as it was
    d.run()
    d.desired = with_data_dir(desired)
    d.run(at=1.0)
    record = d.record("greeter")
    assert (record.phase, record.reason) == (Phase.WAITING_APPROVAL, "AwaitingApproval")
    assert greeter_hosts(d) == {()}  # nothing published yet
    paused, reason = d.condition("greeter", ConditionType.PAUSED)
    message = next(c.message for c in d.last.status["greeter"] if c.type is ConditionType.PAUSED)
    assert (paused, reason) == (True, "AwaitingApproval")
    assert "new capabilities for greeter@1.1.0" in message and "needs 1 more approval" in message
    d.run(at=100.0)
    assert d.record("greeter").phase is Phase.WAITING_APPROVAL
    d.approvals = (*d.approvals, approval("greeter", "1.1.0", n=2))
    d.run(at=101.0)
    record = d.record("greeter")
    assert (record.phase, record.reason) == (Phase.PROMOTED, "SameVersionReplaced")
    assert greeter_hosts(d) == {("/srv/hotswap/greeter",)}


def test_capability_change_is_held_when_the_strategy_asks_for_approvals() -> None:
    desired = with_module(example(), "greeter", rollout="regional")  # regional: beforeStart, no policy
    d = Driver(desired)
    d.run()
    d.desired = with_data_dir(desired)
    d.run(at=1.0)
    assert d.record("greeter").phase is Phase.WAITING_APPROVAL


def test_capability_change_without_any_approval_policy_is_applied_at_once() -> None:
    d = Driver(example())
    d.run()
    d.desired = with_data_dir(example())
    d.run(at=1.0)
    assert (d.record("greeter").phase, d.record("greeter").reason) == (Phase.PROMOTED, "SameVersionReplaced")
    assert greeter_hosts(d) == {("/srv/hotswap/greeter",)}


def test_limits_change_under_a_policy_is_applied_at_once() -> None:
    desired = with_policy(example(), rollouts=POLICY)
    d = Driver(desired)
    d.run()
    limits = desired.modules["greeter"].spec.limits.model_copy(update={"memory_mb": 96})
    d.desired = with_module(desired, "greeter", limits=limits)
    d.run(at=1.0)
    assert (d.record("greeter").phase, d.record("greeter").reason) == (Phase.PROMOTED, "SameVersionReplaced")


def test_capabilities_changed_while_a_new_version_rolls_out_need_a_fresh_approval() -> None:
    desired = with_policy(example(), rollouts=POLICY)
    d = Driver(desired)
    d.run()
    d.desired = with_module(desired, "greeter", version="1.2.0")
    d.approvals = (approval("greeter", "1.2.0", n=1),)
    d.run(at=1.0)
    assert d.record("greeter").percent == 10
    d.desired = with_data_dir(d.desired)
    d.run(at=2.0)
    record = d.record("greeter")
    assert (record.phase, record.target.version) == (Phase.WAITING_APPROVAL, "1.2.0")
    assert new_weight(d, "greeter", "1.2.0") == 0
    d.approvals = (*d.approvals, approval("greeter", "1.2.0", n=2))
    d.run(at=3.0)
    assert (d.record("greeter").phase, d.record("greeter").percent) == (Phase.PROGRESSING, 10)


def test_nodes_joining_later_find_no_new_version_before_approval() -> None:
    d = Driver(rolling_before_start())
    d.run()
    for node_id in list(d.nodes):
        d.remove(node_id)
    d.desired = with_module(rolling_before_start(), "wc", version="1.1.0")
    d.run(at=1.0)
    assert d.record("wc").phase is Phase.PENDING
    for node in make_nodes(2, ("us-east",)):
        d.add(node)
    d.run(at=2.0)
    assert d.record("wc").phase is Phase.WAITING_APPROVAL
    assert new_weight(d, "wc", "1.1.0") == 0


# --- property: no weight and no promotion without approvals, under any node set -------------------

STATUS = {"healthy": NodeStatus.HEALTHY, "unhealthy": NodeStatus.UNHEALTHY, "draining": NodeStatus.DRAINING}
NODE_STATES = st.sampled_from(["healthy", "unhealthy", "draining", "absent"])
ALL_NODES = make_nodes(2)  # two per region; calc runs on every node of every region
NODE_SETS = st.lists(st.lists(NODE_STATES, min_size=len(ALL_NODES), max_size=len(ALL_NODES)), min_size=1, max_size=10)


def gated_fleet(strategy: str, requirement: str) -> DesiredFleet:
    desired = with_strategy(example(), strategy, approval={"before_start": requirement in ("beforeStart", "both")})
    if requirement in ("policy", "both"):
        desired = with_policy(desired, rollouts=POLICY)
    return desired


def set_nodes(d: Driver, states: list[str]) -> None:
    for node, state in zip(ALL_NODES, states, strict=True):
        if state == "absent":
            d.nodes.pop(node.id, None)
        elif node.id in d.nodes:
            d.set_status(node.id, STATUS[state])
        else:
            d.add(dataclasses.replace(node, status=STATUS[state]))


@settings(max_examples=120, deadline=None)
@given(
    strategy=st.sampled_from(["canary", "blue-green", "rolling", "ab-test", "regional"]),
    requirement=st.sampled_from(["beforeStart", "policy", "both"]),
    node_sets=NODE_SETS,
    steps=st.lists(st.sampled_from([0.0, 5.0, 40.0, 700.0]), min_size=10, max_size=10),
    bad=st.booleans(),
)
@hypothesis.example(
    strategy="rolling",
    requirement="beforeStart",
    node_sets=[["healthy"] * 6, ["draining"] * 6],
    steps=[700.0] * 10,
    bad=False,
)
@hypothesis.example(
    strategy="rolling",
    requirement="policy",
    node_sets=[["absent"] * 6, ["healthy"] * 6, ["unhealthy"] * 6],
    steps=[40.0] * 10,
    bad=False,
)
@hypothesis.example(
    strategy="blue-green",
    requirement="policy",
    node_sets=[["healthy", "absent"] * 3, ["draining"] * 6],
    steps=[700.0] * 10,
    bad=True,
)
def test_no_weight_and_no_promotion_without_approval_then_progress_once_approved(
    strategy: str, requirement: str, node_sets: list[list[str]], steps: list[float], bad: bool
) -> None:
    desired = gated_fleet(strategy, requirement)
    d = Driver(desired, nodes=ALL_NODES)
    d.run()
    d.desired = with_module(desired, "calc", version="2.0.0", rollout=strategy)
    errors = 500 if bad else 0
    metrics = healthy_metrics("calc", "1.0.0") + healthy_metrics("calc", "2.0.0", errors=errors)
    for states, seconds in zip(node_sets, steps, strict=False):
        set_nodes(d, states)
        result = d.later(seconds, metrics)
        tables = {e.version for n in d.nodes.values() for e in n.assigned if e.module == "calc"}
        assert "2.0.0" not in tables, (states, d.record("calc"))
        assert d.record("calc").phase is not Phase.PROMOTED
        assert not any(isinstance(a, Promote) for a in result.actions)

    # Approvals arrive (a fresh one every pass, for gates that each need their own), every node is back.
    set_nodes(d, ["healthy"] * len(ALL_NODES))
    good = healthy_metrics("calc", "1.0.0") + healthy_metrics("calc", "2.0.0")
    for i in range(40):
        d.approvals = (*d.approvals, approval("calc", "2.0.0", f"admin{i}", n=i))
        d.later(700.0, good)
        if d.record("calc").phase is Phase.PROMOTED:
            break
    assert d.record("calc").phase is Phase.PROMOTED, d.record("calc")
    assert weight_set(d.weights("calc")) == {(("2.0.0", 100),)}


def test_reverting_a_held_capability_change_leaves_the_running_release_alone() -> None:
    desired = with_policy(example(), rollouts=POLICY)
    d = Driver(desired)
    d.run()
    d.desired = with_data_dir(desired)
    d.run(at=1.0)
    assert d.record("greeter").phase is Phase.WAITING_APPROVAL
    d.desired = desired
    d.run(at=2.0)
    assert d.record("greeter").phase is Phase.SUPERSEDED
    assert greeter_hosts(d) == {()}
    assert d.run(at=3.0).actions == ()
