"""An edge node's telemetry: OpenTelemetry spans, the spec's metrics in Prometheus text, JSON logs.

Where it sits: beside the server, router and agent, which call into it; it imports none of them.

* Traces. `configure_tracing` installs a tracer provider when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
  (spans go out over OTLP/HTTP in batches) or when a test hands it an exporter; otherwise tracing
  is off and costs nothing. Spans: `wasm.module.load` for every version the router loads, a child
  of the control plane's `wasm.deployment.execute` when the assignment carries its `traceparent`,
  with the entry's health check as a `wasm.function.invoke` under it; and `wasm.function.invoke`
  for execute calls. The execute hot path decides before creating anything: a request whose
  `traceparent` says sampled is traced (parent-based), one that says not sampled is not, and one
  without a parent is traced with probability `ratio` (default 0.01; `OTEL_TRACES_SAMPLER_ARG`
  with a `*traceidratio` sampler, or `--trace-ratio`). Unsampled requests create no span object.
* Metrics. `NodeStats` counts loads, applied tables and their durations (rare events); per-version
  request counters stay in the router. `render_spec_metrics` turns both into the spec's families
  at scrape time (dots as underscores), appended to the node's `/metrics`.
* Logs. `setup_logging` installs either a JSON formatter (one object a line: timestamp, level,
  message, traceId, edgeNodeId, moduleId, deploymentId where known) or a human-readable one. The
  trace id is the current span's, else the caller's `traceparent` for this request.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import contextvars
import json
import logging
import math
import os
import random
import resource
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from edge.errors import EdgeError
from edge.protocol import LATENCY_BUCKETS_MS, VERSION_HEADER, HealthCheck, ModuleEntry, VersionMetrics, module_id

log = logging.getLogger("hotswap.edge.telemetry")

LOAD = "wasm.module.load"
INVOKE = "wasm.function.invoke"
TRACEPARENT = "traceparent"
DEFAULT_RATIO = 0.01
HEALTH_CHECK_TIMEOUT = 5.0
LOAD_BUCKETS_MS = (0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0)
SIZE_BUCKETS = (1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 52428800.0)
TABLE_BUCKETS_MS = (1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 30000.0)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_propagator = TraceContextTextMapPropagator()
REQUEST_TRACEPARENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("traceparent", default=None)
LOG_FIELDS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("log_fields", default=None)


# -- traces ------------------------------------------------------------------------------------


def parse_ratio(value: str | None, default: float = DEFAULT_RATIO) -> float:
    """A sampling ratio in [0, 1] from text; `default` when absent or not a number."""
    try:
        ratio = float(value) if value not in (None, "") else default
    except ValueError:
        return default
    return min(max(ratio, 0.0), 1.0) if math.isfinite(ratio) else default


def sampler_ratio(ratio: float | None = None, environ: Mapping[str, str] = os.environ) -> float:
    """The root sampling ratio for execute calls: the flag, else the OTel environment, else 0.01.

    `OTEL_TRACES_SAMPLER` always_off / parentbased_always_off mean 0, always_on / parentbased_always_on
    mean 1, *traceidratio means `OTEL_TRACES_SAMPLER_ARG`."""
    if ratio is not None:
        return parse_ratio(str(ratio))
    sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler in ("always_off", "parentbased_always_off"):
        return 0.0
    if sampler in ("always_on", "parentbased_always_on"):
        return 1.0
    return parse_ratio(environ.get("OTEL_TRACES_SAMPLER_ARG"))


class Tracing:
    """The node's tracer and its cheap sampling decision for execute calls."""

    def __init__(self, provider: TracerProvider | None = None, *, node_id: str = "", ratio: float = 0.0) -> None:
        self.provider = provider
        self.node_id = node_id
        self.ratio = ratio
        self.enabled = provider is not None
        self.tracer: trace.Tracer = provider.get_tracer("hotswap.edge") if provider is not None else trace.NoOpTracer()
        self._random = random.random

    def sample(self, traceparent: str | None) -> bool:
        """Whether an execute call gets a span: the parent's sampled flag, else the root ratio."""
        if not self.enabled:
            return False
        if traceparent is not None:
            return len(traceparent) == 55 and traceparent[-1] in "13579bdf"  # flags & 1
        return self._random() < self.ratio

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


TRACING = Tracing()


def configure_tracing(
    node_id: str,
    *,
    ratio: float | None = None,
    exporter: SpanExporter | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Tracing:
    """Install the node's tracing (process-wide): on with an OTLP endpoint in the environment or an
    exporter given, off otherwise (and with `OTEL_SDK_DISABLED=true`)."""
    global TRACING
    TRACING.shutdown()
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true" or (exporter is None and not endpoint):
        TRACING = Tracing(node_id=node_id)
        return TRACING
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    resource_ = Resource.create(
        {"service.name": environ.get("OTEL_SERVICE_NAME", "hotswap-edge"), "service.instance.id": node_id}
    )
    # Spans with a parent follow it; roots are always kept: the only frequent root, execute, is
    # sampled by `Tracing.sample` before any span exists.
    provider = TracerProvider(resource=resource_, sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    TRACING = Tracing(provider, node_id=node_id, ratio=sampler_ratio(ratio, environ))
    return TRACING


def parent_context(traceparent: str | None) -> Context | None:
    """The remote parent a W3C `traceparent` names (None when absent)."""
    if not traceparent:
        return None
    return _propagator.extract({TRACEPARENT: traceparent})


def module_attributes(module: str, version: str) -> dict[str, str]:
    return {
        "wasm.module.name": module,
        "wasm.module.version": version,
        "wasm.module.id": module_id(module, version),
        "wasm.edge_node.id": TRACING.node_id,
    }


def traced(handler: Handler) -> Handler:
    """Wrap the execute handler: log lines carry the caller's trace id, and a sampled call gets a
    `wasm.function.invoke` span (parent: the caller's `traceparent`)."""

    async def execute(request: web.Request) -> web.StreamResponse:
        traceparent = request.headers.get(TRACEPARENT)
        if traceparent is not None:
            REQUEST_TRACEPARENT.set(traceparent)
        if not TRACING.sample(traceparent):
            return await handler(request)
        return await _invoke_span(request, handler, traceparent)

    return execute


async def _invoke_span(request: web.Request, handler: Handler, traceparent: str | None) -> web.StreamResponse:
    attributes = {"wasm.edge_node.id": TRACING.node_id}
    with TRACING.tracer.start_as_current_span(
        INVOKE, context=parent_context(traceparent), kind=SpanKind.SERVER, attributes=attributes
    ) as span:
        response = await handler(request)
        span.set_attribute("http.response.status_code", response.status)
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            asked = json.loads(await request.read())
            span.set_attribute("wasm.function.name", str(asked.get("function")))
            version = response.headers.get(VERSION_HEADER)
            if version:
                span.set_attributes(module_attributes(str(asked.get("module")), version))
        if response.status >= 500:
            span.set_status(Status(StatusCode.ERROR, f"HTTP {response.status}"))
        return response


@contextlib.contextmanager
def load_span(entry: ModuleEntry, traceparent: str | None) -> Iterator[trace.Span]:
    """`wasm.module.load` of one table entry, a child of the deployment step that assigned it."""
    attributes = {**module_attributes(entry.module, entry.version), "wasm.module.digest": entry.digest}
    with (
        TRACING.tracer.start_as_current_span(LOAD, context=parent_context(traceparent), attributes=attributes) as span,
        log_context(moduleId=module_id(entry.module, entry.version)),
    ):
        yield span


class Invocable(Protocol):
    """What a health check needs of a loaded module (`edge.runtime.LoadedModule`)."""

    def prepare(self, function: str, args: Any) -> Any: ...

    def invoke(self, call: Any, *, timeout: float | None = None) -> Any: ...


async def health_check(loaded: Invocable, entry: ModuleEntry, check: HealthCheck) -> bool:
    """Call the entry's health check once after a load, as a `wasm.function.invoke` span; a failure is
    logged and marked on the span (it does not stop the load)."""
    attributes: dict[str, str | bool] = {
        **module_attributes(entry.module, entry.version),
        "wasm.function.name": check.function,
        "wasm.function.health_check": True,
    }
    with TRACING.tracer.start_as_current_span(INVOKE, attributes=attributes) as span:
        timeout = min(entry.limits.timeout_seconds, HEALTH_CHECK_TIMEOUT)
        try:
            call = loaded.prepare(check.function, list(check.args))
            await asyncio.to_thread(loaded.invoke, call, timeout=timeout)
        except (EdgeError, ValueError) as exc:
            message = getattr(exc, "message", str(exc))
            span.set_status(Status(StatusCode.ERROR, message))
            log.warning("%s@%s: health check %s failed: %s", entry.module, entry.version, check.function, message)
            return False
    return True


# -- metrics -----------------------------------------------------------------------------------


@dataclass
class Histogram:
    """Counts per bucket (upper bounds, then +Inf), a sum and a count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float, count: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += count
        self.total += value * count

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass
class NodeStats:
    """What the router does rarely (loads, tables), for `/metrics`."""

    loads: int = 0
    tables: int = 0
    tables_failed: int = 0
    load_ms: Histogram = field(default_factory=lambda: Histogram(LOAD_BUCKETS_MS))
    sizes: Histogram = field(default_factory=lambda: Histogram(SIZE_BUCKETS))
    table_ms: Histogram = field(default_factory=lambda: Histogram(TABLE_BUCKETS_MS))
    started: float = field(default_factory=time.monotonic)

    def loaded(self, load_ms: float, size: int) -> None:
        self.loads += 1
        self.load_ms.observe(load_ms)
        self.sizes.observe(float(size))

    def applied(self, duration_ms: float, failed: bool) -> None:
        self.tables += 1
        self.tables_failed += int(failed)
        self.table_ms.observe(duration_ms)


def process_usage(started: float) -> tuple[float, float]:
    """(CPU percent of the machine since `started`, resident memory in MB) of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = max(time.monotonic() - started, 1e-6)
    cpu = 100 * (usage.ru_utime + usage.ru_stime) / elapsed / (os.cpu_count() or 1)
    memory = usage.ru_maxrss / 1024
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/statm") as statm:
        memory = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    return round(cpu, 2), round(memory, 1)


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def histogram_lines(name: str, labels: str, bounds: Sequence[float], counts: Sequence[int], total: float) -> list[str]:
    lines, running = [], 0
    sep = "," if labels else ""
    for bound, count in zip((*bounds, math.inf), counts, strict=True):
        running += count
        le = "+Inf" if math.isinf(bound) else f"{bound:g}"
        lines.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {running}')
    braces = f"{{{labels}}}" if labels else ""
    lines.append(f"{name}_sum{braces} {total:.6f}")
    lines.append(f"{name}_count{braces} {running}")
    return lines


def render_spec_metrics(
    stats: NodeStats, versions: Sequence[VersionMetrics], *, node_id: str, healthy: bool = True
) -> list[str]:
    """The spec's metric families a node has not already written, as Prometheus text lines.

    On a node: a module version loaded counts as registered, an applied table as a deployment
    executed (failed when an entry did not load), and the edge node gauges describe this node."""
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    node = f'node="{escape(node_id)}"'
    family("wasm_modules_registered_total", "counter", "Module versions loaded by this node")
    lines.append(f"wasm_modules_registered_total {stats.loads}")
    family("wasm_deployments_executed_total", "counter", "Module tables applied by this node")
    lines.append(f"wasm_deployments_executed_total {stats.tables}")
    family("wasm_deployments_failed_total", "counter", "Module tables with an entry that did not load")
    lines.append(f"wasm_deployments_failed_total {stats.tables_failed}")
    family("wasm_module_load_duration", "histogram", "Module load latency in milliseconds")
    load = stats.load_ms
    lines += histogram_lines("wasm_module_load_duration", "", load.bounds, load.counts, load.total)
    family("wasm_function_invoke_duration", "histogram", "Function invocation latency in milliseconds")
    for m in versions:
        labels = f'module="{escape(m.module)}",version="{escape(m.version)}"'
        width = len(LATENCY_BUCKETS_MS) + 1
        buckets = (*m.latency_buckets[:width], *(0,) * (width - len(m.latency_buckets)))
        lines += histogram_lines("wasm_function_invoke_duration", labels, LATENCY_BUCKETS_MS, buckets, m.latency_sum_ms)
    family("wasm_deployment_duration", "histogram", "Time to apply a module table in milliseconds")
    lines += histogram_lines(
        "wasm_deployment_duration", "", stats.table_ms.bounds, stats.table_ms.counts, stats.table_ms.total
    )
    family("wasm_module_size_bytes", "histogram", "Binary size of the module versions loaded")
    lines += histogram_lines("wasm_module_size_bytes", "", stats.sizes.bounds, stats.sizes.counts, stats.sizes.total)
    cpu, memory = process_usage(stats.started)
    family("wasm_edge_nodes_count", "gauge", "Edge nodes this process is (1)")
    lines.append("wasm_edge_nodes_count 1")
    family("wasm_edge_nodes_healthy", "gauge", "Healthy edge nodes in this process (1 while serving)")
    lines.append(f"wasm_edge_nodes_healthy {int(healthy)}")
    family("wasm_modules_deployed_per_node", "gauge", "Module versions loaded on this node")
    lines.append(f"wasm_modules_deployed_per_node{{{node}}} {len(versions)}")
    family("wasm_edge_node_memory_used_mb", "gauge", "Resident memory of this node in MB")
    lines.append(f"wasm_edge_node_memory_used_mb{{{node}}} {memory}")
    family("wasm_edge_node_cpu_percent", "gauge", "CPU use of this node since it started, percent of the machine")
    lines.append(f"wasm_edge_node_cpu_percent{{{node}}} {cpu}")
    return lines


# -- metrics over OTLP -------------------------------------------------------------------------

Sample = tuple[str, str, float, Mapping[str, str]]  # (spec name, counter | gauge, value, attributes)
GAUGES = (
    "wasm.modules.count",
    "wasm.edge_nodes.count",
    "wasm.edge_nodes.healthy",
    "wasm.modules.deployed.per_node",
    "wasm.edge_node.memory.used.mb",
    "wasm.edge_node.cpu.percent",
)
COUNTERS = (
    "wasm.modules.registered.total",
    "wasm.deployments.executed.total",
    "wasm.deployments.failed.total",
    "wasm.functions.invoked.total",
    "wasm.functions.failed.total",
    *(
        f"{name}.{part}"
        for name in (
            "wasm.module.load.duration",
            "wasm.function.invoke.duration",
            "wasm.deployment.duration",
            "wasm.module.size.bytes",
        )
        for part in ("count", "sum")
    ),
)


def node_samples(stats: NodeStats, versions: Sequence[VersionMetrics], node_id: str) -> list[Sample]:
    """The node's metrics as OTLP samples (spec names, dots kept). A histogram goes as its
    `.count` and `.sum` counters: its buckets are in /metrics."""
    cpu, memory = process_usage(stats.started)
    node = {"node": node_id}
    out: list[Sample] = [
        ("wasm.modules.registered.total", "counter", stats.loads, {}),
        ("wasm.deployments.executed.total", "counter", stats.tables, {}),
        ("wasm.deployments.failed.total", "counter", stats.tables_failed, {}),
        ("wasm.module.load.duration.count", "counter", stats.load_ms.count, {}),
        ("wasm.module.load.duration.sum", "counter", stats.load_ms.total, {}),
        ("wasm.deployment.duration.count", "counter", stats.table_ms.count, {}),
        ("wasm.deployment.duration.sum", "counter", stats.table_ms.total, {}),
        ("wasm.module.size.bytes.count", "counter", stats.sizes.count, {}),
        ("wasm.module.size.bytes.sum", "counter", stats.sizes.total, {}),
        ("wasm.modules.count", "gauge", len({m.module for m in versions}), {}),
        ("wasm.edge_nodes.count", "gauge", 1, {}),
        ("wasm.edge_nodes.healthy", "gauge", 1, {}),
        ("wasm.modules.deployed.per_node", "gauge", len(versions), node),
        ("wasm.edge_node.memory.used.mb", "gauge", memory, node),
        ("wasm.edge_node.cpu.percent", "gauge", cpu, node),
    ]
    for m in versions:
        out += version_samples(m)
    return out


def version_samples(m: VersionMetrics) -> list[Sample]:
    """The invocation counters of one module version (node and control plane export the same)."""
    labels = {"module": m.module, "version": m.version}
    return [
        ("wasm.functions.invoked.total", "counter", m.requests, labels),
        ("wasm.functions.failed.total", "counter", m.errors, labels),
        ("wasm.function.invoke.duration.count", "counter", m.requests, labels),
        ("wasm.function.invoke.duration.sum", "counter", m.latency_sum_ms, labels),
    ]


def start_metric_export(
    samples: Callable[[], Sequence[Sample]],
    *,
    service: str,
    instance: str,
    environ: Mapping[str, str] = os.environ,
    counters: Sequence[str] | None = None,
    gauges: Sequence[str] | None = None,
) -> Any:
    """Export `samples()` over OTLP/HTTP every `OTEL_METRIC_EXPORT_INTERVAL` ms (default 60 s) when an
    OTLP endpoint is set; returns the meter provider (call `shutdown()`), or None when off. The
    samples are read at export time only, on the exporter's thread: nothing is added to the execute
    path, and a read that races the event loop is skipped for that round. `counters` and `gauges`
    name what to export (default: the node's; the control plane passes its own)."""
    endpoint = environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint or environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    resource_ = Resource.create(
        {"service.name": environ.get("OTEL_SERVICE_NAME", service), "service.instance.id": instance}
    )
    provider = MeterProvider(resource=resource_, metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())])
    meter = provider.get_meter("hotswap")

    def observe(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            try:
                taken = samples()
            except RuntimeError:  # a dict changed size under the read: next round
                return []
            return [Observation(value, dict(attrs)) for n, _, value, attrs in taken if n == name]

        return callback

    for name in COUNTERS if counters is None else counters:
        meter.create_observable_counter(name, callbacks=[observe(name)])
    for name in GAUGES if gauges is None else gauges:
        meter.create_observable_gauge(name, callbacks=[observe(name)])
    return provider


# -- logs --------------------------------------------------------------------------------------


@contextlib.contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Log lines inside carry these fields (moduleId, deploymentId, ...)."""
    token = LOG_FIELDS.set({**(LOG_FIELDS.get() or {}), **fields})
    try:
        yield
    finally:
        LOG_FIELDS.reset(token)


def current_trace_id() -> str | None:
    """The trace id (32 hex) of the current span, else of the caller's traceparent for this request."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        return format(context.trace_id, "032x")
    traceparent = REQUEST_TRACEPARENT.get()
    if traceparent and len(traceparent) == 55:
        return traceparent[3:35]
    return None


RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: timestamp, level, message, logger, traceId and the known ids."""

    def __init__(self, **static: str) -> None:
        super().__init__()
        self.static = static

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
        }
        trace_id = current_trace_id()
        if trace_id is not None:
            out["traceId"] = trace_id
        out.update(self.static)
        out.update(LOG_FIELDS.get() or {})
        for key, value in record.__dict__.items():
            if key not in RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """A line for people: time, level, logger, message, and the trace id when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        trace_id = current_trace_id()
        return f"{line} [trace {trace_id}]" if trace_id else line


def log_format(choice: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """json or text: the flag, else HOTSWAP_LOG_FORMAT, else text on a terminal and json otherwise."""
    chosen = (choice or environ.get("HOTSWAP_LOG_FORMAT") or "").strip().lower()
    if chosen in ("json", "text"):
        return chosen
    return "text" if sys.stdout.isatty() else "json"


def setup_logging(level: str, choice: str | None = None, **static: str) -> str:
    """Configure the root logger (stderr) in the chosen format, unless it already has handlers;
    returns the format chosen."""
    fmt = log_format(choice)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(**static) if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.setLevel(level.upper())
    if not root.handlers:  # as logging.basicConfig: a host that set up logging (pytest) keeps its own
        root.addHandler(handler)
    return fmt
