"""End to end: a rollout step is one trace across the control plane and an edge node process; both
serve every metric the spec names in Prometheus text; the node's logs are JSON lines that carry the
trace id of the request that caused them; the audit log answers from the API.

The control plane runs in this event loop with an in-memory span exporter; the node is a real
process exporting over OTLP/HTTP to a real receiver (tests/observability/otlp.py).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import call
from tests.e2e.cluster import Cluster, poll, start_cluster, stop_cluster
from tests.observability.otlp import OtlpReceiver

NODE = "edge-us-east-1"
SMOKE_LINES = "  smoke:\n    - {function: add, args: [3, 2], expect: 5}\n"  # fleet-example's calc smoke check
COUNTERS = (
    "wasm.modules.registered.total",
    "wasm.deployments.executed.total",
    "wasm.deployments.failed.total",
    "wasm.functions.invoked.total",
    "wasm.functions.failed.total",
)
HISTOGRAMS = (
    "wasm.module.load.duration",
    "wasm.function.invoke.duration",
    "wasm.deployment.duration",
    "wasm.module.size.bytes",
)
GAUGES = (
    "wasm.modules.count",
    "wasm.edge_nodes.count",
    "wasm.edge_nodes.healthy",
    "wasm.modules.deployed.per_node",
    "wasm.edge_node.memory.used.mb",
    "wasm.edge_node.cpu.percent",
)


def prometheus(name: str) -> str:
    return name.replace(".", "_")


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@pytest.fixture
async def traced(
    tmp_path: Path, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Cluster, InMemorySpanExporter]]:
    """A control plane with an in-memory span exporter, and one node exporting to the receiver."""
    cluster = await start_cluster(tmp_path, [])
    memory = InMemorySpanExporter()
    cluster.plane.telemetry.add_exporter(SimpleSpanProcessor(memory))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    monkeypatch.setenv("HOTSWAP_LOG_FORMAT", "json")
    try:
        cluster.start_node(NODE, "us-east")
        await cluster.wait_ready(1)
        await cluster.wait_all_serving("calc", "1.0.0", [NODE])
        yield cluster, memory
    finally:
        await stop_cluster(cluster)


def _finished(memory: InMemorySpanExporter, name: str, **attributes: object) -> list[ReadableSpan]:
    return [
        s
        for s in memory.get_finished_spans()
        if s.name == name and all((s.attributes or {}).get(k) == v for k, v in attributes.items())
    ]


async def execute(cluster: Cluster, body: dict[str, object], traceparent: str) -> int:
    url = cluster.node_urls()[NODE]
    headers = {**cluster.edge_headers("developer"), **({"traceparent": traceparent} if traceparent else {})}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/api/v1/wasm/execute", json=body, headers=headers) as response,
    ):
        await response.read()
        return response.status


async def test_a_rollout_step_is_one_trace_across_control_plane_and_node(
    traced: tuple[Cluster, InMemorySpanExporter], receiver: OtlpReceiver
) -> None:
    cluster, memory = traced
    cluster.repo.set_module("calc", "1.1.0", "calc-1.1.0.wat")
    record = await cluster.wait_phase("calc", "1.1.0", ["Promoted"])

    created = _finished(memory, "wasm.deployment.create", **{"wasm.deployment.id": record.id})
    assert len(created) == 1
    assert created[0].attributes is not None
    assert created[0].attributes["wasm.module.id"] == "calc-v1.1.0"
    assert created[0].attributes["wasm.deployment.strategy"] == "blue-green"
    steps = _finished(memory, "wasm.deployment.execute", **{"wasm.deployment.id": record.id})
    assert steps, "no wasm.deployment.execute span for the rollout"
    by_span = {s.context.span_id: s for s in steps if s.context is not None}
    for step in steps:
        assert step.attributes is not None
        assert step.attributes["wasm.module.version"] == "1.1.0"
        assert step.attributes["wasm.deployment.strategy"] == "blue-green"
        assert "wasm.deployment.step" in step.attributes
        assert step.parent is None  # each step is the root of its own trace
        assert [link.context.span_id for link in step.links] == [created[0].context.span_id]  # type: ignore[union-attr]

    calc = {"wasm.module.id": "calc-v1.1.0"}
    await poll(lambda: receiver.named("wasm.module.load", **calc), "the node's load span")
    (load,) = receiver.named("wasm.module.load", **calc)
    parent = by_span.get(int(load.parent_span_id, 16))
    assert parent is not None, "the node's load span is not a child of a deployment step"
    assert parent.context is not None and load.trace_id == format(parent.context.trace_id, "032x")
    assert load.attributes["wasm.edge_node.id"] == NODE
    assert load.attributes["wasm.module.id"] == "calc-v1.1.0"
    assert load.resource["service.instance.id"] == NODE

    checks = [s for s in receiver.named("wasm.function.invoke") if s.parent_span_id == load.span_id]
    assert len(checks) == 1 and checks[0].trace_id == load.trace_id
    assert checks[0].attributes["wasm.function.name"] == "health"
    assert checks[0].attributes["wasm.function.health_check"] is True and not checks[0].error

    # A caller's sampled traceparent is honoured: the call is a span of the caller's trace.
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    add = {"module": "calc", "function": "add", "args": [2, 3]}
    status = await execute(cluster, add, f"00-{trace_id}-{span_id}-01")
    assert status == 200

    def invoked() -> list[object]:
        return [s for s in receiver.named("wasm.function.invoke") if s.trace_id == trace_id]

    await poll(invoked, "the execute call's span")
    (span,) = [s for s in receiver.named("wasm.function.invoke") if s.trace_id == trace_id]
    assert span.parent_span_id == span_id
    assert span.attributes["wasm.module.id"] == "calc-v1.1.0"
    assert span.attributes["wasm.function.name"] == "add"


async def test_node_logs_are_json_lines_with_the_trace_id_of_the_request(
    traced: tuple[Cluster, InMemorySpanExporter], receiver: OtlpReceiver
) -> None:
    cluster, _ = traced
    node = cluster.nodes[0]
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    # traps on an odd first argument (so without the example's smoke check, which would stop it)
    cluster.repo.set_module("calc", "1.2.0", "calc-1.2.0-faulty.wat", **{SMOKE_LINES: ""})
    await cluster.wait_phase("calc", "1.2.0", ["Promoted"])
    await cluster.wait_all_serving("calc", "1.2.0", [NODE])
    # Not sampled (flags 00): no span, but the log line the call causes still names its trace.
    body = {"module": "calc", "function": "add", "args": [1, 2]}
    status = await execute(cluster, body, f"00-{trace_id}-{span_id}-00")
    assert status >= 500

    def lines() -> list[dict[str, object]]:
        text = node.log.read_text()
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def caused() -> list[dict[str, object]]:
        return [line for line in lines() if line.get("traceId") == trace_id]

    await poll(caused, "a log line with the request's trace id")
    (line,) = caused()
    assert line["level"] == "WARNING" and "trap" in str(line["message"])
    assert line["edgeNodeId"] == NODE and line["moduleId"] == "calc-v1.2.0"
    assert set(line) >= {"timestamp", "level", "message", "traceId"}
    assert all({"timestamp", "level", "message"} <= set(entry) for entry in lines())
    assert not [s for s in receiver.spans if s.trace_id == trace_id]  # unsampled: nothing exported


def _families(text: str) -> dict[str, str]:
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def _assert_spec_metrics(families: dict[str, str]) -> None:
    for name in COUNTERS:
        assert families.get(prometheus(name).removesuffix("_total")) == "counter", name
    for name in HISTOGRAMS:
        assert families.get(prometheus(name)) == "histogram", name
    for name in GAUGES:
        assert families.get(prometheus(name)) == "gauge", name


async def test_node_and_control_plane_serve_every_metric_the_spec_names(
    traced: tuple[Cluster, InMemorySpanExporter], receiver: OtlpReceiver
) -> None:
    cluster, _ = traced
    assert await execute(cluster, {"module": "calc", "function": "add", "args": [1, 2]}, "") == 200
    url = cluster.node_urls()[NODE]
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        node_text = await response.text()
    _assert_spec_metrics(_families(node_text))
    assert 'wasm_functions_invoked_total{module="calc",version="1.0.0"} 1' in node_text

    denied = await call(cluster.url, "GET", "/metrics")
    assert denied.status == 401

    async def plane_text() -> str:
        answer = await call(cluster.url, "GET", "/metrics", cluster.token("viewer"))
        assert answer.status == 200
        return answer.body.decode() if isinstance(answer.body, bytes) else str(answer.body)

    async def reported() -> bool:
        return 'wasm_functions_invoked_total{module="calc",version="1.0.0"} 1' in await plane_text()

    await poll(reported, "the node's invocation in the control plane's metrics")
    text = await plane_text()
    _assert_spec_metrics(_families(text))
    assert "wasm_edge_nodes_healthy 1" in text

    # The node sends the same metrics over OTLP (histograms as .count and .sum).
    spec = {*COUNTERS, *GAUGES, *(f"{name}.{part}" for name in HISTOGRAMS for part in ("count", "sum"))}
    await poll(lambda: spec <= receiver.metric_names(NODE), "every spec metric over OTLP from the node")
    assert f'wasm_modules_deployed_per_node{{node="{NODE}"}}' in text


async def test_audit_log_lists_the_rollout_steps(traced: tuple[Cluster, InMemorySpanExporter]) -> None:
    cluster, _ = traced
    cluster.repo.set_module("calc", "1.1.0", "calc-1.1.0.wat")
    record = await cluster.wait_phase("calc", "1.1.0", ["Promoted"])
    answer = await call(cluster.url, "GET", f"/api/v1/wasm/audit?subject={record.id}", cluster.token("viewer"))
    assert answer.status == 200
    actions = [e["action"] for e in answer.body["entries"]]
    assert "rollout.rolloutStarted" in actions and "rollout.promoted" in actions
    assert all(e["subject"] == record.id for e in answer.body["entries"])
    page = await call(cluster.url, "GET", "/api/v1/wasm/audit?limit=1", cluster.token("viewer"))
    assert len(page.body["entries"]) == 1
    after = page.body["next"]
    following = await call(cluster.url, "GET", f"/api/v1/wasm/audit?after={after}&limit=1", cluster.token("viewer"))
    assert following.body["entries"][0]["seq"] > after
    bad = await call(cluster.url, "GET", "/api/v1/wasm/audit?limit=0", cluster.token("viewer"))
    assert bad.status == 400 and "limit" in bad.body["message"]
