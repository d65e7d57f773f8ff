"""The control plane's telemetry: deployment spans, the spec's metrics, JSON logs.

Where it sits: `ControlPlane.build` makes one `Telemetry` and hands its pieces out: the registry's
tracer (spans `wasm.module.register` / `wasm.module.validate`), the controller's `DeploymentTracing`,
the node hub's metrics window (`CountingWindow`, cumulative counts of what nodes ship), and the
`/metrics` route (reconciler.api.observe), which renders everything at scrape time.

Traces. Each transition the executor applies is a span: `StartRollout` -> `wasm.deployment.create`,
`AdvanceStep` and `Promote` -> `wasm.deployment.execute` (one trace per deployment step, linked to
the rollout's create span when this process saw it), `Rollback` -> `wasm.deployment.rollback`; with
module id, version, deployment id, strategy and step as attributes. Its W3C `traceparent` goes to
the nodes in the module table they long-poll (`ModuleTable.traceparents`), so each node's
`wasm.module.load` (and the health check's `wasm.function.invoke`) joins the step's trace. Spans
leave over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; `OTEL_TRACES_SAMPLER` is honoured
(default: parent-based, always on: deployments are rare).

Metrics (dots as underscores in Prometheus text): registrations, load time (the registry's) and sizes
come from the registry's spans; deployments executed/failed and their durations from the rollout
records; invocations, failures and their latency histogram from the nodes' heartbeats; the gauges
from the hub's view of the nodes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler, _get_from_env_or_default
from opentelemetry.trace import Link, SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from edge.metrics import Family, Histogram, Reading, Sample, fit, otlp_samples, prometheus_lines
from edge.metrics import start_metric_export as export_metrics
from edge.protocol import LATENCY_BUCKETS_MS, VersionMetrics, module_id
from edge.telemetry import JsonFormatter, current_trace_id, log_format, setup_logging  # shared with the node
from reconciler.apply.metricswindow import MetricsWindow, merged
from reconciler.apply.noderows import NodeView
from reconciler.planner import AdvanceStep, Phase, Promote, Rollback, RolloutRecord, StartRollout
from reconciler.planner.actions import Action
from reconciler.spec.approvals import Approval, RejectedApproval

CREATE = "wasm.deployment.create"
EXECUTE = "wasm.deployment.execute"
ROLLBACK = "wasm.deployment.rollback"
LOAD_BUCKETS_MS = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0)
SIZE_BUCKETS = (1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 52428800.0)
DEPLOYMENT_BUCKETS_S = (1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 86400.0)
FAILED_PHASES = frozenset({Phase.ROLLED_BACK, Phase.ABORTED})
MAX_REMEMBERED = 1000

_propagator = TraceContextTextMapPropagator()


# -- traces ------------------------------------------------------------------------------------


def traceparent_of(span: trace.Span) -> str | None:
    """The W3C traceparent that makes a remote span a child of `span` (None for a non-recording one)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span, Context()))
    return carrier.get("traceparent")


class DeploymentTracing:
    """Spans for the transitions of one pass, and the traceparents the nodes get with their tables."""

    def __init__(self, tracer: trace.Tracer | None = None) -> None:
        self.tracer = tracer or trace.get_tracer("hotswap.controller")
        self._created: dict[str, SpanContext] = {}  # rollout id -> its create span, for links

    @contextlib.contextmanager
    def step_spans(
        self, actions: Iterable[Action], lookup: Callable[[str], RolloutRecord | None]
    ) -> Iterator[dict[str, str]]:
        """Open a span per transition action; yield module -> traceparent of that module's span (the
        last transition of a module in the pass wins), which the tables published meanwhile carry
        (`Executor.apply`); end the spans on exit."""
        traces: dict[str, str] = {}
        with contextlib.ExitStack() as stack:
            for action in actions:
                if not isinstance(action, StartRollout | AdvanceStep | Promote | Rollback):
                    continue
                opened = self._open(action, lookup)
                if opened is None:
                    continue
                span = stack.enter_context(opened)
                parent = traceparent_of(span)
                if parent is not None:
                    traces[action.module] = parent
            yield traces

    def _open(
        self, action: Action, lookup: Callable[[str], RolloutRecord | None]
    ) -> contextlib.AbstractContextManager[trace.Span] | None:
        match action:
            case StartRollout():
                attributes = deployment_attributes(action.module, action.to_version, action.rollout_id, action.strategy)
                if action.from_version:
                    attributes["wasm.deployment.from_version"] = action.from_version
                return self._span(CREATE, attributes, action.rollout_id, create=True)
            case AdvanceStep():
                record = lookup(action.rollout_id)
                attributes = deployment_attributes(
                    action.module,
                    record.target.version if record else None,
                    action.rollout_id,
                    record.strategy if record else None,
                )
                attributes.update({"wasm.deployment.step": action.step, "wasm.deployment.step_kind": action.kind.value})
                attributes["wasm.deployment.percent"] = action.percent
                if action.region:
                    attributes["wasm.deployment.region"] = action.region
                return self._span(EXECUTE, attributes, action.rollout_id)
            case Promote():
                record = lookup(action.rollout_id)
                attributes = deployment_attributes(
                    action.module, action.version, action.rollout_id, record.strategy if record else None
                )
                attributes["wasm.deployment.step"] = record.step if record else -1
                attributes["wasm.deployment.promoted"] = True
                return self._span(EXECUTE, attributes, action.rollout_id)
            case Rollback():
                record = lookup(action.rollout_id)
                attributes = deployment_attributes(
                    action.module, action.to_version, action.rollout_id, record.strategy if record else None
                )
                attributes["wasm.deployment.reason"] = action.reason
                if record is not None:
                    attributes["wasm.deployment.step"] = record.step
                    attributes["wasm.deployment.from_version"] = record.target.version
                return self._span(ROLLBACK, attributes, action.rollout_id)
            case _:
                return None

    def _span(
        self, name: str, attributes: dict[str, Any], rollout_id: str, *, create: bool = False
    ) -> contextlib.AbstractContextManager[trace.Span]:
        created = self._created.get(rollout_id)
        links = [Link(created)] if created is not None and not create else None
        manager = self.tracer.start_as_current_span(name, context=Context(), attributes=attributes, links=links)
        if not create:
            return manager
        return self._remember(manager, rollout_id)

    @contextlib.contextmanager
    def _remember(
        self, manager: contextlib.AbstractContextManager[trace.Span], rollout_id: str
    ) -> Iterator[trace.Span]:
        with manager as span:
            self._created[rollout_id] = span.get_span_context()
            while len(self._created) > MAX_REMEMBERED:
                del self._created[next(iter(self._created))]
            yield span


def deployment_attributes(module: str, version: str | None, rollout_id: str, strategy: str | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {"wasm.module.name": module, "wasm.deployment.id": rollout_id}
    if version:
        attributes["wasm.module.version"] = version
        attributes["wasm.module.id"] = module_id(module, version)
    if strategy:
        attributes["wasm.deployment.strategy"] = strategy
    return attributes


def sampler_from_env(environ: Mapping[str, str] = os.environ) -> Sampler:
    """`OTEL_TRACES_SAMPLER` (and `_ARG`) when set, else parent-based always-on."""
    if environ.get("OTEL_TRACES_SAMPLER"):
        sampler: Sampler = _get_from_env_or_default()
        return sampler
    return ParentBased(ALWAYS_ON)


# -- metrics -----------------------------------------------------------------------------------


class RegistryMetrics:
    """Counts registrations, their time and module sizes; the registry tells it of each new version
    (`Registry(observer=...)`), whatever the trace sampler keeps."""

    def __init__(self) -> None:
        self.registered = 0
        self.load_ms = Histogram(LOAD_BUCKETS_MS)
        self.sizes = Histogram(SIZE_BUCKETS)

    def registered_version(self, size: int, seconds: float) -> None:
        self.registered += 1
        self.load_ms.observe(seconds * 1000)
        self.sizes.observe(float(size))


class CountingWindow(MetricsWindow):
    """The hub's metrics window that also keeps cumulative totals per module version (for /metrics)."""

    def __init__(self) -> None:
        super().__init__()
        self.totals: dict[tuple[str, str], VersionMetrics] = {}

    def add(self, at: float, region: str, metrics: Iterable[VersionMetrics]) -> None:
        metrics = tuple(metrics)
        super().add(at, region, metrics)
        for m in metrics:
            before = self.totals.get((m.module, m.version))
            self.totals[(m.module, m.version)] = m if before is None else merged(before, m)


class Telemetry:
    """The control plane's tracer provider (OTLP when configured) and the metric sources it feeds."""

    def __init__(
        self,
        *,
        service: str = "hotswap-control",
        instance: str = "",
        environ: Mapping[str, str] = os.environ,
        exporter: SpanExporter | None = None,
    ) -> None:
        resource = Resource.create(
            {"service.name": environ.get("OTEL_SERVICE_NAME", service), "service.instance.id": instance or "control"}
        )
        self.provider = TracerProvider(resource=resource, sampler=sampler_from_env(environ))
        self.registry_metrics = RegistryMetrics()
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if exporter is None and endpoint and environ.get("OTEL_SDK_DISABLED", "").lower() != "true":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        if exporter is not None:
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.window = CountingWindow()
        self.deployments = DeploymentTracing(self.tracer("hotswap.controller"))
        self.environ = environ
        self.meters: Any = None  # a MeterProvider while metrics go out over OTLP

    def tracer(self, name: str) -> trace.Tracer:
        return self.provider.get_tracer(name)

    def add_exporter(self, processor: SpanProcessor) -> None:
        """Another span processor (tests add an in-memory exporter's)."""
        self.provider.add_span_processor(processor)

    def export_metrics(self, samples: Callable[[], Sequence[Sample]], instance: str) -> bool:
        """Send `samples()` over OTLP too, when an endpoint is configured; True if so."""
        self.meters = start_metric_export(samples, service="hotswap-control", instance=instance, environ=self.environ)
        return self.meters is not None

    def shutdown(self) -> None:
        self.provider.shutdown()
        if self.meters is not None:
            self.meters.shutdown()


_VERSION = ("module", "version")
REGISTERED = Family("wasm.modules.registered.total", "counter", "Module versions registered since this process started")
EXECUTED = Family("wasm.deployments.executed.total", "counter", "Rollouts started (the rollout book)")
FAILED = Family("wasm.deployments.failed.total", "counter", "Rollouts rolled back or aborted")
INVOKED = Family(
    "wasm.functions.invoked.total", "counter", "Invocations the nodes reported, per module version", _VERSION
)
INVOKE_FAILED = Family(
    "wasm.functions.failed.total", "counter", "Failed invocations the nodes reported, per module version", _VERSION
)
LOAD_MS = Family(
    "wasm.module.load.duration",
    "histogram",
    "Registry load (validate and store) time in milliseconds",
    buckets=LOAD_BUCKETS_MS,
)
INVOKE_MS = Family(
    "wasm.function.invoke.duration",
    "histogram",
    "Invocation latency the nodes reported, in milliseconds",
    _VERSION,
    LATENCY_BUCKETS_MS,
)
DEPLOYMENT_S = Family(
    "wasm.deployment.duration",
    "histogram",
    "Rollout duration from start to its end, in seconds",
    buckets=DEPLOYMENT_BUCKETS_S,
)
SIZES = Family(
    "wasm.module.size.bytes", "histogram", "Binary size of the module versions registered", buckets=SIZE_BUCKETS
)
MODULES = Family("wasm.modules.count", "gauge", "Modules in the desired fleet")
NODES = Family("wasm.edge_nodes.count", "gauge", "Edge nodes known")
HEALTHY = Family("wasm.edge_nodes.healthy", "gauge", "Edge nodes healthy")
DEPLOYED = Family("wasm.modules.deployed.per_node", "gauge", "Module versions each node runs", ("node",))
MEMORY = Family("wasm.edge_node.memory.used.mb", "gauge", "Memory each node reported, in MB", ("node",))
CPU = Family("wasm.edge_node.cpu.percent", "gauge", "CPU use each node reported, percent", ("node",))
# In the order /metrics shows them; all of them also go out over OTLP.
COUNTED = (REGISTERED, EXECUTED, FAILED, INVOKED, INVOKE_FAILED, LOAD_MS, INVOKE_MS, DEPLOYMENT_S, SIZES)
FAMILIES = (*COUNTED, MODULES, NODES, HEALTHY, DEPLOYED, MEMORY, CPU)
COUNTERS = tuple(name for f in FAMILIES for name, kind in f.instruments() if kind == "counter")
GAUGES = tuple(name for f in FAMILIES for name, kind in f.instruments() if kind == "gauge")


def plane_reading(
    telemetry: Telemetry, records: Sequence[RolloutRecord], nodes: Sequence[NodeView], modules: int
) -> Reading:
    """Every family's points as the control plane sees the fleet: registrations from the registry,
    deployments from the rollout records, invocations from the nodes' heartbeats (cumulative), the
    gauges from the hub's view of the nodes."""
    registry = telemetry.registry_metrics
    totals = sorted(telemetry.window.totals.values(), key=lambda m: (m.module, m.version))
    durations = Histogram(DEPLOYMENT_BUCKETS_S)
    for record in records:
        if record.finished_at is not None:
            durations.observe(max(record.finished_at - record.created_at, 0.0))
    ids = [((m.module, m.version), m) for m in totals]
    return (
        (REGISTERED, [((), registry.registered)]),
        (EXECUTED, [((), len(records))]),
        (FAILED, [((), sum(r.phase in FAILED_PHASES for r in records))]),
        (INVOKED, [(v, m.requests) for v, m in ids]),
        (INVOKE_FAILED, [(v, m.errors) for v, m in ids]),
        (LOAD_MS, [((), registry.load_ms)]),
        (
            INVOKE_MS,
            [(v, Histogram(LATENCY_BUCKETS_MS, list(m.latency_buckets), m.latency_sum_ms, m.requests)) for v, m in ids],
        ),
        (DEPLOYMENT_S, [((), durations)]),
        (SIZES, [((), registry.sizes)]),
        (MODULES, [((), modules)]),
        (NODES, [((), len(nodes))]),
        (HEALTHY, [((), sum(v.status == "Healthy" for v in nodes))]),
        (DEPLOYED, [((v.id,), len(v.running)) for v in nodes]),
        (MEMORY, [((v.id,), v.memory_mb) for v in nodes]),
        (CPU, [((v.id,), v.cpu_percent) for v in nodes]),
    )


def render_metrics(
    telemetry: Telemetry, records: Sequence[RolloutRecord], nodes: Sequence[NodeView], modules: int
) -> str:
    """Prometheus text of every metric the spec names, as the control plane sees the fleet."""
    return "\n".join(prometheus_lines(plane_reading(telemetry, records, nodes, modules))) + "\n"


def plane_samples(
    telemetry: Telemetry, records: Sequence[RolloutRecord], nodes: Sequence[NodeView], modules: int
) -> list[Sample]:
    """What `render_metrics` shows, as OTLP samples (a histogram as its `.count` and `.sum`)."""
    return otlp_samples(plane_reading(telemetry, records, nodes, modules))


def start_metric_export(
    samples: Callable[[], Sequence[Sample]], *, service: str, instance: str, environ: Mapping[str, str] = os.environ
) -> Any:
    """The control plane's families over OTLP (`edge.metrics.start_metric_export`)."""
    return export_metrics(samples, FAMILIES, service=service, instance=instance, environ=environ)


# -- audit -------------------------------------------------------------------------------------


class AuditLog(Protocol):
    """What the approval audit needs of the state store."""

    def append_audit(self, actor: str, action: str, subject: str, detail: dict[str, Any] | None = None) -> Any: ...

    def audit_log(self, *, subject: str | None = None, after: int = 0, limit: int = 100) -> Sequence[Any]: ...


class ApprovalAudit:
    """Approvals the Git source finds (signed `Hotswap-Approve` commits, merged pull requests) and
    the ones it rejects, each appended to the audit log once: `approval.found` / `approval.rejected`,
    subject `module@version`. What is already in the log is read once, so a restart adds nothing."""

    def __init__(self, store: AuditLog) -> None:
        self.store = store
        self._seen: set[tuple[str, str, str, str]] | None = None

    def _load(self) -> set[tuple[str, str, str, str]]:
        seen: set[tuple[str, str, str, str]] = set()
        after = 0
        while entries := self.store.audit_log(after=after, limit=1000):
            for entry in entries:
                if entry.action in ("approval.found", "approval.rejected"):
                    seen.add((entry.action, entry.subject, str(entry.detail.get("commit")), entry.actor))
            after = entries[-1].seq
        return seen

    def record(self, approvals: Iterable[Approval], rejected: Iterable[RejectedApproval]) -> int:
        """Append what is new; returns how many lines were added."""
        if self._seen is None:
            self._seen = self._load()
        added = 0
        lines = [
            ("approval.found", a.target, a.commit, a.principal, {"via": a.via, "roles": sorted(a.roles)})
            for a in approvals
        ] + [
            ("approval.rejected", r.target, r.commit, r.claimed or "unknown", {"via": r.via, "reason": r.reason})
            for r in rejected
        ]
        for action, subject, commit, actor, detail in lines:
            key = (action, subject, commit, actor)
            if key in self._seen:
                continue
            self.store.append_audit(actor, action, subject, {"commit": commit, **detail})
            self._seen.add(key)
            added += 1
        return added


# -- logs --------------------------------------------------------------------------------------


__all__ = ["JsonFormatter", "Sample", "current_trace_id", "fit", "log_format", "setup_logging"]
