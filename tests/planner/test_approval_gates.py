"""Approvals hold, whatever the nodes do: gates before any step or promotion, the Fleet's policy on
every rollout, a change of capabilities held like a new version, and pins and region overrides that
cannot put an unapproved version on a node (issue 16, items 2 and 5)."""

from __future__ import annotations

import dataclasses

import hypothesis
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.planner import ConditionType, NodeStatus, Phase, Promote, StartRollout, StepKind
from reconciler.spec.fleet import DesiredFleet
from reconciler.spec.models import ApprovalRule, ExtraVersion, Mount, Role, Source, VersionOverride

from .driver import (
    Driver,
    approval,
    digest,
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


FIXED_VERSIONS = st.sampled_from(["1.0.0", "2.0.0", "3.0.0"])
UNAPPROVED = {"2.0.0", "3.0.0"}  # 1.0.0 runs at the start; 2.0.0 is approved at the end, 3.0.0 never


def with_extra_versions(desired: DesiredFleet, module: str, *versions: str) -> DesiredFleet:
    """`module` may also serve `versions` (listed under `versions:` with a registry digest)."""
    spec = desired.modules[module].spec
    extra = [
        *spec.versions,
        *(ExtraVersion(version=v, source=Source(digest=digest(f"{module}-{v}"))) for v in versions),
    ]
    return with_module(desired, module, versions=extra)


def with_fixed(desired: DesiredFleet, module: str, pins: dict[str, str], overrides: dict[str, str]) -> DesiredFleet:
    fixed = [VersionOverride(regions=[region], version=v) for region, v in overrides.items()]
    return with_module(desired, module, placement={"pins": pins, "version_overrides": fixed})


def unapproved_live(d: Driver, module: str, versions: set[str]) -> set[tuple[str, str]]:
    """(node, version) of every published entry of `versions` with weight > 0."""
    return {
        (n.id, e.version)
        for n in d.nodes.values()
        for e in n.assigned
        if e.module == module and e.version in versions
        if e.weight > 0
    }


@settings(max_examples=120, deadline=None)
@given(
    strategy=st.sampled_from(["canary", "blue-green", "rolling", "ab-test", "regional"]),
    requirement=st.sampled_from(["beforeStart", "policy", "both"]),
    node_sets=NODE_SETS,
    steps=st.lists(st.sampled_from([0.0, 5.0, 40.0, 700.0]), min_size=10, max_size=10),
    bad=st.booleans(),
    pins=st.dictionaries(st.sampled_from(["us-east-0", "eu-central-1"]), FIXED_VERSIONS),
    overrides=st.dictionaries(st.just("apac-east"), FIXED_VERSIONS),
    fixed_from_start=st.booleans(),
)
@hypothesis.example(
    strategy="rolling",
    requirement="beforeStart",
    node_sets=[["healthy"] * 6, ["draining"] * 6],
    steps=[700.0] * 10,
    bad=False,
    pins={},
    overrides={},
    fixed_from_start=False,
)
@hypothesis.example(
    strategy="rolling",
    requirement="policy",
    node_sets=[["absent"] * 6, ["healthy"] * 6, ["unhealthy"] * 6],
    steps=[40.0] * 10,
    bad=False,
    pins={},
    overrides={},
    fixed_from_start=False,
)
@hypothesis.example(
    strategy="blue-green",
    requirement="policy",
    node_sets=[["healthy", "absent"] * 3, ["draining"] * 6],
    steps=[700.0] * 10,
    bad=True,
    pins={},
    overrides={},
    fixed_from_start=False,
)
@hypothesis.example(
    strategy="canary",
    requirement="policy",
    node_sets=[["healthy"] * 6],
    steps=[40.0] * 10,
    bad=False,
    pins={"us-east-0": "3.0.0", "eu-central-1": "2.0.0"},
    overrides={"apac-east": "2.0.0"},
    fixed_from_start=True,
)
def test_no_weight_and_no_promotion_without_approval_then_progress_once_approved(
    strategy: str,
    requirement: str,
    node_sets: list[list[str]],
    steps: list[float],
    bad: bool,
    pins: dict[str, str],
    overrides: dict[str, str],
    fixed_from_start: bool,
) -> None:
    """Pins and region overrides to versions listed under `versions:` are generated too: none of
    them ever gives an unapproved version weight, before or after the rollout's own approvals."""
    desired = with_extra_versions(gated_fleet(strategy, requirement), "calc", "2.0.0", "3.0.0")
    desired = with_module(desired, "calc", rollout=strategy)  # approvals asked from the start
    d = Driver(with_fixed(desired, "calc", pins, overrides) if fixed_from_start else desired, nodes=ALL_NODES)
    d.run()
    d.desired = with_fixed(with_module(desired, "calc", version="2.0.0", rollout=strategy), "calc", pins, overrides)
    errors = 500 if bad else 0
    metrics = healthy_metrics("calc", "1.0.0") + healthy_metrics("calc", "2.0.0", errors=errors)
    for states, seconds in zip(node_sets, steps, strict=False):
        set_nodes(d, states)
        result = d.later(seconds, metrics)
        tables = {e.version for n in d.nodes.values() for e in n.assigned if e.module == "calc"}
        assert not tables & UNAPPROVED, (states, d.record("calc"))
        assert d.record("calc").phase is not Phase.PROMOTED
        assert not any(isinstance(a, Promote) for a in result.actions)

    # Approvals arrive (a fresh one every pass, for gates that each need their own), every node is back.
    set_nodes(d, ["healthy"] * len(ALL_NODES))
    good = healthy_metrics("calc", "1.0.0") + healthy_metrics("calc", "2.0.0")
    for i in range(40):
        d.approvals = (*d.approvals, approval("calc", "2.0.0", f"admin{i}", n=i))
        d.later(700.0, good)
        assert not unapproved_live(d, "calc", {"3.0.0"}), d.weights("calc")
        if d.record("calc").phase is Phase.PROMOTED:
            break
    assert d.record("calc").phase is Phase.PROMOTED, d.record("calc")
    fixed_nodes = {n: v for n, v in pins.items()} | {
        n.id: v for region, v in overrides.items() for n in ALL_NODES if n.region == region
    }
    weights = d.weights("calc")
    rolled = {n: w for n, w in weights.items() if n not in fixed_nodes}
    assert weight_set(rolled) == {(("2.0.0", 100),)}
    for node_id, version in fixed_nodes.items():
        if version == "3.0.0":  # held: the node keeps the one approved version it ran
            assert list(weights[node_id].values()) == [100] and set(weights[node_id]) < {"1.0.0", "2.0.0"}
        else:
            assert weights[node_id] == {version: 100}, (node_id, version, weights)
    paused = next(c for c in d.last.status["calc"] if c.type is ConditionType.PAUSED)
    assert paused.status == ("3.0.0" in fixed_nodes.values()), paused
    if paused.status:
        assert paused.reason == "AwaitingApproval" and "calc@3.0.0 needs 1 more approval(s)" in paused.message


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


# --- pins and region overrides cannot skip an approval -------------------------------------------


def greeter_with(desired: DesiredFleet, **placement: object) -> DesiredFleet:
    """greeter (running 1.1.0) may also serve 1.2.0 and 1.3.0, with `placement` fields replaced."""
    return with_module(with_extra_versions(desired, "greeter", "1.2.0", "1.3.0"), "greeter", placement=placement)


def paused_message(d: Driver, module: str) -> tuple[bool, str, str]:
    c = next(c for c in d.last.status[module] if c.type is ConditionType.PAUSED)
    return c.status, c.reason, c.message


def test_pin_to_a_new_version_waits_for_approval_under_a_policy_then_runs() -> None:
    desired = with_policy(example(), rollouts=POLICY)
    d = Driver(greeter_with(example()))
    d.run()  # greeter runs 1.1.0, and 1.0.0 in apac-east, before the policy
    d.desired = greeter_with(desired, pins={"us-east-0": "1.2.0"})
    d.run(at=1.0)
    assert d.weights("greeter")["us-east-0"] == {"1.1.0": 100}  # the node keeps what it ran
    paused, reason, message = paused_message(d, "greeter")
    assert (paused, reason) == (True, "AwaitingApproval")
    assert "pin to 1.2.0 on us-east-0 waits for approval: greeter@1.2.0 needs 1 more approval(s) from 1 of [admin]" in (
        message
    )
    assert d.record("greeter").phase is Phase.PROMOTED  # no rollout record is made for a pin
    d.approvals = (approval("greeter", "1.2.0", "bob", roles=("developer",)),)
    d.run(at=2.0)
    assert d.weights("greeter")["us-east-0"] == {"1.1.0": 100}  # a developer cannot approve
    d.approvals = (*d.approvals, approval("greeter", "1.2.0", n=2))
    d.run(at=3.0)
    assert d.weights("greeter")["us-east-0"] == {"1.2.0": 100}
    assert paused_message(d, "greeter")[0] is False


def test_a_fleet_that_starts_under_a_policy_needs_approvals_for_its_overrides() -> None:
    d = Driver(with_policy(example(), rollouts=POLICY))
    d.run()
    apac = {n: w for n, w in d.weights("greeter").items() if n.startswith("apac")}
    assert apac and weight_set(apac) == {(("1.1.0", 100),)}  # the deployed version, not the override
    assert "override to 1.0.0 in apac-east waits for approval: greeter@1.0.0" in paused_message(d, "greeter")[2]
    d.approvals = (approval("greeter", "1.0.0"),)
    d.run(at=1.0)
    apac = {n: w for n, w in d.weights("greeter").items() if n.startswith("apac")}
    assert weight_set(apac) == {(("1.0.0", 100),)}
    assert paused_message(d, "greeter")[0] is False


def test_override_to_a_new_version_waits_when_the_strategy_asks_for_approval() -> None:
    desired = with_module(example(), "greeter", rollout="regional")  # beforeStart, no Fleet policy
    d = Driver(greeter_with(example()))
    d.run()  # apac-east runs its override, 1.0.0, under canary (no approvals asked)
    apac = {n for n in d.holders("greeter") if n.startswith("apac")}
    d.desired = greeter_with(desired, version_overrides=[VersionOverride(regions=["apac-east"], version="1.3.0")])
    d.run(at=1.0)
    assert {n: d.weights("greeter")[n] for n in apac} == {n: {"1.0.0": 100} for n in apac}
    assert "override to 1.3.0 in apac-east waits for approval: greeter@1.3.0" in paused_message(d, "greeter")[2]
    d.approvals = (approval("greeter", "1.3.0"),)
    d.run(at=2.0)
    assert {n: d.weights("greeter")[n] for n in apac} == {n: {"1.3.0": 100} for n in apac}


def test_pins_and_overrides_apply_at_once_without_any_approval_demand() -> None:
    d = Driver(greeter_with(example()))
    d.run()
    d.desired = greeter_with(example(), pins={"us-east-0": "1.2.0"})
    d.run(at=1.0)
    assert d.weights("greeter")["us-east-0"] == {"1.2.0": 100}
    assert paused_message(d, "greeter")[0] is False


def test_a_pin_that_ran_before_the_policy_stays_and_a_held_one_keeps_the_earlier_pin() -> None:
    d = Driver(greeter_with(example(), pins={"us-east-0": "1.2.0"}))
    d.run()
    assert d.weights("greeter")["us-east-0"] == {"1.2.0": 100}
    policy = with_policy(example(), rollouts=POLICY)
    d.desired = greeter_with(policy, pins={"us-east-0": "1.2.0"})
    d.run(at=1.0)
    assert d.weights("greeter")["us-east-0"] == {"1.2.0": 100}
    assert paused_message(d, "greeter")[0] is False
    d.desired = greeter_with(policy, pins={"us-east-0": "1.3.0"})
    d.run(at=2.0)
    assert d.weights("greeter")["us-east-0"] == {"1.2.0": 100}
    assert "greeter@1.3.0 needs 1 more approval(s)" in paused_message(d, "greeter")[2]


def test_a_pin_to_a_release_that_was_stable_needs_no_new_approval() -> None:
    desired = with_policy(example(), rollouts=POLICY)
    d = Driver(greeter_with(desired))
    d.run()
    d.desired = with_module(greeter_with(desired), "greeter", version="1.2.0", rollout=None)
    d.approvals = (approval("greeter", "1.2.0"),)
    d.run(at=1.0)
    assert d.record("greeter").phase is Phase.PROMOTED
    d.approvals = ()  # even if the approval were gone: 1.1.0 ran as the stable release
    d.desired = with_module(
        greeter_with(desired, pins={"us-east-0": "1.1.0"}), "greeter", version="1.2.0", rollout=None
    )
    d.run(at=2.0)
    assert d.weights("greeter")["us-east-0"] == {"1.1.0": 100}


def test_a_pin_to_a_rolled_out_version_that_was_never_approved_stays_held_on_the_node() -> None:
    """A Rolling batch put 1.2.0 alone on a node before a later gate; pinning it there is still held."""
    desired = with_strategy(greeter_with(example()), "rolling", approval={"gates": [1]})
    d = Driver(desired, nodes=make_nodes(2, ("us-east",)))
    d.run()
    d.desired = with_module(desired, "greeter", version="1.2.0", rollout="rolling")
    d.run(at=1.0)
    first = next(n for n, w in d.weights("greeter").items() if w == {"1.2.0": 100})
    d.desired = with_module(greeter_with(desired, pins={first: "1.2.0"}), "greeter", version="1.2.0", rollout="rolling")
    d.run(at=2.0)
    assert d.weights("greeter")[first] == {"1.1.0": 100}
    assert "pin to 1.2.0 on" in paused_message(d, "greeter")[2]


# --- what a started rollout says it does ---------------------------------------------------------


def started(d: Driver) -> str:
    return next(a for a in d.last.actions if isinstance(a, StartRollout)).describe()


def test_start_says_a_held_change_waits_for_approval_instead_of_at_once() -> None:
    desired = with_policy(example(), rollouts=POLICY)
    d = Driver(desired)
    d.run()
    d.desired = with_data_dir(desired)
    d.run(at=1.0)
    assert started(d) == "1.1.0 with new capabilities, applied once approved (1 of [admin])"
    d.desired = with_module(desired, "greeter", version="1.2.0", rollout=None)
    d.run(at=2.0)
    assert started(d) == "1.1.0 -> 1.2.0 replaced (no rollout strategy) applied once approved (1 of [admin])"
    d.desired = with_module(desired, "greeter", version="1.3.0")
    d.run(at=3.0)
    assert started(d) == "1.1.0 -> 1.3.0 by canary once approved (1 of [admin])"


def test_start_says_at_once_only_for_what_is_applied_at_once() -> None:
    d = Driver(example())
    d.run()
    assert started(d) == "nothing -> 1.0.0 at once (nothing ran before)"
    d.desired = with_module(example(), "greeter", version="1.2.0")
    d.run(at=1.0)
    assert started(d) == "1.1.0 -> 1.2.0 by canary"


def test_a_change_that_keeps_the_version_says_what_changes_not_a_move_to_the_same_version() -> None:
    d = Driver(example())
    d.run()
    limits = example().modules["greeter"].spec.limits.model_copy(update={"memory_mb": 96})
    d.desired = with_module(example(), "greeter", limits=limits)
    d.run(at=1.0)
    assert started(d) == "1.1.0 with new limits, applied at once"
    assert d.record("greeter").message == "1.1.0: new limits applied at once"
    # A module without a strategy: the same replacement, not "1.1.0 replaced by 1.1.0".
    d.desired = with_module(example(), "greeter", rollout=None, limits=limits, argv=["greeter", "-v"])
    d.run(at=2.0)
    assert started(d) == "1.1.0 with new argv, applied at once"
    assert (d.record("greeter").reason, d.record("greeter").message) == (
        "SameVersionReplaced",
        "1.1.0: new argv applied at once",
    )
