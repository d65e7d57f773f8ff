"""Analysis verdicts and A/B comparisons, as tables of metrics and expected outcomes."""

from __future__ import annotations

import pytest

from reconciler.planner import RegionMetrics
from reconciler.planner.analysis import Totals, analyze, compare, lower_bound, totals, wilson_lower
from reconciler.spec.strategies import ABTestParams, Analysis

STRICT = Analysis(max_error_rate=0.01, max_latency_p99_ms=50, min_requests=100, on_no_traffic="pause")


@pytest.mark.parametrize(
    ("new", "stable", "outcome", "reason"),
    [
        (Totals(1000, 5, 20.0), None, "Passed", "AnalysisPassed"),
        (Totals(1000, 10, 20.0), None, "Passed", "AnalysisPassed"),  # exactly at the threshold
        (Totals(1000, 11, 20.0), None, "Failed", "ErrorRateTooHigh"),
        (Totals(1000, 0, 51.0), None, "Failed", "LatencyTooHigh"),
        (Totals(1000, 0, None), None, "Passed", "AnalysisPassed"),  # no latency data: not a failure
        (Totals(99, 0, 1.0), None, "Inconclusive", "NoTraffic"),
        (Totals(0, 0, None), None, "Inconclusive", "NoTraffic"),
        (Totals(1000, 30, 20.0), Totals(1000, 40, 20.0), "Inconclusive", "BaselineDegraded"),
        (Totals(1000, 50, 20.0), Totals(1000, 40, 20.0), "Failed", "ErrorRateTooHigh"),  # worse than stable
        (Totals(1000, 30, 20.0), Totals(10, 5, 20.0), "Failed", "ErrorRateTooHigh"),  # stable has too few requests
        (Totals(1000, 30, 90.0), Totals(1000, 40, 20.0), "Failed", "ErrorRateTooHigh"),  # stable is not slow
        (Totals(1000, 0, 60.0), Totals(1000, 0, 70.0), "Inconclusive", "BaselineDegraded"),
    ],
)
def test_analysis_verdicts(new: Totals, stable: Totals | None, outcome: str, reason: str) -> None:
    verdict = analyze(STRICT, new, stable)
    assert (verdict.outcome, verdict.reason) == (outcome, reason), verdict.message


def test_too_few_requests_proceed_is_a_pass_that_says_so() -> None:
    verdict = analyze(STRICT.model_copy(update={"on_no_traffic": "proceed"}), Totals(3, 0, 500.0), None)
    assert (verdict.outcome, verdict.reason) == ("Passed", "NoTrafficProceed")  # latency never fails fast


def test_totals_sum_regions_and_keep_the_worst_p99() -> None:
    summed = totals(
        [
            RegionMetrics("m", "1.0.0", "us-east", 100, 1, 10.0),
            RegionMetrics("m", "1.0.0", "eu-central", 300, 3, 30.0),
            RegionMetrics("m", "1.0.0", "apac-east", 0, 0, 99.0),  # no requests: its p99 means nothing
        ]
    )
    assert summed == Totals(400, 4, 30.0)
    assert summed.error_rate == pytest.approx(0.01)


AB = ABTestParams(split=50, duration_seconds=60, metric="errorRate")


@pytest.mark.parametrize(
    ("params", "a", "b", "winner"),
    [
        (AB, Totals(1000, 5), Totals(1000, 2), "B"),
        (AB, Totals(1000, 2), Totals(1000, 5), "A"),
        (AB, Totals(1000, 0), Totals(1000, 0), "B"),  # a tie goes to the version Git asked for
        (AB, Totals(1000, 100), Totals(1000, 20), "A"),  # B better than A but above maxErrorRate
        (AB.model_copy(update={"metric": "latencyP99"}), Totals(1000, 0, 9.0), Totals(1000, 0, 12.0), "A"),
        (AB.model_copy(update={"metric": "latencyP99"}), Totals(1000, 0, 9.0), Totals(1000, 0, 3.0), "B"),
    ],
)
def test_ab_comparison_winner(params: ABTestParams, a: Totals, b: Totals, winner: str) -> None:
    verdict, result = compare(params, STRICT, a, b)
    assert result is not None and result.winner == winner
    assert verdict.reason == f"Winner{winner}"


def test_ab_comparison_needs_min_requests_on_both_sides() -> None:
    verdict, result = compare(AB, STRICT, Totals(1000, 0), Totals(50, 0))
    assert result is None and verdict.reason == "NoTraffic"


# --- fail fast ------------------------------------------------------------------------------------

LENIENT = Analysis(max_error_rate=0.05, min_requests=50)


@pytest.mark.parametrize(
    ("analysis", "new", "stable", "outcome"),
    [
        (LENIENT, Totals(3, 2), Totals(27, 0), "Failed"),  # 2 in 3: bound 5.9 % > 5 %
        (LENIENT, Totals(1, 1), Totals(9, 0), "Inconclusive"),  # 1 in 1: bound 1 %, could be bad luck
        (LENIENT, Totals(30, 1), Totals(270, 0), "Inconclusive"),  # 1 in 30: healthy enough, wait
        (LENIENT, Totals(30, 3), None, "Failed"),  # 3 > 5 % of 50: certain at minRequests
        (LENIENT, Totals(3, 2), Totals(30, 15), "Inconclusive"),  # the stable version fails as often
        (Analysis(), Totals(30, 1), Totals(270, 0), "Failed"),  # 1 > 1 % of 50: certain
        (Analysis(), Totals(30, 1), Totals(270, 3), "Inconclusive"),  # not clearly worse than stable
        (Analysis(on_no_traffic="proceed"), Totals(30, 0), None, "Passed"),
    ],
)
def test_failure_before_min_requests_when_certain_or_clear(
    analysis: Analysis, new: Totals, stable: Totals | None, outcome: str
) -> None:
    verdict = analyze(analysis, new, stable)
    assert verdict.outcome == outcome, verdict.message
    if outcome == "Failed":
        assert verdict.reason == "ErrorRateTooHigh"


@pytest.mark.parametrize(
    "analysis",
    [
        Analysis(),
        Analysis(max_error_rate=0.05, min_requests=100),
        Analysis(max_error_rate=0.02, min_requests=1000),
        Analysis(max_error_rate=0.2, min_requests=5000),
    ],
)
def test_a_version_failing_two_requests_in_three_fails_within_ten_errors(analysis: Analysis) -> None:
    """Request after request (a pass after each, the stable version clean): when is it judged Failed?"""
    for n in range(1, analysis.min_requests):
        errors = (2 * n + 2) // 3  # fail, fail, pass, fail, fail, pass...
        verdict = analyze(analysis, Totals(n, errors), Totals(9 * n, 0))
        if verdict.outcome == "Failed":
            break
    assert verdict.outcome == "Failed"
    assert errors <= 10, (errors, n)


@pytest.mark.parametrize("rate", [0.0, 0.005])
def test_a_healthy_version_under_the_threshold_never_fails_fast(rate: float) -> None:
    """One error in 30 or fewer, request after request: never judged Failed before minRequests."""
    analysis = Analysis(max_error_rate=0.05, min_requests=200)
    for n in range(1, 200):
        errors = n // 30 if rate == 0.0 else round(n * rate)
        assert analyze(analysis, Totals(n, errors), Totals(9 * n, 0)).outcome == "Inconclusive", (n, errors)


@pytest.mark.parametrize(
    ("errors", "requests", "expected"),
    [(0, 10, 0.0), (1, 1, 0.01), (2, 2, 0.1), (3, 3, 0.2154), (2, 3, 0.0589), (1, 30, 0.000335)],
)
def test_exact_lower_bound(errors: int, requests: int, expected: float) -> None:
    assert lower_bound(errors, requests) == pytest.approx(expected, rel=2e-3)


def test_lower_bound_is_wilson_above_a_hundred_errors_and_close_to_exact_there() -> None:
    assert lower_bound(150, 300) == wilson_lower(150, 300)
    assert lower_bound(100, 200) == pytest.approx(wilson_lower(100, 200), rel=0.01)


def test_a_failure_quotes_the_new_versions_last_error_and_a_pass_does_not() -> None:
    trap = "trap: wasm trap: wasm `unreachable` instruction executed"
    regions = [
        RegionMetrics("m", "2.0.0", "eu", requests=60, errors=30, last_error=None),
        RegionMetrics("m", "2.0.0", "us", requests=60, errors=30, last_error=trap),
    ]
    failed = analyze(Analysis(), totals(regions), Totals(100, 0))
    assert failed.outcome == "Failed" and failed.message.endswith(f"; last error: {trap}")
    fast = analyze(Analysis(), Totals(4, 3, None, trap), Totals(100, 0))  # fails before minRequests
    assert fast.outcome == "Failed" and trap in fast.message
    passed = analyze(Analysis(), Totals(100, 0, None, trap), None)  # an old error, a healthy window
    assert passed.outcome == "Passed" and trap not in passed.message
