"""Watchers report changes of polled state once: source stalls, node health and capacity."""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.gitsource.status import Failure, Reason, SourceStatus, conditions
from reconciler.notify.watch import NodeWatcher, SourceWatcher
from reconciler.planner import Condition as PlannerCondition
from reconciler.planner import ConditionType

NOW = 1_800_000_000.0


def source(failure: Failure | None, applied: str | None = "a" * 40, observed: str | None = "b" * 40) -> SourceStatus:
    return SourceStatus("file:///fleet", "main", "", observed, applied, True, conditions("main", applied, failure))


UNVERIFIED = Failure(Reason.UNVERIFIED_COMMIT, "commit bbbbbbb is not signed by a trusted key", "b" * 40)
INVALID = Failure(Reason.INVALID_FLEET, "modules/greeter.yaml:7: spec.version: '1.2' is not semver")


def test_a_stall_is_reported_once_and_its_end_too() -> None:
    w = SourceWatcher()
    assert w.observe(NOW, source(None)) == []
    [stalled] = w.observe(NOW + 1, source(UNVERIFIED))
    assert stalled.type == "source.stalled" and stalled.reason == "UnverifiedCommit"
    assert stalled.revision == "b" * 40 and "not signed" in stalled.message
    assert stalled.action is not None and "sign the commit" in stalled.action
    assert w.observe(NOW + 2, source(UNVERIFIED)) == []
    [other] = w.observe(NOW + 3, source(INVALID))
    assert other.reason == "InvalidFleet" and "hotswap validate" in (other.action or "")
    [recovered] = w.observe(NOW + 4, source(None, applied="c" * 40))
    assert recovered.type == "source.recovered" and recovered.revision == "c" * 40
    assert recovered.details["previousReason"] == "InvalidFleet"


def test_a_fetch_failure_is_not_a_stall() -> None:
    w = SourceWatcher()
    assert w.observe(NOW, source(Failure(Reason.FETCH_FAILED, "connection refused"))) == []


def test_the_controllers_stall_clearing_is_reported() -> None:
    w = SourceWatcher()
    stall = PlannerCondition(ConditionType.STALLED, True, "MissingBinary", "greeter@1.2.0: no binary")
    assert w.observe(NOW, None, stall) == []  # the stall itself comes as a controller event
    [recovered] = w.observe(NOW + 1, None, None)
    assert recovered.type == "source.recovered" and "MissingBinary" in recovered.message


@dataclass(frozen=True)
class View:
    id: str
    region: str = "us-east"
    status: str = "Healthy"
    max_modules: int = 3
    running: tuple[tuple[str, str, str, int], ...] = ()
    last_heartbeat: float | None = NOW
    cpu_percent: float = 0.0


def modules(n: int) -> tuple[tuple[str, str, str, int], ...]:
    return tuple((f"m{i}", "1.0.0", "sha256:x", 100) for i in range(n))


def test_node_health_flips_are_reported_after_the_grace_period() -> None:
    w = NodeWatcher(grace_seconds=10)
    assert w.observe(NOW, [View("a", status="Unhealthy"), View("b")]) == []
    assert w.observe(NOW + 5, [View("a"), View("b")]) == []  # still in the grace period: taken as the start
    [down] = w.observe(NOW + 20, [View("a"), View("b", status="Unhealthy", last_heartbeat=NOW + 5)])
    assert (down.type, down.node, down.region) == ("node.unhealthy", "b", "us-east")
    assert "15s ago" in down.message and down.action == "check the edge process on b"
    assert w.observe(NOW + 21, [View("a"), View("b", status="Unhealthy")]) == []
    [up] = w.observe(NOW + 22, [View("a"), View("b")])
    assert up.type == "node.recovered" and up.severity.value == "info"


def test_a_new_node_that_never_spoke_is_unhealthy_and_draining_is_not_news() -> None:
    w = NodeWatcher(grace_seconds=0)
    w.observe(NOW, [])
    [down] = w.observe(NOW + 1, [View("c", status="Unhealthy", last_heartbeat=None)])
    assert "last never" in down.message
    assert w.observe(NOW + 2, [View("c", status="Draining")]) == []


def test_a_full_node_reaches_capacity_once_until_it_has_room_again() -> None:
    w = NodeWatcher(grace_seconds=0)
    assert w.observe(NOW, [View("a", running=modules(2))]) == []
    [full] = w.observe(NOW + 1, [View("a", running=modules(3))])
    assert full.type == "capacity.reached" and full.details == {"modules": 3, "maxModules": 3}
    assert w.observe(NOW + 2, [View("a", running=modules(3))]) == []
    assert w.observe(NOW + 3, [View("a", running=modules(1))]) == []
    assert len(w.observe(NOW + 4, [View("a", running=modules(3))])) == 1


def test_a_removed_node_is_forgotten() -> None:
    w = NodeWatcher(grace_seconds=0)
    w.observe(NOW, [View("a")])
    assert w.observe(NOW + 1, []) == []
    assert w.observe(NOW + 2, [View("a", status="Unhealthy")])[0].type == "node.unhealthy"
