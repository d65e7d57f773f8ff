"""A module version's request counters on one node: requests, failures by kind, a latency histogram,
sandbox refusals, health check runs and the last failure's text.

Where it sits: under the router (`edge.router.VersionSlot` keeps one per loaded version and ships
deltas with heartbeats) and the worker pool (`edge.supervisor`, which adds the workers' deltas).
Only the event loop's thread touches one.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

from edge.protocol import LAST_ERROR_CHARS, LATENCY_BUCKETS_MS, VersionMetrics


@dataclass
class Counters:
    requests: int = 0
    traps: int = 0
    timeouts: int = 0
    memory: int = 0
    cpu: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    latency_sum_ms: float = 0.0
    violations: int = 0  # sandbox refusals inside calls that otherwise went on (not errors)
    last_error: str | None = None  # "code: message" of the latest module failure (kept by copy and minus)
    health_checks: int = 0  # runs of the version's healthCheck function (edge.health), not requests
    health_failures: int = 0

    @property
    def errors(self) -> int:
        return self.traps + self.timeouts + self.memory + self.cpu

    def checked(self, function: str, failure: str | None) -> None:
        """A run of the version's health check; `failure` is why it failed, None when it passed."""
        self.health_checks += 1
        if failure is not None:
            self.health_failures += 1
            self.last_error = f"health check {function} failed: {failure}"[:LAST_ERROR_CHARS]

    def record(self, outcome: str, duration_ms: float, violations: int = 0, message: str | None = None) -> None:
        self.requests += 1
        self.violations += violations
        if message is not None:
            self.last_error = f"{outcome}: {message}"[:LAST_ERROR_CHARS]
        if outcome in ("trap", "exit"):  # a command's non-zero exit counts as a trap
            self.traps += 1
        elif outcome == "timeout":
            self.timeouts += 1
        elif outcome == "memory":
            self.memory += 1
        elif outcome == "cpu":
            self.cpu += 1
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS_MS, duration_ms)] += 1
        self.latency_sum_ms += duration_ms

    def ok(self, duration_ms: float, violations: int = 0) -> None:
        """`record("ok", ...)`, the execute path's common case, without the failure branches."""
        self.requests += 1
        self.violations += violations
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS_MS, duration_ms)] += 1
        self.latency_sum_ms += duration_ms

    def add(self, m: VersionMetrics, counts: Sequence[str]) -> None:
        """Add a delta (a worker's) into these counts: `counts` names the integers both shapes have."""
        for name in counts:
            setattr(self, name, getattr(self, name) + getattr(m, name))
        for i, count in enumerate(m.latency_buckets[: len(self.buckets)]):
            self.buckets[i] += count
        self.latency_sum_ms += m.latency_sum_ms
        self.last_error = m.last_error or self.last_error

    def copy(self) -> Counters:
        return Counters(
            self.requests,
            self.traps,
            self.timeouts,
            self.memory,
            self.cpu,
            list(self.buckets),
            self.latency_sum_ms,
            self.violations,
            self.last_error,
            self.health_checks,
            self.health_failures,
        )

    def minus(self, other: Counters) -> Counters:
        return Counters(
            self.requests - other.requests,
            self.traps - other.traps,
            self.timeouts - other.timeouts,
            self.memory - other.memory,
            self.cpu - other.cpu,
            [a - b for a, b in zip(self.buckets, other.buckets, strict=True)],
            self.latency_sum_ms - other.latency_sum_ms,
            self.violations - other.violations,
            self.last_error,
            self.health_checks - other.health_checks,
            self.health_failures - other.health_failures,
        )
