"""Analysis: is the new version healthy enough to take the next step? And who won an A/B test?

Where it sits: the rollout machine (`reconciler.planner.machine`) calls `analyze` on every pass of a
step, with the metrics the nodes shipped since the step began: a failure ends the step at once, a
pass or an inconclusive verdict counts only once the step's time is up. It calls `compare` at the
end of an A/B split. Pure arithmetic on the versions' `Totals`: their `RegionMetrics` (what one
region's nodes served during the step) summed over the step's regions by `totals`, with the worst
region's p99 (a percentile does not add up). A `Totals` is not a `RegionMetrics` without its keys: it
is the evidence a verdict quotes (`Verdict.new`), over a scope of regions. The verdict's reason is a
CamelCase word for conditions.

Defaults (`analysis_for`): a strategy that leaves `analysis` out gets one that can always progress.
- BlueGreen and Rolling: `LOADED_AND_HEALTHY` (maxErrorRate 0.01, minRequests 0, onNoTraffic
  proceed). A step moves on once its time is up and every node of the step reports the new version
  loaded (and smoked) at the step's weights, with no failed health check; whatever traffic it got is
  judged (a preview gets some only with X-Hotswap-Version), none is waited for.
- Canary and ABTest: `TRAFFIC` (maxErrorRate 0.01, minRequests 50, onNoTraffic pause): a step
  passes on 50 requests or more to the new version, and waits for them.
- Regional: its settle steps use the `perRegion` strategy's analysis (explicit or default); without
  one, `LOADED_AND_HEALTHY`.
An explicit `analysis` block means exactly what it says, for every step of every type.

Rules: first, health checks (a Module's `healthCheck`, which every node runs after load and every
`intervalSeconds`, `edge.health`): a failed run of the new version's during the step fails it
(`HealthCheckFailed`, quoting the failure), whatever the traffic and under every analysis, explicit
or default; unless the stable version's checks failed in the same window at least as often (a share
of its runs no smaller than the new version's): then the environment is to blame, `BaselineDegraded`,
never a pass (the rules below still fail the step on traffic).

Then: fewer than `minRequests` requests to the new version is inconclusive (`NoTraffic`), unless
`onNoTraffic: proceed`, or unless it already fails fast (below). With `minRequests` or more, above
`maxErrorRate` or `maxLatencyP99Ms` is a failure, unless the stable version breaks the same
threshold and the new one does no worse: then the environment is to blame (a dependency is down,
say) and the verdict is inconclusive (`BaselineDegraded`), never a pass.

Fail fast (`ErrorRateTooHigh` before `minRequests`): with n requests and e errors to the new
version, n < minRequests, the step fails at once when the new version is clearly worse than the
stable one, i.e. the one-sided 99 % lower confidence bound L(e, n) of its error rate (`lower_bound`)
is above the stable version's error rate over the same window (0 when it served nothing), and either
- failure is certain: e > maxErrorRate x minRequests (judged at minRequests, the rate would be above
  maxErrorRate whatever the remaining requests do), or
- failure is clear: L(e, n) > maxErrorRate.
L is the exact (Clopper-Pearson) bound: the error rate p at which e or more errors in n requests
has a 1 % chance. Wilson's score bound, simpler, is far too eager at a handful of requests (1 error
in 1 request gives 15.6 %, where the exact bound gives 1 %): a version allowed 5 % would fail on its
first unlucky request. Above 100 errors the two agree within a fraction of a percent and Wilson's
is used. So with the defaults (1 %, 50) one error among fewer than 50 requests fails a version whose
stable one served without errors; with 5 % and 50, a version failing 2 requests in 3 fails after 2
errors (L = 5.9 %) while 1 error in 30 (L = 0.03 %, 1 <= 2.5) or 1 in 1 (L = 1 %) waits for more.
Latency never fails fast.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

from reconciler.planner.types import ABResult, RegionMetrics
from reconciler.spec.strategies import ABTestParams, Analysis, RolloutStrategySpec, StrategyType

__all__ = [
    "LOADED_AND_HEALTHY",
    "TRAFFIC",
    "Totals",
    "Verdict",
    "analysis_for",
    "analyze",
    "compare",
    "lower_bound",
    "totals",
    "wilson_lower",
]

LOADED_AND_HEALTHY = Analysis(max_error_rate=0.01, min_requests=0, on_no_traffic="proceed")
"""BlueGreen's and Rolling's analysis when the strategy has none: judge what came, wait for nothing."""

TRAFFIC = Analysis(max_error_rate=0.01, min_requests=50, on_no_traffic="pause")
"""Canary's and ABTest's analysis when the strategy has none: a step passes on traffic."""

CONFIDENCE = 0.99
"""One-sided confidence of a fail-fast verdict."""

Z_99 = 2.326
"""The one-sided 99 % normal quantile (Wilson's bound)."""

EXACT_UP_TO = 100
"""Errors up to which `lower_bound` is the exact binomial bound; Wilson's above."""


def analysis_for(strategy: RolloutStrategySpec, inner: RolloutStrategySpec | None = None) -> Analysis:
    """The analysis a strategy's steps are judged by: its own, else its type's default (see above).

    `inner` is a Regional strategy's `perRegion` one, whose analysis its settle steps inherit.
    """
    if strategy.analysis is not None:
        return strategy.analysis
    if strategy.type in (StrategyType.CANARY, StrategyType.AB_TEST):
        return TRAFFIC
    if strategy.type is StrategyType.REGIONAL and inner is not None and inner.type is not StrategyType.REGIONAL:
        return analysis_for(inner)
    return LOADED_AND_HEALTHY


def wilson_lower(errors: int, requests: int, z: float = Z_99) -> float:
    """The Wilson score lower bound of an error rate seen as `errors` of `requests` (0 for none)."""
    if requests <= 0:
        return 0.0
    p = errors / requests
    z2 = z * z
    centre = p + z2 / (2 * requests)
    margin = z * math.sqrt(p * (1 - p) / requests + z2 / (4 * requests * requests))
    return max(0.0, (centre - margin) / (1 + z2 / requests))


def _at_least(errors: int, requests: int, rate: float) -> float:
    """P(X >= errors) for X ~ Binomial(requests, rate), 0 < rate < 1: 1 minus the first `errors` terms."""
    log_p, log_q, whole = math.log(rate), math.log1p(-rate), math.lgamma(requests + 1)
    below = sum(
        math.exp(whole - math.lgamma(k + 1) - math.lgamma(requests - k + 1) + k * log_p + (requests - k) * log_q)
        for k in range(errors)
    )
    return max(0.0, 1.0 - below)


def lower_bound(errors: int, requests: int, confidence: float = CONFIDENCE) -> float:
    """The one-sided lower confidence bound of an error rate seen as `errors` of `requests`.

    Exact (Clopper-Pearson: the rate at which `errors` or more has a 1 - confidence chance, found by
    bisection) up to EXACT_UP_TO errors, Wilson's score bound above. 0 without errors.
    """
    if errors <= 0 or requests <= 0:
        return 0.0
    errors = min(errors, requests)  # a node's report is a claim: never more errors than requests
    if errors > EXACT_UP_TO:
        return wilson_lower(errors, requests)
    alpha = 1.0 - confidence
    low, high = 0.0, errors / requests
    for _ in range(50):
        middle = (low + high) / 2
        if middle <= 0.0 or _at_least(errors, requests, middle) < alpha:
            low = middle
        else:
            high = middle
    return low


@dataclass(frozen=True)
class Totals:
    """Metrics of one version summed over the regions of a step's scope; p99 is the worst region's."""

    requests: int = 0
    errors: int = 0
    p99_ms: float | None = None
    last_error: str | None = None  # one region's latest module error (trap message, timeout, exit code)
    health_checks: int = 0  # runs of the version's healthCheck function, not requests
    health_failures: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def health_failure_rate(self) -> float:
        """The share of health check runs that failed (a node's claim of more failures than runs: 1)."""
        if not self.health_checks:
            return 1.0 if self.health_failures else 0.0
        return min(1.0, self.health_failures / self.health_checks)

    def describe(self) -> str:
        p99 = "n/a" if self.p99_ms is None else f"{self.p99_ms:g} ms"
        return f"{self.requests} requests, error rate {self.error_rate:.2%}, p99 {p99}"


def totals(metrics: Iterable[RegionMetrics]) -> Totals:
    requests = errors = checks = check_failures = 0
    p99: float | None = None
    last_error: str | None = None
    for m in metrics:
        requests += m.requests
        errors += m.errors
        checks += m.health_checks
        check_failures += m.health_failures
        if m.p99_ms is not None and m.requests:
            p99 = m.p99_ms if p99 is None else max(p99, m.p99_ms)
        last_error = m.last_error or last_error
    return Totals(requests, errors, p99, last_error, checks, check_failures)


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


def _fails_fast(analysis: Analysis, new: Totals, stable: Totals | None) -> Verdict | None:
    """A failure already certain or clear before `minRequests` (the rule is in the module docstring)."""
    if new.errors == 0:
        return None
    lower = lower_bound(new.errors, new.requests)
    baseline = stable.error_rate if stable is not None else 0.0
    if lower <= baseline:
        return None  # not clearly worse than the stable version: wait for minRequests
    limit = analysis.max_error_rate
    seen = f"{new.errors} errors in {new.requests} requests ({new.error_rate:.2%})"
    if new.errors > limit * analysis.min_requests:
        why = (
            f"{seen}: above {limit:.2%} of the {analysis.min_requests} requests analysis needs,"
            " whatever the next ones do"
        )
    elif lower > limit:
        why = f"{seen}: its 99% lower bound {lower:.2%} is above {limit:.2%}"
    else:
        return None
    if stable is not None and stable.requests:
        why += f" and above the stable version's {baseline:.2%}"
    return Verdict("Failed", "ErrorRateTooHigh", why, new)


def _health(new: Totals, stable: Totals | None) -> Verdict | None:
    """Failed health checks of the new version in the window (the rule is in the module docstring)."""
    if new.health_failures <= 0:
        return None
    seen = f"{new.health_failures} of {max(new.health_checks, new.health_failures)} health checks failed"
    if stable is not None and stable.health_failures > 0 and new.health_failure_rate <= stable.health_failure_rate:
        baseline = f"{stable.health_failures} of {max(stable.health_checks, stable.health_failures)}"
        message = f"the stable version's health checks fail too ({baseline}); new: {seen}"
        return Verdict("Inconclusive", "BaselineDegraded", message, new)
    return Verdict("Failed", "HealthCheckFailed", f"{seen}: {new.last_error or 'no message'}", new)


def _quoting(verdict: Verdict) -> Verdict:
    """A failure says what the module itself reported, not only the rate (the node's log has the rest);
    a failed health check's message already does."""
    if verdict.outcome != "Failed" or not verdict.new.last_error or verdict.reason == "HealthCheckFailed":
        return verdict
    return replace(verdict, message=f"{verdict.message}; last error: {verdict.new.last_error}")


def analyze(analysis: Analysis, new: Totals, stable: Totals | None) -> Verdict:
    """Judge the new version's metrics over a step, against the thresholds and the stable version;
    a failure quotes the new version's last error."""
    return _quoting(_analyze(analysis, new, stable))


def _analyze(analysis: Analysis, new: Totals, stable: Totals | None) -> Verdict:
    health = _health(new, stable)
    if health is None:
        return _traffic(analysis, new, stable)
    if health.outcome == "Failed":
        return health
    traffic = _traffic(analysis, new, stable)  # a degraded baseline's checks excuse no traffic failure
    return traffic if traffic.outcome == "Failed" else health


def _traffic(analysis: Analysis, new: Totals, stable: Totals | None) -> Verdict:
    if new.requests < analysis.min_requests:
        fast = _fails_fast(analysis, new, stable)
        if fast is not None:
            return fast
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
