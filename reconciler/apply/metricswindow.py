"""Metric deltas as nodes ship them with heartbeats, kept for an hour and summed over any window.

Where it sits: `reconciler.apply.nodes.NodeHub.heartbeat` adds each node's deltas (`MetricsWindow.add`);
the controller reads what each version served in each region since a rollout step began
(`since_by_region`) as the planner's `RegionMetrics`, and `reconciler.apply.telemetry` extends the
window with cumulative totals for /metrics.

Three shapes, three names: a node's report is `edge.protocol.VersionMetrics` (one node, since its last
heartbeat, with a latency histogram); `merged` adds two of those into one (a heartbeat that lists a
version twice, /metrics' running totals); `since` sums a window of them for one region into a
`RegionMetrics`, reading the summed histogram down to its p99, which is all the planner judges by.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Sequence

from edge.protocol import LATENCY_BUCKETS_MS, MAX_COUNT, MAX_LATENCY_SUM_MS, VersionMetrics
from reconciler.planner import RegionMetrics

METRICS_HORIZON_SECONDS = 3600.0

Totals = RegionMetrics
"""What `since` returned under this name; `reconciler.apply.nodes` still re-exports it (nothing
imports it from there). Goes once that import does."""


def p99_ms(buckets: Sequence[int]) -> float | None:
    """The upper bound of the latency bucket (`LATENCY_BUCKETS_MS`, then +Inf) holding the 99th
    percentile of the counts in `buckets` (None without any)."""
    total = sum(buckets)
    if not total:
        return None
    target, running = 0.99 * total, 0
    for i, count in enumerate(buckets):
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

    def since(self, module: str, version: str, region: str, start: float) -> RegionMetrics:
        """What the version served in the region from `start` on: the reports' sums, the latest error."""
        requests = errors = checks = failures = 0
        buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        last_error: str | None = None
        events = self._events.get((module, version, region), deque())
        times = [t for t, _ in events]
        for _, m in list(events)[bisect.bisect_left(times, start) :]:
            requests += m.requests
            errors += m.errors
            checks += m.health_checks
            failures += m.health_failures
            last_error = m.last_error or last_error
            for i, count in enumerate(m.latency_buckets[: len(buckets)]):
                buckets[i] += count
        return RegionMetrics(module, version, region, requests, errors, p99_ms(buckets), last_error, checks, failures)

    def since_by_region(
        self, module: str, versions: Iterable[str], start: float
    ) -> dict[tuple[str, str, str], RegionMetrics]:
        """(module, version, region) -> what each of the versions given served there since `start`."""
        wanted = set(versions)
        return {key: self.since(*key, start) for key in self._events if key[0] == module and key[1] in wanted}
