"""The interface gate as a pure function of the desired fleet, its base and the approvals
(`reconciler.planner.gate`); tests/e2e/test_interface_gate.py runs it through a live control plane."""

from __future__ import annotations

import dataclasses

from reconciler.interfaces import parse_wit_text
from reconciler.planner import ConditionType, Planner, Snapshot, StartRollout, plan
from reconciler.planner.gate import held_back, waiting
from reconciler.spec.fleet import DesiredFleet
from reconciler.spec.models import ApprovalRule

from .driver import ROOT, approval, example, make_nodes, with_module, with_policy

GREETER = (ROOT / "fleet-example/interfaces/greeter.wit").read_text()
HEALTH = "  /// 1 when the module is healthy.\n  health: func() -> s32;\n"


def with_greeter_wit(desired: DesiredFleet, text: str) -> DesiredFleet:
    packages = dict(desired.wit_packages)
    packages["greeter"] = parse_wit_text(text, "greeter.wit")
    return dataclasses.replace(desired, wit_packages=packages)


def test_nothing_waits_without_a_base_or_without_a_change() -> None:
    desired = example()
    assert waiting(desired, None, ()) == {}
    assert waiting(desired, desired, ()) == {}
    added = with_greeter_wit(desired, GREETER.replace("greet: func(", "hello: func() -> s32;\n  greet: func("))
    assert waiting(added, desired, ()) == {}  # an added function breaks no caller


def test_a_breaking_change_without_a_major_bump_can_never_be_approved() -> None:
    base = example()
    broken = with_greeter_wit(base, GREETER.replace(HEALTH, ""))
    waits = waiting(broken, base, (approval("example:greeter", "1.0.0"),))
    assert set(waits) == {"greeter"}
    assert "revert the change or bump the major version" in waits["greeter"]


def test_a_major_bump_waits_for_the_policy_s_approvals() -> None:
    base = example()
    bumped = with_greeter_wit(base, GREETER.replace(HEALTH, "").replace("@1.0.0", "@2.0.0"))
    bumped = with_module(bumped, "greeter", implements="example:greeter/greet@2.0.0")
    waits = waiting(bumped, base, ())
    assert set(waits) == {"greeter"}
    assert "hotswap approve example:greeter" in waits["greeter"]
    # a developer does not count under the default rule (one admin); an admin does
    assert set(waiting(bumped, base, (approval("example:greeter", "2.0.0", roles=("developer",)),))) == {"greeter"}
    assert waiting(bumped, base, (approval("example:greeter", "2.0.0"),)) == {}
    # the policy's own rule: two developers
    two = with_policy(
        bumped, breaking_interface_changes=ApprovalRule.model_validate({"roles": ["developer"], "count": 2})
    )
    devs = tuple(approval("example:greeter", "2.0.0", p, ("developer",), n) for n, p in enumerate(("bob", "carol")))
    assert set(waiting(two, base, devs[:1])) == {"greeter"}
    assert waiting(two, base, devs) == {}


def test_held_back_keeps_waiting_modules_as_at_the_base_and_leaves_new_ones_out() -> None:
    base = example()
    desired = with_module(base, "greeter", version="1.3.0")
    desired = with_module(desired, "calc", version="1.1.0")
    fleet = held_back(desired, base, {"greeter": "waits"})
    assert fleet.modules["greeter"] is base.modules["greeter"]
    assert fleet.modules["calc"] is desired.modules["calc"]  # everything else goes ahead
    assert {k for k in fleet.binaries if k[0] == "greeter"} == {k for k in base.binaries if k[0] == "greeter"}
    new = dataclasses.replace(desired, modules={**desired.modules, "greeter-two": desired.modules["greeter"]})
    assert "greeter-two" not in held_back(new, base, {"greeter-two": "waits"}).modules


def test_the_planner_holds_back_what_waits_and_pauses_it() -> None:
    base = example()
    bumped = with_greeter_wit(base, GREETER.replace(HEALTH, "").replace("@1.0.0", "@2.0.0"))
    bumped = with_module(bumped, "greeter", implements="example:greeter/greet@2.0.0", version="1.3.0")
    bumped = with_module(bumped, "calc", version="1.1.0")
    nodes = make_nodes()
    full = plan(Snapshot(desired=bumped, now=1000.0, nodes=nodes, base=base))
    incremental = Planner()
    kept = incremental.plan(Snapshot(desired=bumped, now=1000.0, nodes=nodes, base=base))
    for result in (full, kept):
        assert set(result.waiting) == {"greeter"}
        paused = [c for c in result.status["greeter"] if c.type is ConditionType.PAUSED]
        assert [c.reason for c in paused] == ["AwaitingInterfaceApproval"]
        started = {a.module: a.to_version for a in result.actions if isinstance(a, StartRollout)}
        # greeter is planned as at the base; the rest goes ahead
        assert started["greeter"] == base.modules["greeter"].spec.version != "1.3.0"
        assert started["calc"] == "1.1.0"
    assert full.actions == kept.actions and full.status == kept.status
    # approved: nothing waits, and greeter's rollout starts
    approved = Snapshot(
        desired=bumped, now=1001.0, nodes=nodes, base=base, approvals=(approval("example:greeter", "2.0.0"),)
    )
    result = Planner().plan(approved)
    assert result.waiting == {}
    assert any(isinstance(a, StartRollout) and (a.module, a.to_version) == ("greeter", "1.3.0") for a in result.actions)
    # without a base (a first start) nothing is compared
    assert plan(Snapshot(desired=bumped, now=1000.0, nodes=nodes)).waiting == {}
