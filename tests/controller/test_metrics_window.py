"""The metrics window sums the nodes' reports (`edge.protocol.VersionMetrics`) of one version in one
region into what the planner judges: a `RegionMetrics`, the summed latency histogram read down to its p99."""

from __future__ import annotations

from edge.protocol import LATENCY_BUCKETS_MS, VersionMetrics
from reconciler.apply.metricswindow import MetricsWindow, p99_ms
from reconciler.planner import RegionMetrics


def report(requests: int, errors: int, slow: int, last_error: str | None = None) -> VersionMetrics:
    """`requests` in the 1 ms bucket, but `slow` of them in the 500 ms one."""
    buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    buckets[LATENCY_BUCKETS_MS.index(1.0)] = requests - slow
    buckets[LATENCY_BUCKETS_MS.index(500.0)] = slow
    return VersionMetrics(
        module="m",
        version="1.0.0",
        requests=requests,
        errors=errors,
        latency_buckets=tuple(buckets),
        last_error=last_error,
        health_checks=1,
    )


def test_a_window_of_reports_is_what_the_planner_reads_of_a_region() -> None:
    window = MetricsWindow()
    window.add(10.0, "eu", [report(60, 1, 0, "trap: first")])
    window.add(11.0, "eu", [report(40, 2, 2)])  # another node, no error message
    window.add(12.0, "us", [report(500, 500, 500, "trap: elsewhere")])
    assert window.since("m", "1.0.0", "eu", 0.0) == RegionMetrics(
        "m", "1.0.0", "eu", 100, 3, 500.0, "trap: first", health_checks=2
    )
    assert window.since("m", "1.0.0", "eu", 10.5) == RegionMetrics("m", "1.0.0", "eu", 40, 2, 500.0, None, 1)
    assert window.since("m", "1.0.0", "eu", 20.0) == RegionMetrics("m", "1.0.0", "eu")  # nothing since: no p99
    assert set(window.since_by_region("m", ["1.0.0"], 0.0)) == {("m", "1.0.0", "eu"), ("m", "1.0.0", "us")}


def test_the_p99_is_the_upper_bound_of_the_bucket_holding_it() -> None:
    buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    assert p99_ms(buckets) is None
    buckets[0] = 99
    buckets[-1] = 1
    assert p99_ms(buckets) == LATENCY_BUCKETS_MS[0]
    buckets[-1] = 2
    assert p99_ms(buckets) == float("inf")
