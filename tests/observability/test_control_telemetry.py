"""The control plane's telemetry without a cluster: spans per transition and the traceparents the
hub publishes with them, registry metrics from the registry, cumulative node metrics, the
metrics text, and the log formats."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased
from prometheus_client.parser import text_string_to_metric_families

from edge import wasm
from edge.protocol import VersionMetrics
from reconciler.apply import telemetry
from reconciler.apply.controller import Controller
from reconciler.apply.nodes import NodeHub
from reconciler.apply.registry import Registry
from reconciler.planner import AdvanceStep, Pause, Promote, Rollback, SetAssignment, StartRollout, StepKind
from reconciler.spec.approvals import Approval, RejectedApproval
from reconciler.store.blobs import open_blob_store
from reconciler.store.state import open_state_store
from tests.observability.otlp import OtlpReceiver

CALC = Path(__file__).resolve().parents[2] / "fleet-example" / "wasm" / "calc-1.0.0.wat"


def traced() -> tuple[telemetry.Telemetry, InMemorySpanExporter]:
    plane = telemetry.Telemetry(environ={})
    memory = InMemorySpanExporter()
    plane.add_exporter(SimpleSpanProcessor(memory))
    return plane, memory


def test_each_transition_is_a_span_and_its_traceparent_goes_with_the_tables() -> None:
    plane, memory = traced()
    actions = [
        StartRollout("calc-2", "calc", "1.0.0", "1.1.0", "blue-green"),
        SetAssignment("edge-1", ()),
        AdvanceStep("calc-2", "calc", 0, StepKind.PREVIEW, 0),
        Pause("wc-1", "wc", "NoTraffic", "no requests"),
        Rollback("greeter-3", "greeter", "1.0.0", "AnalysisFailed", "error rate 0.5"),
    ]
    with plane.deployments.step_spans(actions, lambda rollout: None) as traces:
        assert set(traces) == {"calc", "greeter"}
    spans = {s.name: s for s in memory.get_finished_spans()}
    assert set(spans) == {"wasm.deployment.create", "wasm.deployment.execute", "wasm.deployment.rollback"}
    create, step = spans["wasm.deployment.create"], spans["wasm.deployment.execute"]
    assert create.attributes is not None and create.attributes["wasm.module.id"] == "calc-v1.1.0"
    assert create.attributes["wasm.deployment.from_version"] == "1.0.0"
    assert step.attributes is not None and step.attributes["wasm.deployment.step"] == 0
    assert step.attributes["wasm.deployment.step_kind"] == "Preview"
    assert [link.context for link in step.links] == [create.context]
    assert step.context is not None
    assert traces["calc"].startswith(f"00-{step.context.trace_id:032x}-{step.context.span_id:016x}-")
    assert int(traces["calc"][-2:], 16) & 1  # sampled: the nodes record their spans
    rollback = spans["wasm.deployment.rollback"]
    assert rollback.attributes is not None and rollback.attributes["wasm.deployment.reason"] == "AnalysisFailed"


def test_a_promotion_is_a_step_of_its_own_trace() -> None:
    plane, memory = traced()
    with plane.deployments.step_spans([Promote("calc-2", "calc", "1.1.0")], lambda rollout: None) as traces:
        pass
    (span,) = memory.get_finished_spans()
    assert span.name == "wasm.deployment.execute" and span.parent is None
    assert span.attributes is not None and span.attributes["wasm.deployment.promoted"] is True
    assert "calc" in traces


def test_registry_metrics_count_each_new_version(tmp_path: Path) -> None:
    plane, memory = traced()
    registry = Registry(
        open_state_store(data_dir=tmp_path),
        open_blob_store(None, tmp_path),
        tracer=plane.tracer("hotswap.registry"),
        observer=plane.registry_metrics,
    )
    data = wasm.compile_wat(CALC.read_text())
    registry.register("calc", "1.0.0", data)
    registry.register("calc", "1.0.0", data)  # the same bytes again: not a new registration
    assert plane.registry_metrics.registered == 1
    assert plane.registry_metrics.sizes.total == len(data)
    assert sum(plane.registry_metrics.load_ms.counts) == 1
    names = [s.name for s in memory.get_finished_spans()]
    assert names.count("wasm.module.register") == 2 and names.count("wasm.module.validate") == 1


def test_registry_metrics_count_what_the_trace_sampler_drops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Counted where the registry knows the result, not from its spans: a sampler below 1 must not undercount.
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    plane = telemetry.Telemetry()
    memory = InMemorySpanExporter()
    plane.add_exporter(SimpleSpanProcessor(memory))
    registry = Registry(
        open_state_store(data_dir=tmp_path),
        open_blob_store(None, tmp_path),
        tracer=plane.tracer("hotswap.registry"),
        observer=plane.registry_metrics,
    )
    registry.register("calc", "1.0.0", wasm.compile_wat(CALC.read_text()))
    assert memory.get_finished_spans() == ()  # sampled out
    assert plane.registry_metrics.registered == 1


def versions(requests: int, errors: int) -> VersionMetrics:
    return VersionMetrics(
        module="calc",
        version="1.0.0",
        requests=requests,
        errors=errors,
        latency_buckets=(requests,),
        latency_sum_ms=0.5,
    )


def families(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def test_node_metrics_add_up_across_heartbeats_and_render() -> None:
    plane = telemetry.Telemetry(environ={})
    plane.window.add(1.0, "us-east", [versions(3, 1)])
    plane.window.add(2.0, "eu-central", [versions(2, 0)])
    assert plane.window.since("calc", "1.0.0", "us-east", 0).requests == 3  # the window still works
    assert telemetry.fit((1, 2, 3), 2) == (1, 5) and telemetry.fit((1,), 3) == (1, 0, 0)
    parsed = families(telemetry.render_metrics(plane, (), (), modules=2))
    assert parsed["wasm_functions_invoked"] == [
        ("wasm_functions_invoked_total", {"module": "calc", "version": "1.0.0"}, 5.0)
    ]
    assert parsed["wasm_functions_failed"][0][2] == 1.0
    count = [s for s in parsed["wasm_function_invoke_duration"] if s[0].endswith("_count")]
    assert count[0][2] == 5.0
    assert parsed["wasm_modules_count"] == [("wasm_modules_count", {}, 2.0)]
    assert parsed["wasm_edge_nodes_count"] == [("wasm_edge_nodes_count", {}, 0.0)]


def test_the_sampler_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(telemetry.sampler_from_env({}), ParentBased)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    plane = telemetry.Telemetry()
    with plane.tracer("t").start_as_current_span("x") as span:
        assert not span.is_recording()


def test_an_otlp_endpoint_adds_an_exporter() -> None:
    plane = telemetry.Telemetry(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    processors = plane.provider._active_span_processor._span_processors
    assert [type(p).__name__ for p in processors] == ["BatchSpanProcessor"]  # the OTLP exporter
    plane.shutdown()


def test_json_lines_carry_the_span_trace_id_and_extra_ids() -> None:
    plane, _ = traced()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(telemetry.JsonFormatter())
    logger = logging.getLogger("test.control.telemetry")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with plane.tracer("t").start_as_current_span("wasm.deployment.execute") as span:
            logger.warning("StepStarted: calc", extra={"deploymentId": "calc-2", "moduleName": "calc"})
        logger.error("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["traceId"] == f"{span.get_span_context().trace_id:032x}"
    assert (inside["deploymentId"], inside["moduleName"], inside["level"]) == ("calc-2", "calc", "WARNING")
    assert "traceId" not in outside


def test_setup_logging_picks_the_format() -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        root.handlers[:] = []
        assert telemetry.setup_logging("info", "text") == "text"
        assert not isinstance(root.handlers[0].formatter, telemetry.JsonFormatter)
        text_handler = root.handlers[0]
        assert telemetry.setup_logging("debug", "json") == "json"
        assert root.handlers == [text_handler] and root.level == logging.DEBUG  # logging set up: kept
        root.handlers[:] = []
        assert telemetry.setup_logging("info", None) == "json"  # not a terminal
        assert isinstance(root.handlers[0].formatter, telemetry.JsonFormatter)
        assert telemetry.log_format(None, {"HOTSWAP_LOG_FORMAT": "text"}) == "text"
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_approvals_from_git_reach_the_audit_log_once(tmp_path: Path) -> None:
    store = open_state_store(data_dir=tmp_path)
    approval = Approval("calc", "1.1.0", "alice@example.com", frozenset({"admin"}), "a" * 40)
    rejected = RejectedApproval("calc", "1.1.0", "b" * 40, "", "unsigned")
    audit = telemetry.ApprovalAudit(store)
    assert audit.record([approval], [rejected]) == 2
    assert audit.record([approval], [rejected]) == 0
    assert telemetry.ApprovalAudit(store).record([approval], []) == 0  # a restart reads what is there
    lines = store.audit_log(subject="calc@1.1.0")
    assert [(e.action, e.actor) for e in lines] == [
        ("approval.found", "alice@example.com"),
        ("approval.rejected", "unknown"),
    ]
    assert lines[0].detail["commit"] == "a" * 40 and lines[1].detail["reason"] == "unsigned"


def test_controller_events_log_with_their_ids_at_every_level(tmp_path: Path) -> None:
    store = open_state_store(data_dir=tmp_path)
    registry = Registry(store, open_blob_store(None, tmp_path))

    class NoSource:
        latest = None

        def fleet_at(self, sha: str) -> None:
            return None

    controller = Controller(store=store, registry=registry, source=NoSource(), hub=NodeHub(store))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(telemetry.JsonFormatter())
    logger = logging.getLogger("hotswap.controller")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        controller.executor.event("RolledBack", "calc: back to 1.0.0", "calc", "calc-2", warning=True)
        controller.executor.event("Promoted", "calc: 1.1.0 is stable", "calc", "calc-3")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    warned, informed = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (warned["level"], warned["moduleName"], warned["deploymentId"]) == ("WARNING", "calc", "calc-2")
    assert informed["deploymentId"] == "calc-3"


async def test_metrics_go_out_over_otlp_when_an_endpoint_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = OtlpReceiver()
    url = await receiver.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
        plane = telemetry.Telemetry()
        plane.window.add(1.0, "us-east", [versions(3, 1)])
        assert plane.export_metrics(lambda: telemetry.plane_samples(plane, (), (), 2), "control-test")
        await asyncio.to_thread(plane.meters.force_flush)
        names = receiver.metric_names("control-test")
        assert {"wasm.functions.invoked.total", "wasm.modules.count", "wasm.edge_nodes.healthy"} <= names
        await asyncio.to_thread(plane.shutdown)
    finally:
        await receiver.stop()
    assert not telemetry.Telemetry(environ={}).export_metrics(list, "off")


def test_the_cumulative_totals_add_every_count_of_every_report() -> None:
    """/metrics' totals per version add every count a node reports (sandbox refusals and health
    check runs too), saturating where a report's own count would, and keep the latest error."""
    window = telemetry.CountingWindow()
    one = VersionMetrics(module="m", version="1", requests=2, violations=1, health_checks=3, health_failures=1)
    two = VersionMetrics(module="m", version="1", requests=1, violations=2, health_checks=1, last_error="trap: x")
    window.add(0.0, "r", [one])
    window.add(1.0, "r", [two])
    total = window.totals["m", "1"]
    assert (total.requests, total.violations, total.health_checks, total.health_failures) == (3, 3, 4, 1)
    assert total.last_error == "trap: x"
