"""Analysis: is the new version healthy enough to take the next step? And who won an A/B test?

Where it sits: the rollout machine (`reconciler.planner.machine`) calls `analyze` when a step's time
is up, with the metrics the nodes shipped for the step's window, and `compare` at the end of an A/B
split. Pure arithmetic on `VersionMetrics`; the verdict's reason is a CamelCase word for conditions.

Rules: fewer than `minRequests` requests to the new version is inconclusive (`NoTraffic`), unless
`onNoTraffic: proceed`. Above `maxErrorRate` or `maxLatencyP99Ms` is a failure, unless the stable
version breaks the same threshold and the new one does no worse: then the environment is to blame
(a dependency is down, say) and the verdict is inconclusive (`BaselineDegraded`), never a pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from reconciler.planner.types import ABResult, VersionMetrics
from reconciler.spec.models import ABTestParams, Analysis

__all__ = ["Totals", "Verdict", "analyze", "compare", "totals"]


@dataclass(frozen=True)
class Totals:
    """Metrics of one version summed over regions; p99 is the worst region's."""

    requests: int = 0
    errors: int = 0
    p99_ms: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def describe(self) -> str:
        p99 = "n/a" if self.p99_ms is None else f"{self.p99_ms:g} ms"
        return f"{self.requests} requests, error rate {self.error_rate:.2%}, p99 {p99}"


def totals(metrics: Iterable[VersionMetrics]) -> Totals:
    requests = errors = 0
    p99: float | None = None
    for m in metrics:
        requests += m.requests
        errors += m.errors
        if m.p99_ms is not None and m.requests:
            p99 = m.p99_ms if p99 is None else max(p99, m.p99_ms)
    return Totals(requests, errors, p99)


@dataclass(frozen=True)
class Verdict:
    outcome: Literal["Passed", "Failed", "Inconclusive"]
    reason: str
    message: str
    new: Totals


def _violations(analysis: Analysis, t: Totals) -> list[tuple[str, str]]:
    found = []
    if t.error_rate > analysis.max_error_rate:
        found.append(("ErrorRateTooHigh", f"error rate {t.error_rate:.2%} is above {analysis.max_error_rate:.2%}"))
    limit = analysis.max_latency_p99_ms
    if limit is not None and t.p99_ms is not None and t.p99_ms > limit:
        found.append(("LatencyTooHigh", f"p99 {t.p99_ms:g} ms is above {limit:g} ms"))
    return found


def analyze(analysis: Analysis, new: Totals, stable: Totals | None) -> Verdict:
    """Judge the new version's metrics over a step, against the thresholds and the stable version."""
    if new.requests < analysis.min_requests:
        if analysis.on_no_traffic == "proceed":
            return Verdict(
                "Passed", "NoTrafficProceed", f"{new.requests} of {analysis.min_requests} requests; proceeding", new
            )
        return Verdict(
            "Inconclusive",
            "NoTraffic",
            f"only {new.requests} of the {analysis.min_requests} requests analysis needs",
            new,
        )
    problems = _violations(analysis, new)
    if not problems:
        return Verdict("Passed", "AnalysisPassed", new.describe(), new)
    if stable is not None and stable.requests >= max(analysis.min_requests, 1):
        baseline = {reason for reason, _ in _violations(analysis, stable)}
        no_worse = new.error_rate <= stable.error_rate and (
            new.p99_ms is None or stable.p99_ms is None or new.p99_ms <= stable.p99_ms
        )
        if no_worse and all(reason in baseline for reason, _ in problems):
            return Verdict(
                "Inconclusive",
                "BaselineDegraded",
                f"the stable version fails the same thresholds ({stable.describe()}); new: {new.describe()}",
                new,
            )
    return Verdict("Failed", problems[0][0], "; ".join(message for _, message in problems), new)


def compare(params: ABTestParams, analysis: Analysis, a: Totals, b: Totals) -> tuple[Verdict, ABResult | None]:
    """End of an A/B split: B (the new version) wins unless it does worse on `metric` or fails thresholds.

    Ties go to B: Git asked for it and the data says it is no worse.
    """
    if min(a.requests, b.requests) < analysis.min_requests:
        if analysis.on_no_traffic == "proceed":
            result = ABResult(params.metric, a.error_rate, b.error_rate, "B", a.requests, b.requests)
            return Verdict("Passed", "NoTrafficProceed", "too few requests to compare; proceeding with B", b), result
        return Verdict(
            "Inconclusive",
            "NoTraffic",
            f"A had {a.requests} and B {b.requests} requests; comparing needs {analysis.min_requests} each",
            b,
        ), None
    if params.metric == "errorRate":
        a_value, b_value = a.error_rate, b.error_rate
    else:
        a_value, b_value = a.p99_ms or 0.0, b.p99_ms or 0.0
    problems = _violations(analysis, b)
    winner: Literal["A", "B"] = "B" if not problems and b_value <= a_value else "A"
    result = ABResult(params.metric, a_value, b_value, winner, a.requests, b.requests)
    why = "; ".join(message for _, message in problems) or f"{params.metric} A {a_value:g} vs B {b_value:g}"
    return Verdict("Passed", f"Winner{winner}", f"{winner} wins: {why}", b), result
