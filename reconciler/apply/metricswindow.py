"""Metric deltas as nodes ship them with heartbeats, kept for an hour and summed over any window.

Where it sits: `reconciler.apply.nodes.NodeHub.heartbeat` adds each node's deltas (`MetricsWindow.add`);
the controller sums them per rollout step for the planner's analysis (`since_by_region`), and
`reconciler.apply.telemetry` extends the window with cumulative totals for /metrics.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from edge.protocol import LATENCY_BUCKETS_MS, MAX_COUNT, MAX_LATENCY_SUM_MS, VersionMetrics

METRICS_HORIZON_SECONDS = 3600.0


@dataclass
class Totals:
    """Summed metrics of one module version over a window."""

    requests: int = 0
    errors: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    last_error: str | None = None  # the latest module error message shipped in the window
    health_checks: int = 0  # runs of the version's healthCheck function (`edge.health`), not requests
    health_failures: int = 0  # of those, the failed ones (their message is a `last_error`)

    def add(self, m: VersionMetrics) -> None:
        self.requests += m.requests
        self.errors += m.errors
        self.health_checks += m.health_checks
        self.health_failures += m.health_failures
        if m.last_error:
            self.last_error = m.last_error
        for i, count in enumerate(m.latency_buckets[: len(self.buckets)]):
            self.buckets[i] += count

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p99_ms(self) -> float | None:
        """The upper bound of the bucket holding the 99th percentile (None without data)."""
        total = sum(self.buckets)
        if not total:
            return None
        target, running = 0.99 * total, 0
        for i, count in enumerate(self.buckets):
            running += count
            if running >= target:
                return LATENCY_BUCKETS_MS[i] if i < len(LATENCY_BUCKETS_MS) else float("inf")
        return float("inf")


def merged(a: VersionMetrics, b: VersionMetrics) -> VersionMetrics:
    """Two reports of one version as one: counts added (saturating at MAX_COUNT), `b`'s error if any."""
    width = max(len(a.latency_buckets), len(b.latency_buckets))
    buckets = tuple(
        min(
            MAX_COUNT,
            (a.latency_buckets[i] if i < len(a.latency_buckets) else 0)
            + (b.latency_buckets[i] if i < len(b.latency_buckets) else 0),
        )
        for i in range(width)
    )
    counts = (
        "requests",
        "errors",
        "traps",
        "timeouts",
        "memory",
        "cpu",
        "violations",
        "health_checks",
        "health_failures",
    )
    return a.model_copy(
        update={
            **{name: min(MAX_COUNT, getattr(a, name) + getattr(b, name)) for name in counts},
            "latency_buckets": buckets,
            "latency_sum_ms": min(MAX_LATENCY_SUM_MS, a.latency_sum_ms + b.latency_sum_ms),
            "last_error": b.last_error or a.last_error,
        }
    )


class MetricsWindow:
    """Metric deltas as nodes ship them, kept for an hour, summed over any window on demand."""

    def __init__(self, horizon: float = METRICS_HORIZON_SECONDS) -> None:
        self.horizon = horizon
        self._events: dict[tuple[str, str, str], deque[tuple[float, VersionMetrics]]] = {}

    def add(self, at: float, region: str, metrics: Iterable[VersionMetrics]) -> None:
        """One event per version of one report: a heartbeat that lists a version many times (a node
        token holder's 15,000 times per 1 MiB heartbeat, kept for an hour) adds one, summed."""
        one: dict[tuple[str, str], VersionMetrics] = {}
        for m in metrics:
            key = (m.module, m.version)
            one[key] = m if (before := one.get(key)) is None else merged(before, m)
        for m in one.values():
            events = self._events.setdefault((m.module, m.version, region), deque())
            if events and events[-1][0] > at:  # late, from another replica: keep the time order
                bisect.insort(events, (at, m), key=lambda e: e[0])
            else:
                events.append((at, m))
            while events and events[0][0] < at - self.horizon:
                events.popleft()

    def since(self, module: str, version: str, region: str, start: float) -> Totals:
        totals = Totals()
        events = self._events.get((module, version, region), deque())
        times = [t for t, _ in events]
        for _, m in list(events)[bisect.bisect_left(times, start) :]:
            totals.add(m)
        return totals

    def since_by_region(self, module: str, versions: Iterable[str], start: float) -> dict[tuple[str, str, str], Totals]:
        """(module, version, region) -> totals since `start`, for the versions given."""
        wanted = set(versions)
        return {key: self.since(*key, start) for key in self._events if key[0] == module and key[1] in wanted}
