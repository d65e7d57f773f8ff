"""The edge node's telemetry in one process: which execute calls get a span, load and health-check
spans under the deployment step's traceparent, the JSON and text log formats, sampling settings."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client.parser import text_string_to_metric_families

from edge import telemetry, wasm
from edge.protocol import HealthCheck, ModuleEntry
from edge.router import Router
from edge.runtime import Runtime
from edge.server import Node, NodeConfig, start
from tests.observability.otlp import OtlpReceiver

CALC = Path(__file__).resolve().parents[2] / "fleet-example" / "wasm" / "calc-1.0.0.wat"


class Blobs:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def add(self, data: bytes) -> str:
        digest = wasm.sha256_digest(data)
        self.data[digest] = data
        return digest

    async def fetch(self, digest: str) -> bytes:
        return self.data[digest]


class Exported:
    """The spans one test's node exported (tracing is process-wide: turned off again after)."""

    def __init__(self, ratio: float) -> None:
        self.memory = InMemorySpanExporter()
        self.tracing = telemetry.configure_tracing("edge-test-1", ratio=ratio, exporter=self.memory, environ={})

    def spans(self, name: str) -> list[telemetry.trace.Span]:
        self.tracing.provider.force_flush()  # type: ignore[union-attr]
        return [s for s in self.memory.get_finished_spans() if s.name == name]  # type: ignore[misc]


@pytest.fixture
def exported() -> Iterator[type[Exported]]:
    yield Exported
    telemetry.configure_tracing("standalone", environ={})


def calc_entry(blobs: Blobs, check: str = "health") -> ModuleEntry:
    digest = blobs.add(wasm.compile_wat(CALC.read_text()))
    return ModuleEntry(module="calc", version="1.0.0", digest=digest, health_check=HealthCheck(function=check))


@pytest.fixture
async def node() -> AsyncIterator[tuple[Router, str]]:
    blobs = Blobs()
    runtime = Runtime()
    router = Router(runtime, blobs)
    await router.apply_table([calc_entry(blobs)], 1)
    server = Node(runtime, router, NodeConfig(threads=1, node_id="edge-test-1"))
    runner, port = await start(server, "127.0.0.1", 0)
    try:
        yield router, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        runtime.close()


async def post(url: str, traceparent: str | None = None) -> int:
    headers = {"traceparent": traceparent} if traceparent else {}
    body = {"module": "calc", "function": "add", "args": [1, 2]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/api/v1/wasm/execute", json=body, headers=headers) as response,
    ):
        await response.read()
        return response.status


def parent() -> tuple[str, str]:
    return secrets.token_hex(16), secrets.token_hex(8)


async def test_a_sampled_caller_gets_a_child_span_and_an_unsampled_one_none(
    node: tuple[Router, str], exported: type[Exported]
) -> None:
    _, url = node
    traces = exported(ratio=0.0)
    trace_id, span_id = parent()
    assert await post(url, f"00-{trace_id}-{span_id}-01") == 200
    assert await post(url, f"00-{parent()[0]}-{parent()[1]}-00") == 200
    assert await post(url) == 200  # no parent, ratio 0: not traced
    spans = traces.spans("wasm.function.invoke")
    assert len(spans) == 1
    (span,) = spans
    assert format(span.context.trace_id, "032x") == trace_id  # type: ignore[attr-defined]
    assert format(span.parent.span_id, "016x") == span_id  # type: ignore[attr-defined]
    assert span.attributes["wasm.module.id"] == "calc-v1.0.0"  # type: ignore[attr-defined]
    assert span.attributes["wasm.edge_node.id"] == "edge-test-1"  # type: ignore[attr-defined]


async def test_calls_without_a_parent_are_traced_at_the_ratio(
    node: tuple[Router, str], exported: type[Exported]
) -> None:
    _, url = node
    traces = exported(ratio=1.0)
    for _ in range(3):
        assert await post(url) == 200
    assert len(traces.spans("wasm.function.invoke")) == 3


async def test_tracing_off_samples_nothing(node: tuple[Router, str]) -> None:
    _, url = node
    assert not telemetry.TRACING.enabled
    assert not telemetry.TRACING.sample(f"00-{parent()[0]}-{parent()[1]}-01")
    assert await post(url) == 200


async def test_a_load_joins_the_step_trace_with_its_health_check_under_it(exported: type[Exported]) -> None:
    traces = exported(ratio=0.0)
    blobs = Blobs()
    with Runtime() as runtime:
        router = Router(runtime, blobs)
        trace_id, span_id = parent()
        report = await router.apply_table([calc_entry(blobs)], 1, {"calc": f"00-{trace_id}-{span_id}-01"})
        assert report.loaded == ("calc@1.0.0",)
        (load,) = traces.spans("wasm.module.load")
        assert format(load.context.trace_id, "032x") == trace_id  # type: ignore[attr-defined]
        assert format(load.parent.span_id, "016x") == span_id  # type: ignore[attr-defined]
        (check,) = traces.spans("wasm.function.invoke")
        assert check.parent.span_id == load.context.span_id  # type: ignore[attr-defined]
        assert check.status.status_code is not StatusCode.ERROR  # type: ignore[attr-defined]
        assert router.stats.loads == 1 and router.stats.tables == 1


async def test_a_failing_health_check_is_marked_and_does_not_stop_the_load(exported: type[Exported]) -> None:
    traces = exported(ratio=0.0)
    blobs = Blobs()
    with Runtime() as runtime:
        router = Router(runtime, blobs)
        report = await router.apply_table([calc_entry(blobs, check="add")], 1)  # add needs two arguments
        assert report.loaded == ("calc@1.0.0",)
        (check,) = traces.spans("wasm.function.invoke")
        assert check.status.status_code is StatusCode.ERROR  # type: ignore[attr-defined]
        (load,) = traces.spans("wasm.module.load")
        assert load.parent is None  # no traceparent: a trace of its own


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.telemetry.{secrets.token_hex(4)}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, stream


def test_json_lines_carry_the_request_trace_and_the_known_ids() -> None:
    logger, stream = capture(telemetry.JsonFormatter(edgeNodeId="edge-1"))
    trace_id, span_id = parent()
    token = telemetry.REQUEST_TRACEPARENT.set(f"00-{trace_id}-{span_id}-00")
    try:
        with telemetry.log_context(moduleId="calc-v1.0.0"):
            logger.warning("trap in %s", "add", extra={"deploymentId": "calc-7"})
    finally:
        telemetry.REQUEST_TRACEPARENT.reset(token)
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "trap in add" and first["level"] == "WARNING"
    assert first["traceId"] == trace_id
    assert (first["edgeNodeId"], first["moduleId"], first["deploymentId"]) == ("edge-1", "calc-v1.0.0", "calc-7")
    assert first["timestamp"].endswith("Z")
    assert "traceId" not in second and "ValueError: boom" in second["exception"]


def test_text_lines_name_the_trace_when_there_is_one() -> None:
    logger, stream = capture(telemetry.TextFormatter())
    trace_id, span_id = parent()
    token = telemetry.REQUEST_TRACEPARENT.set(f"00-{trace_id}-{span_id}-01")
    try:
        logger.info("hello")
    finally:
        telemetry.REQUEST_TRACEPARENT.reset(token)
    logger.info("plain")
    first, second = stream.getvalue().splitlines()
    assert first.endswith(f"hello [trace {trace_id}]") and second.endswith("plain")


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        ("json", {}, "json"),
        ("text", {"HOTSWAP_LOG_FORMAT": "json"}, "text"),
        (None, {"HOTSWAP_LOG_FORMAT": "text"}, "text"),
    ],
)
def test_the_log_format_comes_from_the_flag_then_the_environment(
    flag: str | None, env: dict[str, str], expected: str
) -> None:
    assert telemetry.log_format(flag, env) == expected


def test_without_a_choice_a_pipe_gets_json() -> None:
    assert telemetry.log_format(None, {}) == "json"  # pytest captures stdout: not a terminal


def test_setup_logging_installs_one_handler_in_the_format() -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        root.handlers[:] = []
        assert telemetry.setup_logging("warning", "json", edgeNodeId="n") == "json"
        assert len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, telemetry.JsonFormatter)
        assert root.level == logging.WARNING
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.parametrize(
    ("ratio", "env", "expected"),
    [
        (None, {}, 0.01),
        (0.5, {"OTEL_TRACES_SAMPLER": "always_off"}, 0.5),
        (None, {"OTEL_TRACES_SAMPLER": "parentbased_always_off"}, 0.0),
        (None, {"OTEL_TRACES_SAMPLER": "always_on"}, 1.0),
        (None, {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}, 0.25),
        (None, {"OTEL_TRACES_SAMPLER_ARG": "lots"}, 0.01),
        (None, {"OTEL_TRACES_SAMPLER_ARG": "7"}, 1.0),
        (None, {"OTEL_TRACES_SAMPLER_ARG": "nan"}, 0.01),
    ],
)
def test_the_execute_sampling_ratio(ratio: float | None, env: dict[str, str], expected: float) -> None:
    assert telemetry.sampler_ratio(ratio, env) == expected


def test_tracing_is_on_only_with_an_endpoint_and_not_disabled() -> None:
    try:
        assert not telemetry.configure_tracing("n", environ={}).enabled
        endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
        assert not telemetry.configure_tracing("n", environ={**endpoint, "OTEL_SDK_DISABLED": "true"}).enabled
        on = telemetry.configure_tracing("n", environ=endpoint)
        assert on.enabled and on.ratio == 0.01
        assert not on.sample("00-short-01")  # a malformed parent is no parent to follow
    finally:
        telemetry.configure_tracing("standalone", environ={})


async def test_node_metrics_render_and_go_out_over_otlp(
    node: tuple[Router, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    router, url = node
    assert await post(url) == 200
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        text = await response.text()
    found = {f.name: f for f in text_string_to_metric_families(text)}
    assert found["wasm_modules_registered"].samples[0].value == 1  # calc, loaded once
    assert found["wasm_deployments_executed"].samples[0].value == 1
    count = [s for s in found["wasm_function_invoke_duration"].samples if s.name.endswith("_count")]
    assert count[0].value == 1 and count[0].labels == {"module": "calc", "version": "1.0.0"}
    assert found["wasm_edge_node_memory_used_mb"].samples[0].value > 0

    receiver = OtlpReceiver()
    endpoint = await receiver.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        versions = [m for _, m in router.metrics_total()]
        meters = telemetry.start_metric_export(
            lambda: telemetry.node_samples(router.stats, versions, "edge-test-1"),
            service="hotswap-edge",
            instance="edge-test-1",
        )
        await asyncio.to_thread(meters.force_flush)
        await asyncio.to_thread(meters.shutdown)
        assert set(telemetry.COUNTERS) | set(telemetry.GAUGES) <= receiver.metric_names("edge-test-1")
    finally:
        await receiver.stop()
    assert telemetry.start_metric_export(list, service="s", instance="i", environ={}) is None


async def test_a_sampled_call_that_fails_is_answered_as_json_and_its_span_says_why(
    node: tuple[Router, str], exported: type[Exported]
) -> None:
    _, url = node
    traces = exported(ratio=1.0)
    body = {"module": "nope", "function": "add", "args": [1, 2]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/api/v1/wasm/execute", json=body) as response,
    ):
        answer = await response.json()
    assert response.status == 404 and answer["error"] == "not_found" and "'nope'" in answer["message"]
    (span,) = traces.spans("wasm.function.invoke")
    # The failure left the handler inside the span: recorded there, then answered by the route.
    assert span.status.status_code is StatusCode.ERROR  # type: ignore[attr-defined]
    assert [e.attributes["exception.type"] for e in span.events] == ["edge.errors.NotFoundError"]  # type: ignore[attr-defined]
