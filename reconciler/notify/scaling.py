"""Scaling signals: the spec's auto-scaling triggers, evaluated per region from node heartbeats.

Where it sits: every notifier tick samples the node hub (each node's region, health, the CPU share
of its last heartbeat and how many module versions it runs) and hands the samples to
`ScalingEvaluator.evaluate(now, samples)`, a pure evaluation with the time passed in (tests drive it
with a test clock). It returns what changed; the notifier turns changes into `scaling.*` events,
which an Alert can deliver to an external autoscaler's webhook (a cloud instance group, a
Kubernetes operator). hotswap never starts or stops machines itself.

Triggers (spec "Auto-Scaling Triggers"), per region, over its healthy nodes:

- `HighCpu`: mean CPU above 70 % without a break for 5 minutes -> scale up;
- `ModuleCount`: a node runs more than 800 module versions -> scale up, at once;
- `LowCpu`: mean CPU below 30 % without a break for 15 minutes -> scale down, only while the
  region has more than `min_nodes` healthy nodes (scaling must never empty a region).

A condition that stops holding clears its signal at once, and its clock starts again the next time
it holds. While a signal stays active it fires again every trigger duration (5 or 15 minutes), so
an autoscaler that added one node and still sees the signal adds another.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Literal

from reconciler.notify.events import Notification, iso
from reconciler.spec.alerts import Severity

__all__ = ["Change", "NodeSample", "ScalingEvaluator", "Signal", "Thresholds", "Trigger", "to_notification"]


@dataclass(frozen=True)
class NodeSample:
    """One node as the last heartbeat showed it."""

    node: str
    region: str
    cpu_percent: float
    modules: int
    healthy: bool = True


@dataclass(frozen=True)
class Thresholds:
    scale_up_cpu: float = 70.0
    scale_up_seconds: float = 300.0
    scale_down_cpu: float = 30.0
    scale_down_seconds: float = 900.0
    max_modules_per_node: int = 800
    min_nodes: int = 1


class Trigger(StrEnum):
    HIGH_CPU = "HighCpu"
    MODULE_COUNT = "ModuleCount"
    LOW_CPU = "LowCpu"


Direction = Literal["up", "down"]
DIRECTIONS: dict[Trigger, Direction] = {Trigger.HIGH_CPU: "up", Trigger.MODULE_COUNT: "up", Trigger.LOW_CPU: "down"}


@dataclass(frozen=True)
class Signal:
    """An active trigger: `region` should gain (`up`) or lose (`down`) a node."""

    region: str
    trigger: Trigger
    since: float  # when the condition started to hold
    fired_at: float  # when the signal (last) fired
    value: float  # mean CPU percent, or the most module versions on one node
    threshold: float
    nodes: int  # healthy nodes in the region
    message: str

    @property
    def direction(self) -> Direction:
        return DIRECTIONS[self.trigger]

    def to_json(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "trigger": self.trigger.value,
            "direction": self.direction,
            "since": iso(self.since),
            "firedAt": iso(self.fired_at),
            "value": round(self.value, 2),
            "threshold": self.threshold,
            "nodes": self.nodes,
            "message": self.message,
        }


@dataclass(frozen=True)
class Change:
    kind: Literal["fired", "repeated", "cleared"]
    signal: Signal
    at: float


@dataclass(frozen=True)
class _Region:
    nodes: int
    cpu: float
    modules: int
    busiest: str


def _regions(samples: Iterable[NodeSample]) -> dict[str, _Region]:
    by_region: dict[str, list[NodeSample]] = {}
    for sample in samples:
        if sample.healthy:
            by_region.setdefault(sample.region, []).append(sample)
    out = {}
    for region, nodes in by_region.items():
        busiest = max(nodes, key=lambda s: (s.modules, s.node))
        out[region] = _Region(len(nodes), sum(s.cpu_percent for s in nodes) / len(nodes), busiest.modules, busiest.node)
    return out


class ScalingEvaluator:
    """Holds, per region and trigger, since when the condition holds and which signals are active."""

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.thresholds = thresholds or Thresholds()
        self._since: dict[tuple[str, Trigger], float] = {}
        self._active: dict[tuple[str, Trigger], Signal] = {}

    def active(self) -> list[Signal]:
        return sorted(self._active.values(), key=lambda s: (s.region, s.trigger.value))

    def _duration(self, trigger: Trigger) -> float:
        t = self.thresholds
        return {Trigger.HIGH_CPU: t.scale_up_seconds, Trigger.MODULE_COUNT: 0.0, Trigger.LOW_CPU: t.scale_down_seconds}[
            trigger
        ]

    def _repeat(self, trigger: Trigger) -> float:
        return self._duration(trigger) or self.thresholds.scale_up_seconds

    def _check(self, trigger: Trigger, region: str, r: _Region) -> tuple[bool, float, float, str]:
        """Whether the trigger's condition holds now; its value, threshold and a human message."""
        t = self.thresholds
        minutes = f"{self._duration(trigger) / 60:g} min"
        match trigger:
            case Trigger.HIGH_CPU:
                message = (
                    f"{region}: CPU {r.cpu:.1f}% (mean of {r.nodes} nodes) above {t.scale_up_cpu:g}% for {minutes}"
                )
                return r.cpu > t.scale_up_cpu, r.cpu, t.scale_up_cpu, message + ": add nodes"
            case Trigger.MODULE_COUNT:
                message = f"{region}: node {r.busiest} runs {r.modules} module versions (over {t.max_modules_per_node})"
                return r.modules > t.max_modules_per_node, r.modules, t.max_modules_per_node, message + ": add nodes"
            case Trigger.LOW_CPU:
                message = (
                    f"{region}: CPU {r.cpu:.1f}% (mean of {r.nodes} nodes) below {t.scale_down_cpu:g}% for {minutes}"
                )
                holds = r.cpu < t.scale_down_cpu and r.nodes > t.min_nodes
                return holds, r.cpu, t.scale_down_cpu, message + ": remove a node"

    def evaluate(self, now: float, samples: Iterable[NodeSample]) -> list[Change]:
        """Update the signals from this moment's samples; what fired, fired again, or cleared."""
        regions = _regions(samples)
        changes: list[Change] = []
        for key in [k for k in (*self._since, *self._active) if k[0] not in regions]:
            self._since.pop(key, None)
            gone = self._active.pop(key, None)
            if gone is not None:
                changes.append(Change("cleared", replace(gone, nodes=0, message=f"{key[0]}: no healthy node"), now))
        for region, r in sorted(regions.items()):
            for trigger in Trigger:
                changes.extend(self._step(now, region, trigger, r))
        return changes

    def _step(self, now: float, region: str, trigger: Trigger, r: _Region) -> list[Change]:
        key = (region, trigger)
        holds, value, threshold, message = self._check(trigger, region, r)
        active = self._active.get(key)
        if not holds:
            self._since.pop(key, None)
            if active is None:
                return []
            del self._active[key]
            return [Change("cleared", replace(active, value=value, nodes=r.nodes), now)]
        since = self._since.setdefault(key, now)
        if active is None:
            if now - since < self._duration(trigger):
                return []
            signal = Signal(region, trigger, since, now, value, threshold, r.nodes, message)
            self._active[key] = signal
            return [Change("fired", signal, now)]
        if now - active.fired_at >= self._repeat(trigger):
            self._active[key] = replace(active, fired_at=now, value=value, nodes=r.nodes, message=message)
            return [Change("repeated", self._active[key], now)]
        self._active[key] = replace(active, value=value, nodes=r.nodes, message=message)
        return []


def to_notification(change: Change) -> Notification:
    signal = change.signal
    details = {**signal.to_json(), "change": change.kind}
    if change.kind == "cleared":
        return Notification(
            type="scaling.cleared",
            severity=Severity.INFO,
            reason=f"{signal.trigger.value}Cleared",
            message=f"{signal.region}: {signal.trigger.value} no longer holds (scale {signal.direction} withdrawn)",
            at=change.at,
            region=signal.region,
            details=details,
        )
    up = signal.direction == "up"
    again = " (still)" if change.kind == "repeated" else ""
    return Notification(
        type="scaling.scaleUp" if up else "scaling.scaleDown",
        severity=Severity.WARNING if up else Severity.INFO,
        reason=signal.trigger.value,
        message=signal.message + again,
        at=change.at,
        region=signal.region,
        action=(
            f"add a node in {signal.region} (hotswap edge --control URL --region {signal.region})"
            if up
            else f"drain and remove one node in {signal.region}"
        ),
        details=details,
    )
