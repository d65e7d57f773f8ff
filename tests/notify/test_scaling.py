"""Scaling signals fire and clear at the spec's thresholds and durations, driven by a test clock."""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.notify.scaling import Change, NodeSample, ScalingEvaluator, Thresholds, Trigger, to_notification

T0 = 1_800_000_000.0


def region(cpu: float, *, nodes: int = 2, modules: int = 100, name: str = "us-east") -> list[NodeSample]:
    return [NodeSample(f"{name}-{i}", name, cpu, modules) for i in range(nodes)]


def drive(
    ev: ScalingEvaluator, start: float, end: float, samples: Iterable[NodeSample], step: float = 5.0
) -> list[Change]:
    """Heartbeat-like samples every `step` seconds from `start` to `end` (inclusive)."""
    batch = list(samples)
    changes: list[Change] = []
    t = start
    while t <= end:
        changes += ev.evaluate(t, batch)
        t += step
    return changes


def kinds(changes: list[Change]) -> list[tuple[str, str, Trigger]]:
    return [(c.kind, c.signal.region, c.signal.trigger) for c in changes]


def test_high_cpu_fires_after_five_minutes_not_before() -> None:
    ev = ScalingEvaluator()
    assert drive(ev, T0, T0 + 295, region(85)) == []
    [fired] = ev.evaluate(T0 + 300, region(85))
    assert (fired.kind, fired.signal.trigger, fired.signal.direction) == ("fired", Trigger.HIGH_CPU, "up")
    assert fired.signal.since == T0 and fired.signal.value == 85 and fired.signal.nodes == 2
    assert [s.trigger for s in ev.active()] == [Trigger.HIGH_CPU]


def test_the_threshold_is_strictly_above_seventy() -> None:
    ev = ScalingEvaluator()
    assert drive(ev, T0, T0 + 600, region(70)) == []
    assert drive(ev, T0 + 605, T0 + 905, region(70.1))[-1].signal.trigger is Trigger.HIGH_CPU


def test_the_mean_of_the_regions_healthy_nodes_counts() -> None:
    ev = ScalingEvaluator()
    hot = [NodeSample("a", "us-east", 95, 10), NodeSample("b", "us-east", 40, 10)]  # mean 67.5
    assert drive(ev, T0, T0 + 600, hot) == []
    sick = [*hot, NodeSample("c", "us-east", 0, 0, healthy=False)]
    hotter = [NodeSample("a", "us-east", 95, 10), NodeSample("b", "us-east", 50, 10), *sick[2:]]  # 72.5 over healthy
    assert kinds(drive(ev, T0 + 605, T0 + 905, hotter)) == [("fired", "us-east", Trigger.HIGH_CPU)]


def test_a_dip_restarts_the_clock_and_clears_an_active_signal() -> None:
    ev = ScalingEvaluator()
    drive(ev, T0, T0 + 200, region(90))
    assert ev.evaluate(T0 + 205, region(60)) == []  # the dip: 5 minutes start again
    assert drive(ev, T0 + 210, T0 + 505, region(90)) == []
    assert kinds(ev.evaluate(T0 + 510, region(90))) == [("fired", "us-east", Trigger.HIGH_CPU)]
    [cleared] = ev.evaluate(T0 + 515, region(50))
    assert cleared.kind == "cleared" and cleared.signal.value == 50
    assert ev.active() == []


def test_an_active_signal_fires_again_every_duration() -> None:
    ev = ScalingEvaluator()
    changes = drive(ev, T0, T0 + 900, region(80))
    assert [(c.kind, c.at - T0) for c in changes] == [("fired", 300), ("repeated", 600), ("repeated", 900)]


def test_low_cpu_fires_after_fifteen_minutes() -> None:
    ev = ScalingEvaluator()
    assert drive(ev, T0, T0 + 895, region(10, nodes=3)) == []
    [fired] = ev.evaluate(T0 + 900, region(10, nodes=3))
    assert (fired.signal.trigger, fired.signal.direction) == (Trigger.LOW_CPU, "down")
    assert "below 30%" in fired.signal.message and "15 min" in fired.signal.message
    [cleared] = ev.evaluate(T0 + 905, region(30, nodes=3))  # 30 is not below 30
    assert cleared.kind == "cleared"


def test_scale_down_never_empties_a_region() -> None:
    ev = ScalingEvaluator()
    assert drive(ev, T0, T0 + 2000, region(5, nodes=1), step=50) == []
    ev = ScalingEvaluator(Thresholds(min_nodes=2))
    assert drive(ev, T0, T0 + 2000, region(5, nodes=2), step=50) == []
    assert drive(ev, T0, T0 + 900, region(5, nodes=3), step=50)[-1].signal.trigger is Trigger.LOW_CPU


def test_more_than_800_modules_on_a_node_scales_up_at_once() -> None:
    ev = ScalingEvaluator()
    samples = [NodeSample("a", "eu-central", 40, 800), NodeSample("b", "eu-central", 40, 300)]
    assert ev.evaluate(T0, samples) == []
    samples[0] = NodeSample("a", "eu-central", 40, 801)
    [fired] = ev.evaluate(T0 + 5, samples)
    assert (fired.signal.trigger, fired.signal.value, fired.signal.threshold) == (Trigger.MODULE_COUNT, 801, 800)
    assert "node a runs 801 module versions" in fired.signal.message
    assert ev.evaluate(T0 + 10, samples) == []
    assert ev.evaluate(T0 + 305, samples)[0].kind == "repeated"
    samples[0] = NodeSample("a", "eu-central", 40, 700)
    assert kinds(ev.evaluate(T0 + 310, samples)) == [("cleared", "eu-central", Trigger.MODULE_COUNT)]


def test_regions_are_independent_and_a_region_without_nodes_clears() -> None:
    ev = ScalingEvaluator()
    both = region(90, name="us-east") + region(20, name="apac-east", nodes=2)
    changes = drive(ev, T0, T0 + 900, both, step=100)
    assert ("fired", "us-east", Trigger.HIGH_CPU) in kinds(changes)
    assert ("fired", "apac-east", Trigger.LOW_CPU) in kinds(changes)
    gone = ev.evaluate(T0 + 1000, region(90, name="us-east"))
    assert kinds(gone) == [("cleared", "apac-east", Trigger.LOW_CPU)]
    assert "no healthy node" in gone[0].signal.message
    assert [s.region for s in ev.active()] == ["us-east"]


def test_signals_become_notifications_an_autoscaler_can_read() -> None:
    ev = ScalingEvaluator()
    [fired] = drive(ev, T0, T0 + 300, region(75))
    up = to_notification(fired)
    assert (up.type, up.severity.value, up.region, up.reason) == ("scaling.scaleUp", "warning", "us-east", "HighCpu")
    assert up.details["direction"] == "up" and up.details["value"] == 75 and up.details["change"] == "fired"
    assert up.action is not None and "--region us-east" in up.action
    [cleared] = ev.evaluate(T0 + 305, region(20))
    assert to_notification(cleared).type == "scaling.cleared"
    ev = ScalingEvaluator()
    [down] = drive(ev, T0, T0 + 900, region(5, nodes=4), step=100)
    assert to_notification(down).type == "scaling.scaleDown"
    assert to_notification(Change("repeated", down.signal, T0 + 1800)).message.endswith("(still)")
    assert down.signal.to_json()["direction"] == "down"
