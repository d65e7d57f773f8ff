"""The version router: choosing versions, swapping tables, draining retired versions, metrics."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge import wasm
from edge.errors import NotFoundError, UnavailableError
from edge.protocol import Limits, ModuleEntry
from edge.router import Router, sticky_point
from edge.runtime import Runtime
from edge.standalone import DirectorySource

V1 = '(module (func (export "version") (result i32) i32.const 1))'
V2 = '(module (func (export "version") (result i32) i32.const 2))'


@pytest.fixture
def source(tmp_path: Path) -> DirectorySource:
    return DirectorySource(tmp_path)


@pytest.fixture
def router(runtime: Runtime, source: DirectorySource) -> Iterator[Router]:
    yield Router(runtime, source)


def entry(
    source: DirectorySource, wat: str, version: str, weight: int, module: str = "greeter", **kw: object
) -> ModuleEntry:
    digest = source.add(wasm.compile_wat(wat))
    return ModuleEntry.model_validate({"module": module, "version": version, "digest": digest, "weight": weight, **kw})


def serve(router: Router, **kw: str | None) -> tuple[str, int]:
    slot = router.pick("greeter", **kw)
    try:
        loaded = slot.loaded
        return slot.version, loaded.invoke(loaded.prepare("version", [])).value
    finally:
        router.release(slot)


async def test_a_table_is_applied_and_served(router: Router, source: DirectorySource) -> None:
    report = await router.apply_table([entry(source, V1, "1.0.0", 100)], generation=7)
    assert report.loaded == ("greeter@1.0.0",) and report.failed == {}
    assert router.generation == 7
    assert serve(router) == ("1.0.0", 1)


async def test_weights_split_traffic(router: Router, source: DirectorySource) -> None:
    await router.apply_table([entry(source, V1, "1.0.0", 75), entry(source, V2, "2.0.0", 25)])
    router._random.seed(1)
    counts = Counter(serve(router)[0] for _ in range(2000))
    assert set(counts) == {"1.0.0", "2.0.0"}
    assert 0.70 < counts["1.0.0"] / 2000 < 0.80


async def test_a_sticky_key_always_lands_on_the_same_version(router: Router, source: DirectorySource) -> None:
    await router.apply_table([entry(source, V1, "1.0.0", 50), entry(source, V2, "2.0.0", 50)])
    for key in ("alice", "bob", "carol", "dave"):
        first = serve(router, sticky=key)
        assert all(serve(router, sticky=key) == first for _ in range(20))
    by_key = {serve(router, sticky=f"user-{i}")[0] for i in range(50)}
    assert by_key == {"1.0.0", "2.0.0"}


def test_the_sticky_hash_is_stable_across_processes() -> None:
    """Not Python's randomised hash(): the same key maps to the same point on every node."""
    code = "from edge.router import sticky_point; print(sticky_point('greeter', 'alice', 1000))"
    other = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
    )
    assert int(other.stdout) == sticky_point("greeter", "alice", 1000)


async def test_a_version_header_selects_a_version_even_at_weight_zero(router: Router, source: DirectorySource) -> None:
    await router.apply_table([entry(source, V1, "1.0.0", 100), entry(source, V2, "2.0.0", 0)])
    assert all(serve(router)[0] == "1.0.0" for _ in range(50))
    assert serve(router, version="2.0.0") == ("2.0.0", 2)
    with pytest.raises(NotFoundError, match=r"loaded: 1\.0\.0, 2\.0\.0"):
        router.pick("greeter", version="3.0.0")


async def test_unknown_modules_and_zero_weight_tables(router: Router, source: DirectorySource) -> None:
    with pytest.raises(NotFoundError, match="'greeter' is not loaded"):
        router.pick("greeter")
    await router.apply_table([entry(source, V1, "1.0.0", 0)])
    with pytest.raises(UnavailableError, match="all weights are 0"):
        router.pick("greeter")


async def test_unchanged_versions_are_kept_and_reweighted(router: Router, source: DirectorySource) -> None:
    await router.apply_table([entry(source, V1, "1.0.0", 100), entry(source, V2, "2.0.0", 0)])
    before = {s.version: s for s in router.slots()}
    report = await router.apply_table([entry(source, V1, "1.0.0", 0), entry(source, V2, "2.0.0", 100)])
    assert set(report.kept) == {"greeter@1.0.0", "greeter@2.0.0"} and report.loaded == ()
    assert {s.version: s for s in router.slots()} == before  # the same loaded objects
    assert serve(router)[0] == "2.0.0"


async def test_changed_limits_reload_the_version(router: Router, source: DirectorySource) -> None:
    await router.apply_table([entry(source, V1, "1.0.0", 100)])
    report = await router.apply_table([entry(source, V1, "1.0.0", 100, limits={"memoryMB": 64})])
    assert report.loaded == ("greeter@1.0.0",)
    assert router.slots()[0].entry.limits == Limits(memory_mb=64)


async def test_a_retired_version_finishes_its_requests_before_unloading(
    router: Router, source: DirectorySource
) -> None:
    await router.apply_table([entry(source, V1, "1.0.0", 100)])
    running = router.pick("greeter")  # a request in flight on 1.0.0
    report = await router.apply_table([entry(source, V2, "2.0.0", 100)])
    assert report.retired == ("greeter@1.0.0",)
    assert router.retiring == (running,) and running.retired
    assert serve(router) == ("2.0.0", 2)  # new requests go to the new table at once
    loaded = running.loaded
    assert loaded.invoke(loaded.prepare("version", [])).value == 1  # the old one still runs
    router.release(running)
    assert router.retiring == ()


async def test_a_version_that_fails_to_load_is_reported_and_the_rest_applies(
    router: Router, source: DirectorySource
) -> None:
    bad = ModuleEntry(module="broken", version="1.0.0", digest="sha256:" + "1" * 64)
    report = await router.apply_table([bad, entry(source, V1, "1.0.0", 100)])
    assert "is not in" in report.failed["broken@1.0.0"]
    assert serve(router) == ("1.0.0", 1)
    with pytest.raises(NotFoundError):
        router.pick("broken")


async def test_a_failed_reload_keeps_the_loaded_version(router: Router, source: DirectorySource) -> None:
    await router.apply_table([entry(source, V1, "1.0.0", 100)])
    changed = ModuleEntry(module="greeter", version="1.0.0", digest="sha256:" + "2" * 64)
    report = await router.apply_table([changed])
    assert "greeter@1.0.0" in report.failed
    assert serve(router) == ("1.0.0", 1)


async def test_duplicate_entries_are_refused(router: Router, source: DirectorySource) -> None:
    one = entry(source, V1, "1.0.0", 100)
    report = await router.apply_table([one, one])
    assert report.failed == {"greeter@1.0.0": "listed twice in the table"}


async def test_a_health_check_must_name_a_callable_export(router: Router, source: DirectorySource) -> None:
    bad = entry(source, V1, "1.0.0", 100, healthCheck={"function": "health"})
    report = await router.apply_table([bad])
    assert "healthCheck.function 'health'" in report.failed["greeter@1.0.0"]


async def test_metric_deltas_count_each_request_once(router: Router, source: DirectorySource) -> None:
    await router.apply_table([entry(source, V1, "1.0.0", 100)])
    slot = router.slots()[0]
    slot.record("ok", 0.3)
    slot.record("trap", 2.0)
    slot.record("timeout", 30.0)
    (delta,) = router.metrics_delta()
    assert (delta.requests, delta.errors, delta.traps, delta.timeouts) == (3, 2, 1, 1)
    assert sum(delta.latency_buckets) == 3
    assert router.metrics_delta() == []
    slot.record("memory", 1.0)
    slot.record("cpu", 1.0)
    (delta,) = router.metrics_delta()
    assert (delta.requests, delta.memory, delta.cpu) == (2, 1, 1)


async def test_counts_of_a_drained_version_still_ship(router: Router, source: DirectorySource) -> None:
    await router.apply_table([entry(source, V1, "1.0.0", 100)])
    running = router.pick("greeter")
    await router.apply_table([entry(source, V2, "2.0.0", 100)])
    running.record("ok", 1.0)
    router.release(running)
    assert [(m.version, m.requests) for m in router.metrics_delta()] == [("1.0.0", 1)]


def test_a_versions_last_error_travels_with_its_metrics_through_workers() -> None:
    from edge.counters import Counters
    from edge.supervisor import add_metrics, as_metrics

    worker = Counters(requests=3, traps=1, last_error="trap: wasm trap: wasm `unreachable` instruction executed")
    node = Counters()
    add_metrics(node, as_metrics(("m", "1.0.0"), worker))  # a worker's delta into the node's counters
    shipped = as_metrics(("m", "1.0.0"), node.minus(Counters()))
    assert shipped.errors == 1 and shipped.last_error == worker.last_error
    healthy = as_metrics(("m", "1.0.0"), Counters(requests=5, last_error=worker.last_error))
    assert healthy.last_error is None  # only a period with errors quotes one
    long = as_metrics(("m", "1.0.0"), Counters(requests=1, traps=1, last_error="x" * 5000))
    assert long.last_error is not None and len(long.last_error) == 300


def test_a_served_call_counts_and_charges_as_a_recorded_ok_does() -> None:
    from edge.counters import Counters

    fast, slow = Counters(), Counters()
    for duration_ms, violations in ((0.01, 0), (3.0, 1), (250.0, 0), (1e9, 2)):
        fast.ok(duration_ms, violations)
        slow.record("ok", duration_ms, violations)
    assert fast == slow and fast.requests == 4 and fast.violations == 3 and fast.errors == 0
