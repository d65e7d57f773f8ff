"""An edge node's telemetry: OpenTelemetry spans, the spec's metrics in Prometheus text, JSON logs.

Where it sits: beside the server, router and agent, which call into it; it imports none of them.

* Traces. `configure_tracing` installs a tracer provider when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
  (spans go out over OTLP/HTTP in batches) or when a test hands it an exporter; otherwise tracing
  is off and costs nothing. Spans: `wasm.module.load` for every version the router loads, a child
  of the control plane's `wasm.deployment.execute` when the assignment carries its `traceparent`,
  with the entry's health check as a `wasm.function.invoke` under it; `wasm.health.check` for each
  periodic health check (`edge.health`), a trace of its own with the `wasm.function.invoke` under
  it; and `wasm.function.invoke` for execute calls. The execute hot path decides before creating
  anything: a request whose `traceparent` says sampled is traced (parent-based), one that says not
  sampled is not, and one without a parent is traced with probability `ratio` (default 0.01;
  `OTEL_TRACES_SAMPLER_ARG` with a `*traceidratio` sampler, or `--trace-ratio`). Unsampled requests
  create no span object.
* Metrics. Every family of the node's `/metrics` is declared here once (`FAMILIES`, an
  `edge.metrics.Family` each); `node_reading` pairs them with this moment's values: `NodeStats`
  (loads, applied tables and their durations, rare events) and the router's per-version counters.
  `edge.metrics` renders that as Prometheus text and, for the exported families, as OTLP samples.
* Logs are `edge.logs`' (JSON or text lines carrying the trace id and the known ids); its names are
  importable from here as well, as they were before it was a module of its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import resource
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

# Also importable from here, as before edge.logs was a module of its own (the node's commands, the
# control plane's telemetry, tests).
from edge.logs import LOG_FIELDS as LOG_FIELDS  # noqa: PLC0414
from edge.logs import REQUEST_TRACEPARENT as REQUEST_TRACEPARENT  # noqa: PLC0414
from edge.logs import JsonFormatter as JsonFormatter  # noqa: PLC0414
from edge.logs import TextFormatter as TextFormatter  # noqa: PLC0414
from edge.logs import current_trace_id as current_trace_id  # noqa: PLC0414
from edge.logs import log_context as log_context  # noqa: PLC0414
from edge.logs import log_format as log_format  # noqa: PLC0414
from edge.logs import setup_logging as setup_logging  # noqa: PLC0414
from edge.metrics import Family, Histogram, Reading, Sample, otlp_samples
from edge.metrics import start_metric_export as export_metrics
from edge.protocol import LATENCY_BUCKETS_MS, VERSION_HEADER, ModuleEntry, VersionMetrics, module_id

log = logging.getLogger("hotswap.edge.telemetry")

LOAD = "wasm.module.load"
INVOKE = "wasm.function.invoke"
HEALTH = "wasm.health.check"
TRACEPARENT = "traceparent"
DEFAULT_RATIO = 0.01
LOAD_BUCKETS_MS = (0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0)
SIZE_BUCKETS = (1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 52428800.0)
TABLE_BUCKETS_MS = (1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 30000.0)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_propagator = TraceContextTextMapPropagator()


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


async def request_span(request: web.Request, handler: Handler, traceparent: str | None) -> web.StreamResponse:
    """`handler(request)` inside a `wasm.function.invoke` span (parent: the caller's `traceparent`),
    for an execute call that `Tracing.sample` chose (`edge.execute` decides, then calls this): the
    span carries the answer's status, the function, and the module version that served it; a
    failure that leaves the handler marks it failed and goes on."""
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


@contextlib.contextmanager
def invoke_span(entry: ModuleEntry, function: str) -> Iterator[trace.Span]:
    """`wasm.function.invoke` of the node's own call to a version's health function (`edge.health`),
    under the current span (the load's, or a periodic `wasm.health.check`)."""
    attributes: dict[str, str | bool] = {
        **module_attributes(entry.module, entry.version),
        "wasm.function.name": function,
        "wasm.function.health_check": True,
    }
    with TRACING.tracer.start_as_current_span(INVOKE, attributes=attributes) as span:
        yield span


@contextlib.contextmanager
def health_span(entry: ModuleEntry, function: str) -> Iterator[trace.Span]:
    """`wasm.health.check`: one periodic run of a version's health check, a trace of its own."""
    attributes = {**module_attributes(entry.module, entry.version), "wasm.function.name": function}
    with (
        TRACING.tracer.start_as_current_span(HEALTH, context=Context(), attributes=attributes) as span,
        log_context(moduleId=module_id(entry.module, entry.version)),
    ):
        yield span


def mark_failed(span: trace.Span, message: str) -> None:
    span.set_status(Status(StatusCode.ERROR, message))


# -- metrics -----------------------------------------------------------------------------------

_VERSION = ("module", "version")
INVOKED = Family("wasm.functions.invoked.total", "counter", "Function invocations per module version", _VERSION)
FAILED = Family(
    "wasm.functions.failed.total",
    "counter",
    "Failed invocations per module version and reason",
    (*_VERSION, "reason"),
    otlp_labels=_VERSION,
)
VIOLATIONS = Family(
    "hotswap.sandbox.violations.total",
    "counter",
    "Sandbox refusals inside calls (network off allowHosts)",
    (*_VERSION, "kind"),
    exported=False,
)
EXECUTE_MS = Family(
    "wasm.function.invoke.duration_ms",
    "histogram",
    "Execute latency in milliseconds",
    _VERSION,
    LATENCY_BUCKETS_MS,
    exported=False,
)
WEIGHT = Family("hotswap.version.weight", "gauge", "Traffic weight of the module version", _VERSION, exported=False)
INFLIGHT = Family(
    "hotswap.inflight.requests", "gauge", "Requests running on the module version", _VERSION, exported=False
)
MODULES = Family("wasm.modules.count", "gauge", "Modules loaded on this node")
GENERATION = Family("hotswap.table.generation", "gauge", "Generation of the module table applied", exported=False)
REGISTERED = Family("wasm.modules.registered.total", "counter", "Module versions loaded by this node")
EXECUTED = Family("wasm.deployments.executed.total", "counter", "Module tables applied by this node")
TABLES_FAILED = Family("wasm.deployments.failed.total", "counter", "Module tables with an entry that did not load")
LOAD_MS = Family(
    "wasm.module.load.duration", "histogram", "Module load latency in milliseconds", buckets=LOAD_BUCKETS_MS
)
INVOKE_MS = Family(
    "wasm.function.invoke.duration",
    "histogram",
    "Function invocation latency in milliseconds",
    _VERSION,
    LATENCY_BUCKETS_MS,
)
TABLE_MS = Family(
    "wasm.deployment.duration", "histogram", "Time to apply a module table in milliseconds", buckets=TABLE_BUCKETS_MS
)
SIZES = Family("wasm.module.size.bytes", "histogram", "Binary size of the module versions loaded", buckets=SIZE_BUCKETS)
NODES = Family("wasm.edge_nodes.count", "gauge", "Edge nodes this process is (1)")
HEALTHY = Family("wasm.edge_nodes.healthy", "gauge", "Healthy edge nodes in this process (1 while serving)")
DEPLOYED = Family("wasm.modules.deployed.per_node", "gauge", "Module versions loaded on this node", ("node",))
MEMORY = Family("wasm.edge_node.memory.used.mb", "gauge", "Resident memory of this node in MB", ("node",))
CPU = Family(
    "wasm.edge_node.cpu.percent", "gauge", "CPU use of this node since it started, percent of the machine", ("node",)
)
HEALTH_CHECKS = Family(
    "wasm.health_checks.total", "counter", "Runs of the healthCheck function per module version", _VERSION
)
HEALTH_FAILED = Family(
    "wasm.health_checks.failed.total", "counter", "Failed runs of the healthCheck function per module version", _VERSION
)
# In the order /metrics shows them; the exported ones also go out over OTLP.
SERVING = (INVOKED, FAILED, VIOLATIONS, EXECUTE_MS, WEIGHT, INFLIGHT, MODULES, GENERATION)
SPEC = (REGISTERED, EXECUTED, TABLES_FAILED, LOAD_MS, INVOKE_MS, TABLE_MS, SIZES, NODES, HEALTHY, DEPLOYED, MEMORY, CPU)
CHECKS = (HEALTH_CHECKS, HEALTH_FAILED)  # edge.health (0 for a version without a healthCheck)
FAMILIES = (*SERVING, *SPEC, *CHECKS)
COUNTERS = tuple(name for f in FAMILIES for name, kind in f.instruments() if kind == "counter")
GAUGES = tuple(name for f in FAMILIES for name, kind in f.instruments() if kind == "gauge")


@dataclass
class NodeStats:
    """What the router does rarely (loads, tables), for `/metrics`."""

    loads: int = 0
    tables: int = 0
    tables_failed: int = 0
    load_ms: Histogram = field(default_factory=lambda: Histogram(LOAD_MS.buckets))
    sizes: Histogram = field(default_factory=lambda: Histogram(SIZES.buckets))
    table_ms: Histogram = field(default_factory=lambda: Histogram(TABLE_MS.buckets))
    started: float = field(default_factory=time.monotonic)

    def loaded(self, load_ms: float, size: int) -> None:
        self.loads += 1
        self.load_ms.observe(load_ms)
        self.sizes.observe(float(size))

    def applied(self, duration_ms: float, failed: bool) -> None:
        self.tables += 1
        self.tables_failed += int(failed)
        self.table_ms.observe(duration_ms)


@dataclass(frozen=True)
class Serving:
    """One loaded version as /metrics shows it: its counters, traffic weight and calls in flight."""

    metrics: VersionMetrics
    weight: int = 0
    inflight: int = 0


def process_usage(started: float) -> tuple[float, float]:
    """(CPU percent of the machine since `started`, resident memory in MB) of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = max(time.monotonic() - started, 1e-6)
    cpu = 100 * (usage.ru_utime + usage.ru_stime) / elapsed / (os.cpu_count() or 1)
    memory = usage.ru_maxrss / 1024
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/statm") as statm:
        memory = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    return round(cpu, 2), round(memory, 1)


def node_reading(
    stats: NodeStats, serving: Sequence[Serving], *, node_id: str, modules: int, generation: int = 0
) -> Reading:
    """Every family's points on this node (`edge.metrics.prometheus_lines` makes /metrics of them).
    A module version loaded counts as registered, an applied
    table as a deployment executed (failed when an entry did not load), and the edge node gauges
    describe this node."""
    cpu, memory = process_usage(stats.started)
    node = (node_id,)
    ids = [((s.metrics.module, s.metrics.version), s) for s in serving]
    return (
        (INVOKED, [(v, s.metrics.requests) for v, s in ids]),
        (FAILED, [((*v, r), n) for v, s in ids for r, n in _failures(s.metrics)]),
        (VIOLATIONS, [((*v, "network"), s.metrics.violations) for v, s in ids]),
        (EXECUTE_MS, [(v, _latency(s.metrics)) for v, s in ids]),
        (WEIGHT, [(v, s.weight) for v, s in ids]),
        (INFLIGHT, [(v, s.inflight) for v, s in ids]),
        (MODULES, [((), modules)]),
        (GENERATION, [((), generation)]),
        (REGISTERED, [((), stats.loads)]),
        (EXECUTED, [((), stats.tables)]),
        (TABLES_FAILED, [((), stats.tables_failed)]),
        (LOAD_MS, [((), stats.load_ms)]),
        (INVOKE_MS, [(v, _latency(s.metrics)) for v, s in ids]),
        (TABLE_MS, [((), stats.table_ms)]),
        (SIZES, [((), stats.sizes)]),
        (NODES, [((), 1)]),
        (HEALTHY, [((), 1)]),  # a node that answers is serving
        (DEPLOYED, [(node, len(serving))]),
        (MEMORY, [(node, memory)]),
        (CPU, [(node, cpu)]),
        (HEALTH_CHECKS, [(v, s.metrics.health_checks) for v, s in ids]),
        (HEALTH_FAILED, [(v, s.metrics.health_failures) for v, s in ids]),
    )


def _failures(m: VersionMetrics) -> tuple[tuple[str, int], ...]:
    return (("trap", m.traps), ("timeout", m.timeouts), ("memory", m.memory), ("cpu", m.cpu))


def _latency(m: VersionMetrics) -> Histogram:
    return Histogram(LATENCY_BUCKETS_MS, list(m.latency_buckets), m.latency_sum_ms, reported=m.requests)


def node_samples(stats: NodeStats, versions: Sequence[VersionMetrics], node_id: str) -> list[Sample]:
    """The node's exported families as OTLP samples (spec names, dots kept). A histogram goes as its
    `.count` and `.sum` counters: its buckets are in /metrics."""
    serving = [Serving(m) for m in versions]
    modules = len({m.module for m in versions})
    return otlp_samples(node_reading(stats, serving, node_id=node_id, modules=modules))


def start_metric_export(
    samples: Callable[[], Sequence[Sample]], *, service: str, instance: str, environ: Mapping[str, str] = os.environ
) -> Any:
    """The node's families over OTLP (`edge.metrics.start_metric_export`); None when no endpoint is set."""
    return export_metrics(samples, FAMILIES, service=service, instance=instance, environ=environ)
