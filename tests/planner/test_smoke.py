"""Smoke checks before any user traffic: a step counts as applied only once every node of it reports
the new release's smoke check passed, the new release gets no weight anywhere before that, and a
failed smoke check rolls the rollout back (or pauses it without autoRollback) in the module's words.

One module per strategy of the example fleet: calc (BlueGreen, whose smoke check the example sets),
greeter (Canary) and wc (Rolling), the last two given a smoke check here."""

from __future__ import annotations

import pytest

from reconciler.planner import AssignmentEntry, Phase, Plan, Rollback, SetAssignment
from reconciler.spec.models import SmokeCall

from .driver import Driver, example, healthy_metrics, with_module, with_strategy

NEW = "9.0.0"
SMOKES = {
    "calc": None,  # the example's own: add [3, 2] must be 5
    "greeter": [SmokeCall(function="greet", args={"name": "smoke"})],
    "wc": [SmokeCall(function="count", args="a b", expect=2)],
}
STRATEGY = {"calc": "blue-green", "greeter": "canary", "wc": "rolling"}
TRAP = "smoke add [3, 2]: trap: wasm trap: wasm `unreachable` instruction executed"


def rolling_out(module: str) -> Driver:
    """A driver whose fleet runs `module` with a smoke check, then asks for its version 9.0.0."""
    desired = example()
    smoke = SMOKES[module]
    if smoke is not None:
        desired = with_module(desired, module, smoke=smoke)
    assert desired.modules[module].spec.smoke
    d = Driver(desired)
    d.run()
    d.desired = with_module(d.desired, module, version=NEW)
    return d


def new_weights(d: Driver, module: str) -> dict[str, int]:
    """node -> the weight its published table gives the new version (nodes that list it)."""
    return {n: w[NEW] for n, w in d.weights(module).items() if NEW in w}


def nodes_with_new(d: Driver, module: str) -> set[str]:
    return set(new_weights(d, module))


@pytest.mark.parametrize("module", ["calc", "greeter", "wc"])
def test_a_step_waits_until_every_node_of_it_reports_the_smoke_check_passed(module: str) -> None:
    d = rolling_out(module)
    d.unsmoked = set(d.nodes)  # every node loads the new version; no smoke outcome yet
    d.run(at=0.0)
    record = d.record(module)
    assert record.phase is Phase.PROGRESSING and record.step == 0, record
    assert nodes_with_new(d, module), "the step's nodes load the new version"
    assert record.applied_at is None  # the step's time has not started
    d.later(3600, healthy_metrics(module, NEW))  # an hour later, still the first step
    record = d.record(module)
    assert (record.step, record.applied_at, record.phase) == (0, None, Phase.PROGRESSING), record
    assert all(w == 0 for w in new_weights(d, module).values()), d.weights(module)
    d.unsmoked.clear()  # the checks pass
    d.later(0.25)
    record = d.record(module)
    assert record.applied_at == d.now and record.step == 0, record


@pytest.mark.parametrize("module", ["greeter", "wc"])
def test_no_node_gives_the_new_version_weight_before_every_node_of_the_step_passed(module: str) -> None:
    d = rolling_out(module)
    d.unsmoked = set(d.nodes)
    d.run(at=0.0)
    waiting = sorted(nodes_with_new(d, module))
    assert waiting
    for node in waiting:  # one node after the other reports its smoke check passed
        assert all(w == 0 for w in new_weights(d, module).values()), (node, d.weights(module))
        d.unsmoked.discard(node)
        d.later(0.25)
    step_weight = {"greeter": 10, "wc": 100}[module]  # the first canary step; the first rolling batch
    assert set(new_weights(d, module).values()) == {step_weight}, d.weights(module)
    assert d.record(module).applied_at == d.now


@pytest.mark.parametrize("module", ["calc", "greeter", "wc"])
def test_a_failed_smoke_check_rolls_the_rollout_back_naming_the_modules_error(module: str) -> None:
    d = rolling_out(module)
    d.unsmoked = set(d.nodes)
    d.run(at=0.0)
    failing = sorted(nodes_with_new(d, module))[0]
    d.unsmoked.clear()
    d.smoke_errors[(failing, NEW)] = TRAP
    result = d.later(0.25)
    record = d.record(module)
    assert (record.phase, record.reason) == (Phase.ROLLED_BACK, "SmokeFailed"), record
    assert failing in record.message and "unreachable" in record.message, record.message
    assert record.history[-1].reason == "SmokeFailed"
    (rollback,) = [a for a in result.actions if isinstance(a, Rollback)]
    assert "unreachable" in rollback.message
    assert nodes_with_new(d, module) == set()  # every node back to the stable version alone
    # No table published on the way gave the new version weight: no user request reached it.
    assert all(e.weight == 0 for _, p in d.passes for e in published(p) if e.version == NEW)


def published(plan: Plan) -> list[AssignmentEntry]:
    return [e for a in plan.actions if isinstance(a, SetAssignment) for e in a.table]


def test_without_auto_rollback_a_failed_smoke_check_pauses_the_rollout() -> None:
    d = rolling_out("greeter")
    d.desired = with_strategy(d.desired, "canary", auto_rollback=False)
    d.unsmoked = set(d.nodes)
    d.run(at=0.0)
    failing = sorted(nodes_with_new(d, "greeter"))[0]
    d.unsmoked.clear()
    d.smoke_errors[(failing, NEW)] = 'smoke greet {}: returned "hi", expected "hello"'
    d.later(0.25)
    record = d.record("greeter")
    assert (record.phase, record.reason) == (Phase.PAUSED, "SmokeFailed"), record
    assert "expected" in record.message and "autoRollback is off" in record.message
    assert all(w == 0 for w in new_weights(d, "greeter").values())  # still no weight anywhere
    d.later(3600)
    assert d.record("greeter").phase is Phase.PAUSED  # a human decides


def test_a_release_without_smoke_calls_does_not_wait_for_smoke_reports() -> None:
    d = Driver(example())
    d.run()
    d.desired = with_module(d.desired, "greeter", version=NEW)
    d.unsmoked = set(d.nodes)  # nodes never report smoke outcomes: nothing to report
    d.run(at=0.0)
    assert set(new_weights(d, "greeter").values()) == {10}
    assert d.record("greeter").applied_at == 0.0
