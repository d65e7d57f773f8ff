"""Controller events become notifications with a stable type, a severity and something to do."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from typing import Any

import pytest

from reconciler.apply.executor import Event
from reconciler.notify.events import Notification, classify, from_controller
from reconciler.planner import Phase, Release, RolloutRecord, StepResult
from reconciler.planner.types import StepKind
from reconciler.spec.alerts import EVENT_TYPES, Severity
from reconciler.spec.models import Capabilities, Limits

NOW = 1_800_000_000.0


def release(version: str) -> Release:
    return Release(version, "sha256:" + version.replace(".", "") * 16, Limits(), Capabilities())


def record(phase: Phase = Phase.PROGRESSING, **changes: Any) -> RolloutRecord:
    base = RolloutRecord(
        "greeter-r2",
        "greeter",
        2,
        release("1.1.0"),
        release("1.2.0"),
        "canary",
        None,
        phase,
        NOW - 100,
        step_started_at=NOW,
    )
    return replace(base, **changes)


def passed(step: int, at: float) -> StepResult:
    return StepResult(step, StepKind.WEIGHT, None, at, "Passed", "AnalysisPassed", "ok", 120, 0.0, 5.0)


def approved(step: int, at: float) -> StepResult:
    return StepResult(step, StepKind.WEIGHT, None, at, "Approved", "Approved", "approved by alice")


@pytest.mark.parametrize(
    ("reason", "rec", "kind", "severity"),
    [
        ("RolloutStarted", record(), "rollout.started", Severity.INFO),
        ("StepStarted", record(step=0), "rollout.stepStarted", Severity.INFO),
        ("StepStarted", record(step=1, history=(passed(0, NOW),)), "rollout.stepPassed", Severity.INFO),
        (
            "StepStarted",
            record(step=1, history=(passed(0, NOW), approved(1, NOW))),
            "rollout.stepPassed",
            Severity.INFO,
        ),
        (
            "StepStarted",
            record(step=1, history=(passed(0, NOW - 50), approved(1, NOW))),
            "rollout.approved",
            Severity.INFO,
        ),
        ("StepStarted", record(step=1, history=(passed(0, NOW - 50),)), "rollout.stepStarted", Severity.INFO),
        ("StepStarted", None, "rollout.stepStarted", Severity.INFO),
        ("AwaitingApproval", record(Phase.WAITING_APPROVAL), "rollout.awaitingApproval", Severity.WARNING),
        ("AwaitingInterfaceApproval", None, "rollout.awaitingApproval", Severity.WARNING),
        ("WinnerApproved", record(), "rollout.approved", Severity.INFO),
        ("NoTraffic", record(Phase.PAUSED), "rollout.paused", Severity.WARNING),
        ("BaselineDegraded", record(Phase.PAUSED), "rollout.paused", Severity.WARNING),
        ("NoNodes", record(Phase.PENDING), "rollout.paused", Severity.WARNING),
        ("AnalysisFailed", record(Phase.PAUSED), "rollout.degraded", Severity.ERROR),
        ("RolledBack", record(Phase.ROLLED_BACK, reason="ErrorRateTooHigh"), "rollout.rolledBack", Severity.ERROR),
        ("RolledBack", record(Phase.ROLLED_BACK, reason="ManualRollback"), "rollout.rolledBack", Severity.WARNING),
        ("RolledBack", record(Phase.ABORTED, reason="Aborted"), "rollout.rolledBack", Severity.WARNING),
        ("Promoted", record(Phase.PROMOTED), "rollout.promoted", Severity.INFO),
        ("Superseded", record(Phase.SUPERSEDED), "rollout.superseded", Severity.INFO),
        ("ImmutableVersion", None, "source.stalled", Severity.ERROR),
        ("MissingBinary", None, "source.stalled", Severity.ERROR),
        ("SomethingNew", None, "rollout.event", Severity.INFO),
    ],
)
def test_reasons_map_to_stable_types(reason: str, rec: RolloutRecord | None, kind: str, severity: Severity) -> None:
    got_kind, got_severity, _ = classify(reason, False, rec)
    assert (got_kind, got_severity) == (kind, severity)
    assert got_kind in EVENT_TYPES


def test_an_unknown_warning_stays_a_warning() -> None:
    assert classify("SomethingNew", True, None)[:2] == ("rollout.event", Severity.WARNING)


def notify(reason: str, rec: RolloutRecord | None, **kw: Any) -> Notification:
    event = Event(NOW, reason, kw.pop("message", "greeter: something"), "greeter", rec.id if rec else None)
    return from_controller(
        event,
        record=rec,
        revision="a" * 40,
        **kw,
    )


def test_awaiting_approval_says_which_command_approves() -> None:
    n = notify("AwaitingApproval", record(Phase.WAITING_APPROVAL, awaiting="gate"), base_url="http://cp:8080")
    assert n.action == "hotswap approve greeter@1.2.0"
    assert (n.version, n.previous_version, n.deployment) == ("1.2.0", "1.1.0", "greeter-r2")
    assert n.link == "http://cp:8080/api/v1/wasm/deployments/greeter-r2"
    assert n.details["awaiting"] == "gate" and n.details["strategy"] == "canary"
    assert n.subject == "[hotswap warning] rollout.awaitingApproval greeter@1.2.0"


def test_step_passed_carries_the_analysis_of_the_step_that_passed() -> None:
    n = notify("StepStarted", record(step=1, percent=50, history=(passed(0, NOW),)))
    assert n.type == "rollout.stepPassed"
    assert n.details["passedStep"] == 0 and n.details["requests"] == 120 and n.details["percent"] == 50


@pytest.mark.parametrize(
    ("reason", "rec", "needle"),
    [
        ("RolledBack", record(Phase.ROLLED_BACK, reason="ErrorRateTooHigh"), "greeter stays on 1.1.0"),
        ("AnalysisFailed", record(Phase.PAUSED), "set greeter back to 1.1.0"),
        ("NoTraffic", record(Phase.PAUSED), "onNoTraffic: proceed"),
        ("NoNodes", record(Phase.PENDING), "hotswap edge"),
        ("ImmutableVersion", None, "new version"),
        ("MissingBinary", None, "POST /api/v1/wasm/modules"),
    ],
)
def test_problems_come_with_an_action(reason: str, rec: RolloutRecord | None, needle: str) -> None:
    action = notify(reason, rec).action
    assert action is not None and needle in action


def test_wire_json_and_text() -> None:
    n = notify("Promoted", record(Phase.PROMOTED), message="greeter: 1.2.0 is stable")
    wire = n.to_json()
    assert wire["type"] == "rollout.promoted" and wire["severity"] == "info"
    assert wire["deploymentId"] == "greeter-r2" and wire["revision"] == "a" * 40
    assert wire["at"].endswith("Z") and wire["details"]["phase"] == "Promoted"
    text = n.text()
    assert text.startswith("greeter: 1.2.0 is stable") and "revision: " + "a" * 40 in text


def test_subject_names_a_node_or_region_when_there_is_no_module() -> None:
    n = Notification("node.unhealthy", Severity.ERROR, "NodeUnhealthy", "down", NOW, node="edge-1")
    assert n.subject == "[hotswap error] node.unhealthy edge-1"
    n = Notification("source.stalled", Severity.ERROR, "InvalidFleet", "bad", NOW, revision="b" * 40)
    assert n.subject.endswith("source.stalled " + "b" * 12)


def test_a_module_event_without_a_rollout_names_the_version_git_asks_for() -> None:
    n = from_controller(
        Event(
            NOW,
            "AwaitingInterfaceApproval",
            "greeter: a breaking change of example:greeter needs approval",
            "greeter",
            warning=True,
        ),
        record=None,
        revision=None,
        desired_version="2.0.0",
    )
    assert (n.type, n.version, n.action) == ("rollout.awaitingApproval", "2.0.0", "hotswap approve greeter@2.0.0")
    assert n.details == {"awaiting": "interface"} and n.link is None


def test_notification_ids_are_unique_within_a_process_and_across_processes() -> None:
    down = [Notification("node.unhealthy", Severity.ERROR, "NodeUnhealthy", "down", NOW, node="n") for _ in range(1000)]
    ids = [n.id for n in down]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    code = "from reconciler.notify.events import _new_id; print(_new_id())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert len(other) == 32 and other[:16] != ids[0][:16]  # another process, another prefix
