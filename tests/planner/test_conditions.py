"""Conditions per module: which of Ready, Progressing, Paused, Degraded, Stalled hold, and why."""

from __future__ import annotations

import dataclasses

import pytest

from reconciler.planner import Condition, ConditionType, Phase, Release, RolloutRecord, module_conditions
from reconciler.planner.conditions import ModuleView
from reconciler.spec.models import Capabilities, Limits

from .driver import Driver, digest, example, with_module

OLD = Release("1.0.0", digest("old"), Limits(), Capabilities())
NEW = Release("1.1.0", digest("new"), Limits(), Capabilities())


def record(phase: Phase, reason: str = "", **kw: object) -> RolloutRecord:
    base = RolloutRecord("m-r2", "m", 2, OLD, NEW, "canary", None, phase, 0.0, reason=reason, message="msg")
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def holding(conditions: tuple[Condition, ...]) -> dict[str, str]:
    return {c.type.value: c.reason for c in conditions if c.status}


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        (ModuleView("m", "1.1.0", record(Phase.PROMOTED, "Promoted"), 4), {"Ready": "Deployed"}),
        (
            ModuleView("m", "1.1.0", record(Phase.PROGRESSING, "StepStarted"), 4),
            {"Progressing": "StepStarted"},
        ),
        (
            ModuleView("m", "1.1.0", record(Phase.PAUSED, "NoTraffic"), 4),
            {"Progressing": "NoTraffic", "Paused": "NoTraffic"},
        ),
        (
            ModuleView("m", "1.1.0", record(Phase.WAITING_APPROVAL, "AwaitingApproval"), 4),
            {"Progressing": "AwaitingApproval", "Paused": "AwaitingApproval"},
        ),
        (
            ModuleView("m", "1.1.0", record(Phase.PAUSED, "AnalysisFailed"), 4),
            {"Progressing": "AnalysisFailed", "Paused": "AnalysisFailed", "Degraded": "AnalysisFailed"}
            | {"Stalled": "AnalysisFailed"},
        ),
        (
            ModuleView("m", "1.1.0", record(Phase.ROLLED_BACK, "ErrorRateTooHigh"), 4),
            {"Degraded": "ErrorRateTooHigh", "Stalled": "ErrorRateTooHigh"},
        ),
        (
            ModuleView("m", "1.1.0", record(Phase.PROGRESSING, "StepStarted", held=True), 4),
            {"Paused": "ManualPause"},
        ),
        (
            ModuleView("m", "1.1.0", record(Phase.PROMOTED, "Promoted"), 3, {"eu-central": 1}),
            {"Degraded": "InsufficientNodes"},
        ),
        (ModuleView("m", "1.1.0", record(Phase.PROMOTED, "Promoted"), 0), {}),
        (
            ModuleView("m", "1.2.0", record(Phase.PROMOTED, "Promoted"), 4, missing_binary="no binary"),
            {"Stalled": "MissingBinary"},
        ),
    ],
)
def test_conditions_that_hold(view: ModuleView, expected: dict[str, str]) -> None:
    conditions = module_conditions(view)
    assert [c.type for c in conditions] == list(ConditionType)
    assert holding(conditions) == expected
    assert all(c.reason and c.message for c in conditions)


def test_ready_false_says_why() -> None:
    cases = {
        "NoNodes": ModuleView("m", "1.1.0", record(Phase.PROMOTED), 0),
        "RolloutInProgress": ModuleView("m", "1.1.0", record(Phase.PROGRESSING), 4),
        "RolledBack": ModuleView("m", "1.1.0", record(Phase.ROLLED_BACK), 4),
        "MissingBinary": ModuleView("m", "1.1.0", None, 0, missing_binary="gone"),
    }
    for reason, view in cases.items():
        ready = module_conditions(view)[0]
        assert (ready.type, ready.status, ready.reason) == (ConditionType.READY, False, reason)


def test_module_without_a_binary_is_stalled_and_keeps_its_stable_version() -> None:
    from reconciler.spec.models import Source

    d = Driver(example())
    d.run()
    missing = with_module(example(), "greeter", version="1.2.0", source=Source(path="../wasm/none.wat"))
    d.desired = missing
    result = d.run(at=10.0)
    assert result.records == () and result.actions == ()
    assert d.condition("greeter", ConditionType.STALLED) == (True, "MissingBinary")
    assert d.condition("greeter", ConditionType.READY) == (False, "MissingBinary")
    assert {v for w in d.weights("greeter").values() for v in w} == {"1.1.0", "1.0.0"}


def test_status_is_reported_for_every_module_every_pass() -> None:
    d = Driver(example())
    d.run()
    again = d.run(at=1.0)
    assert set(again.status) == {"calc", "greeter", "wc", "hello"}
    assert all(c[0].status for c in again.status.values())
