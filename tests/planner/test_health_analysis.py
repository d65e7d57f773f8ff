"""Module health checks in rollout analysis: a failed run of the new version's `healthCheck` that a node
counted in the step's window fails the step (`HealthCheckFailed`), with or without traffic and with or
without an `analysis` block; when the stable version's checks fail as much in the same window, the
environment is to blame (`BaselineDegraded`): a pause, not a rollback.

The example fleet's modules, one per strategy: greeter (Canary), calc (BlueGreen), wc (Rolling)."""

from __future__ import annotations

import pytest

from reconciler.planner import Phase, RegionMetrics, Rollback
from reconciler.planner.analysis import LOADED_AND_HEALTHY, TRAFFIC, Totals, analyze, totals
from reconciler.planner.snapshots import snapshot_from_json, snapshot_json
from reconciler.spec.models import HealthCheck
from reconciler.spec.strategies import Analysis

from .driver import REGIONS, Driver, example, healthy_metrics, with_module, with_strategy

NEW = "9.0.0"
TRAP = "health check health failed: trap: wasm trap: wasm `unreachable` instruction executed"
STRATEGY = {"greeter": "canary", "calc": "blue-green", "wc": "rolling"}


def checks(module: str, version: str, runs: int, failed: int, error: str | None = TRAP) -> list[RegionMetrics]:
    """Every region's nodes ran `module@version`'s health check `runs` times, `failed` of them failing."""
    return [
        RegionMetrics(
            module,
            version,
            region,
            health_checks=runs,
            health_failures=failed,
            last_error=error if failed else None,
        )
        for region in REGIONS
    ]


def rolling_out(module: str, **strategy: object) -> tuple[Driver, str]:
    """A driver whose fleet runs `module` with a health check, then asks for its version 9.0.0; returns
    it and the stable version. `strategy` replaces fields of the module's strategy."""
    desired = with_module(example(), module, health_check=HealthCheck(function="health", interval_seconds=1))
    if strategy:
        desired = with_strategy(desired, STRATEGY[module], **strategy)
    d = Driver(desired)
    d.run()
    stable = d.desired.modules[module].spec.version
    d.desired = with_module(d.desired, module, version=NEW)
    d.run(at=0.0)
    record = d.record(module)
    assert (record.phase, record.target.version) == (Phase.PROGRESSING, NEW), record
    return d, stable


# -- the rule, as a table ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("analysis", "new", "stable", "outcome", "reason"),
    [
        (TRAFFIC, Totals(0, 0, None, TRAP, 3, 1), None, "Failed", "HealthCheckFailed"),  # before minRequests
        (LOADED_AND_HEALTHY, Totals(0, 0, None, TRAP, 1, 1), None, "Failed", "HealthCheckFailed"),
        (TRAFFIC, Totals(1000, 0, 5.0, TRAP, 3, 1), Totals(1000, 0, 5.0), "Failed", "HealthCheckFailed"),
        (TRAFFIC, Totals(0, 0, None, None, 3, 0), None, "Inconclusive", "NoTraffic"),  # passing checks: as before
        (LOADED_AND_HEALTHY, Totals(0, 0, None, None, 3, 0), None, "Passed", "AnalysisPassed"),
        # The stable version's checks fail as often or more: the environment, not the release.
        (TRAFFIC, Totals(0, 0, None, TRAP, 2, 2), Totals(0, 0, None, TRAP, 4, 4), "Inconclusive", "BaselineDegraded"),
        (
            LOADED_AND_HEALTHY,
            Totals(0, 0, None, TRAP, 4, 1),
            Totals(0, 0, None, TRAP, 2, 1),
            "Inconclusive",
            "BaselineDegraded",
        ),
        # ... but a release that fails more of its checks than the stable one is to blame.
        (TRAFFIC, Totals(0, 0, None, TRAP, 2, 2), Totals(0, 0, None, TRAP, 10, 1), "Failed", "HealthCheckFailed"),
        # A degraded baseline's checks excuse no traffic failure.
        (
            LOADED_AND_HEALTHY,
            Totals(1000, 100, 5.0, TRAP, 2, 2),
            Totals(1000, 0, 5.0, TRAP, 2, 2),
            "Failed",
            "ErrorRateTooHigh",
        ),
    ],
)
def test_health_check_verdicts(
    analysis: Analysis, new: Totals, stable: Totals | None, outcome: str, reason: str
) -> None:
    verdict = analyze(analysis, new, stable)
    assert (verdict.outcome, verdict.reason) == (outcome, reason), verdict.message


def test_a_health_check_failure_says_how_many_of_how_many_runs_failed_and_why() -> None:
    verdict = analyze(TRAFFIC, Totals(0, 0, None, TRAP, 6, 2), None)
    assert verdict.message == f"2 of 6 health checks failed: {TRAP}"


def test_totals_sum_the_health_checks_of_every_region() -> None:
    summed = totals(checks("m", "1.0.0", runs=3, failed=1))
    assert (summed.health_checks, summed.health_failures, summed.last_error) == (9, 3, TRAP)
    assert summed.requests == 0


# -- in a rollout --------------------------------------------------------------------------------


def test_a_canary_whose_new_version_fails_a_health_check_rolls_back_without_any_request() -> None:
    d, _ = rolling_out("greeter")
    result = d.later(1, checks("greeter", NEW, runs=2, failed=1))
    record = d.record("greeter")
    assert (record.phase, record.reason) == (Phase.ROLLED_BACK, "HealthCheckFailed"), record
    assert "health checks failed" in record.message and "unreachable" in record.message, record.message
    assert record.history[-1].reason == "HealthCheckFailed"
    (rollback,) = [a for a in result.actions if isinstance(a, Rollback)]
    assert rollback.reason == "HealthCheckFailed" and "unreachable" in rollback.message
    assert all(NEW not in w for w in d.weights("greeter").values()), d.weights("greeter")


def test_passing_health_checks_change_nothing_a_canary_still_waits_for_traffic() -> None:
    d, _ = rolling_out("greeter")
    d.later(31, checks("greeter", NEW, runs=3, failed=0))
    record = d.record("greeter")
    assert (record.phase, record.reason) == (Phase.PAUSED, "NoTraffic"), record


def test_when_the_stable_version_fails_its_health_checks_too_the_canary_pauses_and_does_not_roll_back() -> None:
    d, stable = rolling_out("greeter")
    failing = checks("greeter", NEW, runs=2, failed=2) + checks("greeter", stable, runs=2, failed=2)
    result = d.later(31, failing)  # past the step's 30 s
    record = d.record("greeter")
    assert (record.phase, record.reason) == (Phase.PAUSED, "BaselineDegraded"), record
    assert not [a for a in result.actions if isinstance(a, Rollback)]
    assert "stable version's health checks fail too" in record.message, record.message
    # Judged again on every pass: while the window holds them, still paused, never rolled back.
    result = d.later(5, failing)
    assert (d.record("greeter").phase, d.record("greeter").reason) == (Phase.PAUSED, "BaselineDegraded")
    assert not [a for a in result.actions if isinstance(a, Rollback)]


def test_without_auto_rollback_a_failed_health_check_pauses_the_canary_for_a_person() -> None:
    d, _ = rolling_out("greeter", auto_rollback=False)
    d.later(1, checks("greeter", NEW, runs=1, failed=1))
    record = d.record("greeter")
    assert (record.phase, record.reason) == (Phase.PAUSED, "AnalysisFailed"), record
    assert "health checks failed" in record.message and "autoRollback is off" in record.message
    d.later(3600, healthy_metrics("greeter", NEW))
    assert d.record("greeter").phase is Phase.PAUSED  # a human decides


@pytest.mark.parametrize("module", ["calc", "wc"])
def test_blue_green_and_rolling_without_analysis_do_not_advance_while_health_checks_fail(module: str) -> None:
    d, _ = rolling_out(module, analysis=None, auto_rollback=False)
    step = d.record(module).step
    d.later(3600, checks(module, NEW, runs=5, failed=1))  # far past the step's time: loaded, smoked, failing
    record = d.record(module)
    assert (record.phase, record.reason, record.step) == (Phase.PAUSED, "AnalysisFailed", step), record
    assert "health checks failed: health check health failed: trap" in record.message, record.message
    d.later(3600)
    assert (d.record(module).phase, d.record(module).step) == (Phase.PAUSED, step)  # never promoted


@pytest.mark.parametrize("module", ["calc", "wc"])
def test_blue_green_and_rolling_without_analysis_roll_back_on_a_failed_health_check(module: str) -> None:
    d, stable = rolling_out(module, analysis=None)
    d.later(1, checks(module, NEW, runs=1, failed=1))
    record = d.record(module)
    assert (record.phase, record.reason) == (Phase.ROLLED_BACK, "HealthCheckFailed"), record
    assert all(set(w) == {stable} for w in d.weights(module).values()), d.weights(module)


# -- hotswap diff's snapshot JSON ----------------------------------------------------------------


def test_snapshot_json_carries_the_health_counts_and_older_json_reads_as_none() -> None:
    metrics = checks("greeter", NEW, runs=4, failed=1)
    data = snapshot_json((), (), (), metrics, 10.0, None)
    assert data["metrics"][0]["health_checks"] == 4 and data["metrics"][0]["health_failures"] == 1
    assert snapshot_from_json(data, example()).metrics == tuple(metrics)
    for m in data["metrics"]:  # written before the counts existed
        del m["health_checks"], m["health_failures"]
    older = snapshot_from_json(data, example()).metrics
    assert {(m.health_checks, m.health_failures) for m in older} == {(0, 0)}
