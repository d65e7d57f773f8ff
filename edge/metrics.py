"""Metric families declared once, rendered to Prometheus text and to OTLP from the declaration.

Where it sits: under `edge.telemetry` (the node's families) and `reconciler.apply.telemetry` (the control
plane's), which declare their `Family`s beside the code they describe and, at scrape or export time,
pair each family with its points (a `Reading`). This module knows no family and imports no other
hotswap module, so the control plane can use it without the node importing the control plane.

A family's name is the spec's, with dots: the OTLP instrument's name as is, and Prometheus's with
dots as underscores. A counter or gauge point is a number; a histogram point is a `Histogram`, which
Prometheus shows bucket by bucket and OTLP as the two counters `<name>.count` and `<name>.sum`.
Telemetry observes: the values come from the callers, nothing here counts or decides.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["counter", "gauge", "histogram"]
Number = int | float
Sample = tuple[str, str, Number, Mapping[str, str]]  # (OTLP name, counter | gauge, value, attributes)


@dataclass(frozen=True)
class Family:
    """One metric family: what both renderings say about it.

    `buckets` are a histogram's upper bounds (+Inf implied). `exported` False keeps a family out of
    OTLP (Prometheus only). `otlp_labels`, when set, are the labels OTLP keeps: points that differ
    only in the others are summed (the node's failures per reason go out as failures per version)."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    exported: bool = True
    otlp_labels: tuple[str, ...] | None = None

    @property
    def prometheus(self) -> str:
        return self.name.replace(".", "_")

    def instruments(self) -> tuple[tuple[str, Literal["counter", "gauge"]], ...]:
        """The OTLP instruments this family is exported as (none when not exported)."""
        if not self.exported:
            return ()
        if self.kind == "histogram":
            return ((f"{self.name}.count", "counter"), (f"{self.name}.sum", "counter"))
        return ((self.name, self.kind),)


@dataclass
class Histogram:
    """Counts per bucket (upper bounds, then +Inf), a sum and a count.

    `reported` is the source's own count of observations when it keeps one apart from its buckets
    (a node's requests): OTLP's `.count` carries it, Prometheus's `_count` adds up the buckets."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    reported: int | None = None

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float, count: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += count
        self.total += value * count

    @property
    def count(self) -> int:
        return sum(self.counts)


def fit(counts: Sequence[int], width: int) -> tuple[int, ...]:
    """Bucket counts as `width` buckets: missing ones are 0, extra ones fold into the last (+Inf)."""
    if len(counts) <= width:
        return (*counts, *(0,) * (width - len(counts)))
    return (*counts[: width - 1], sum(counts[width - 1 :]))


Value = Number | Histogram
Point = tuple[tuple[str, ...], Value]  # label values in the family's label order, and the value
Reading = Sequence[tuple[Family, Sequence[Point]]]


# -- Prometheus --------------------------------------------------------------------------------


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


def prometheus_lines(reading: Reading) -> list[str]:
    """The text exposition of each family in order: `# HELP`, `# TYPE`, then its points."""
    lines: list[str] = []
    for family, points in reading:
        name = family.prometheus
        lines.append(f"# HELP {name} {family.help}")
        lines.append(f"# TYPE {name} {family.kind}")
        for values, value in points:
            labels = ",".join(f'{key}="{escape(v)}"' for key, v in zip(family.labels, values, strict=True))
            if isinstance(value, Histogram):
                counts = fit(value.counts, len(family.buckets) + 1)
                lines += histogram_lines(name, labels, family.buckets, counts, value.total)
            else:
                lines.append(f"{name}{{{labels}}} {value}" if labels else f"{name} {value}")
    return lines


# -- OTLP --------------------------------------------------------------------------------------


def otlp_samples(reading: Reading) -> list[Sample]:
    """The exported families' points as OTLP samples, a histogram as its `.count` and `.sum`."""
    out: list[Sample] = []
    for family, points in reading:
        if not family.exported:
            continue
        kept = family.labels if family.otlp_labels is None else family.otlp_labels
        summed: dict[tuple[tuple[str, str], ...], list[Number]] = {}
        for values, value in points:
            attributes = tuple((k, v) for k, v in zip(family.labels, values, strict=True) if k in kept)
            if isinstance(value, Histogram):
                count = value.count if value.reported is None else value.reported
                parts: list[Number] = [count, value.total]
            else:
                parts = [value]
            before = summed.get(attributes)
            summed[attributes] = parts if before is None else [a + b for a, b in zip(before, parts, strict=True)]
        for attributes, parts in summed.items():
            for (name, kind), value in zip(family.instruments(), parts, strict=True):
                out.append((name, kind, value, dict(attributes)))
    return out


def start_metric_export(
    samples: Callable[[], Sequence[Sample]],
    families: Iterable[Family],
    *,
    service: str,
    instance: str,
    environ: Mapping[str, str] = os.environ,
) -> Any:
    """Export `samples()` over OTLP/HTTP every `OTEL_METRIC_EXPORT_INTERVAL` ms (default 60 s) when an
    OTLP endpoint is set, one observable instrument per name `families` export; returns the meter
    provider (call `shutdown()`), or None when off. The samples are read at export time only, on
    the exporter's thread: nothing is added to the execute path, and a read that races the event
    loop is skipped for that round."""
    endpoint = environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint or environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

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

    for family in families:
        for name, kind in family.instruments():
            if kind == "counter":
                meter.create_observable_counter(name, callbacks=[observe(name)])
            else:
                meter.create_observable_gauge(name, callbacks=[observe(name)])
    return provider
