"""Module health checks (`edge.health`): after load and every `intervalSeconds` while the version
stays loaded, counted in the heartbeat's metrics and in /metrics, traced as `wasm.health.check` >
`wasm.function.invoke`, stopped when the version is retired and when the router closes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from edge import telemetry, wasm
from edge.metrics import prometheus_lines
from edge.protocol import ModuleEntry, VersionMetrics
from edge.router import Router, VersionSlot
from edge.runtime import Runtime
from edge.server import Node, NodeConfig, build_app
from edge.standalone import DirectorySource
from tests.e2e.cluster import poll

# `health` passes twice on an instance, then traps. A trap discards the instance, so on the next
# one it passes twice again: pass, pass, fail, pass, pass, fail, ...
FLAKY = """(module
  (global $calls (mut i32) (i32.const 0))
  (func (export "health") (result i32)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (if (i32.gt_u (global.get $calls) (i32.const 2)) (then unreachable))
    i32.const 0)
  (func (export "version") (result i32) i32.const 1))"""
HEALTHY = """(module
  (func (export "health") (result i32) i32.const 0)
  (func (export "version") (result i32) i32.const 2))"""


@pytest.fixture
async def router(runtime: Runtime, tmp_path: Path) -> AsyncIterator[Router]:
    router = Router(runtime, DirectorySource(tmp_path))
    yield router
    await router.close()


def entry(router: Router, wat: str, version: str, interval: float = 0.05, **kw: object) -> ModuleEntry:
    source = router.source
    assert isinstance(source, DirectorySource)
    digest = source.add(wasm.compile_wat(wat))
    check = {"function": "health", "intervalSeconds": interval}
    return ModuleEntry.model_validate(
        {"module": "greeter", "version": version, "digest": digest, "healthCheck": check, **kw}
    )


def slot(router: Router, version: str) -> VersionSlot:
    found = router.routes["greeter"].by_version(version)
    assert found is not None
    return found


def health_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("health ")]


# -- runs, counted in heartbeats ---------------------------------------------------------------


async def test_a_health_check_that_starts_failing_is_reported_in_the_next_heartbeat_metrics(router: Router) -> None:
    await router.apply_table([entry(router, FLAKY, "1.0.0")])
    shipped: list[VersionMetrics] = []

    def failed() -> bool:
        shipped.extend(router.metrics_delta())  # what the agent's next heartbeat carries
        return any(m.health_failures for m in shipped)

    await poll(failed, "a heartbeat delta with a failed health check")
    assert {(m.module, m.version) for m in shipped} == {("greeter", "1.0.0")}
    assert sum(m.health_checks for m in shipped) >= 3  # after load, then twice more before the trap
    assert sum(m.health_failures for m in shipped) >= 1
    assert sum(m.requests for m in shipped) == 0 and sum(m.errors for m in shipped) == 0  # not traffic
    report = next(m for m in shipped if m.health_failures)
    assert report.last_error is not None
    assert report.last_error.startswith("health check health failed: trap: ")
    wire = report.model_dump(mode="json", by_alias=True)
    assert wire["healthFailures"] == report.health_failures and wire["healthChecks"] >= 1


async def test_the_check_runs_every_interval_seconds_of_its_entry(router: Router) -> None:
    await router.apply_table([entry(router, HEALTHY, "1.0.0", interval=0.05)])
    often = slot(router, "1.0.0")
    await poll(lambda: often.counters.health_checks >= 3, "three runs 0.05 s apart")
    assert often.counters.health_failures == 0

    await router.apply_table(
        [entry(router, HEALTHY, "1.0.0", interval=0.05), entry(router, FLAKY, "2.0.0", interval=3600, weight=0)]
    )
    rarely = slot(router, "2.0.0")
    seen = often.counters.health_checks
    await poll(lambda: often.counters.health_checks >= seen + 3, "three more runs of the frequent check")
    assert rarely.counters.health_checks == 1  # only the one after its load: its next is an hour away


async def test_a_passing_version_reports_nothing_about_health_while_it_has_no_check(router: Router) -> None:
    source = router.source
    assert isinstance(source, DirectorySource)
    digest = source.add(wasm.compile_wat(HEALTHY))
    await router.apply_table([ModuleEntry(module="greeter", version="1.0.0", digest=digest)])
    assert slot(router, "1.0.0").checks is None and health_tasks() == []
    assert router.metrics_delta() == []  # no requests, no checks: nothing to ship


# -- lifecycle ---------------------------------------------------------------------------------


async def test_a_retired_version_stops_its_checks_even_while_requests_finish(router: Router) -> None:
    await router.apply_table([entry(router, HEALTHY, "1.0.0")])
    old = slot(router, "1.0.0")
    await poll(lambda: old.counters.health_checks >= 2, "a periodic run")
    running = router.pick("greeter")  # a request in flight keeps the version loaded after it is retired
    task = old.checks
    assert task is not None

    await router.apply_table([entry(router, HEALTHY, "2.0.0")])
    assert router.retiring == (old,)
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled() and old.checks is None
    assert [t.get_name() for t in health_tasks()] == ["health greeter@2.0.0"]
    router.release(running)


async def test_a_kept_version_whose_health_check_changed_checks_the_new_way(router: Router) -> None:
    await router.apply_table([entry(router, HEALTHY, "1.0.0", interval=3600)])
    kept = slot(router, "1.0.0")
    before = kept.checks
    assert before is not None
    await router.apply_table([entry(router, HEALTHY, "1.0.0", interval=0.05)])
    assert slot(router, "1.0.0") is kept
    await asyncio.gather(before, return_exceptions=True)
    assert before.cancelled() and kept.checks is not before
    await poll(lambda: kept.counters.health_checks >= 3, "runs at the new interval")


async def test_a_node_shutting_down_stops_every_check(runtime: Runtime, tmp_path: Path) -> None:
    router = Router(runtime, DirectorySource(tmp_path))
    node = Node(runtime, router, NodeConfig())
    app = build_app(node)
    app.freeze()  # as a running server's app is
    await router.apply_table([entry(router, HEALTHY, "1.0.0")])
    assert len(health_tasks()) == 1
    await app.shutdown()  # what aiohttp runs on SIGINT/SIGTERM, before its cleanup
    assert health_tasks() == []
    node.close()


async def test_closing_the_router_stops_every_check(runtime: Runtime, tmp_path: Path) -> None:
    router = Router(runtime, DirectorySource(tmp_path))
    await router.apply_table([entry(router, HEALTHY, "1.0.0"), entry(router, FLAKY, "2.0.0", weight=0)])
    assert len(health_tasks()) == 2
    await router.close()
    assert health_tasks() == []


# -- metrics and traces ------------------------------------------------------------------------


async def test_runs_and_failures_are_in_the_nodes_prometheus_metrics(router: Router) -> None:
    await router.apply_table([entry(router, FLAKY, "1.0.0")])
    flaky = slot(router, "1.0.0")
    await poll(lambda: flaky.counters.health_failures >= 1, "a failed run")
    await router.close()  # the counts stand still from here
    serving = [telemetry.Serving(m) for _, m in router.metrics_total()]
    text = "\n".join(prometheus_lines(telemetry.node_reading(router.stats, serving, node_id="n", modules=1)))
    labels = '{module="greeter",version="1.0.0"}'
    assert f"wasm_health_checks_total{labels} {flaky.counters.health_checks}" in text
    assert f"wasm_health_checks_failed_total{labels} {flaky.counters.health_failures}" in text


def test_health_counts_go_on_the_wire_only_when_there_are_some() -> None:
    quiet = VersionMetrics(module="m", version="1", requests=3)
    assert "healthChecks" not in quiet.model_dump(by_alias=True)
    assert "healthChecks" not in quiet.model_dump_json(by_alias=True)
    checked = VersionMetrics(module="m", version="1", health_checks=2, health_failures=1)
    assert VersionMetrics.model_validate_json(checked.model_dump_json(by_alias=True)) == checked


@pytest.fixture
def spans() -> Iterator[Callable[[str], list[ReadableSpan]]]:
    memory = InMemorySpanExporter()
    tracing = telemetry.configure_tracing("edge-test-1", ratio=0.0, exporter=memory, environ={})

    def named(name: str) -> list[ReadableSpan]:
        assert tracing.provider is not None
        tracing.provider.force_flush()
        return [s for s in memory.get_finished_spans() if s.name == name]

    yield named
    telemetry.configure_tracing("standalone", environ={})


async def test_each_periodic_run_is_a_health_check_span_over_its_invoke_span(
    router: Router, spans: Callable[[str], list[ReadableSpan]]
) -> None:
    await router.apply_table([entry(router, FLAKY, "1.0.0")])
    flaky = slot(router, "1.0.0")
    await poll(lambda: flaky.counters.health_failures >= 1, "a failed run")
    await router.close()
    (load,) = spans("wasm.module.load")
    checks = spans("wasm.health.check")
    invokes = {s.parent.span_id: s for s in spans("wasm.function.invoke") if s.parent is not None}
    # The one after load is under the load span; a run the close cancelled has a span and no count.
    assert len(checks) - (flaky.counters.health_checks - 1) in (0, 1)
    assert load.context is not None and load.context.span_id in invokes
    for check in checks:
        assert check.context is not None and check.parent is None  # a trace of its own, not the load's
        invoke = invokes[check.context.span_id]
        assert invoke.context is not None and invoke.context.trace_id == check.context.trace_id
        assert invoke.attributes is not None and invoke.attributes["wasm.function.health_check"] is True
        assert check.attributes is not None and check.attributes["wasm.module.id"] == "greeter-v1.0.0"
        assert check.status.status_code == invoke.status.status_code
    failed = [c for c in checks if c.status.status_code is StatusCode.ERROR]
    assert len(failed) == flaky.counters.health_failures
    assert failed[0].status.description is not None and failed[0].status.description.startswith("trap: ")
