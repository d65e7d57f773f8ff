"""The metric families as declared (edge.metrics.Family) against what each rendering shows: every
family the node or the control plane declares appears in its Prometheus text with its type and help,
and every exported one as its OTLP instruments, so a family cannot drift between the two."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge import telemetry as node
from edge.metrics import Family, Histogram, Reading, otlp_samples, prometheus_lines
from edge.protocol import VersionMetrics
from reconciler.apply import telemetry as plane
from reconciler.apply.noderows import NodeView

CALC = VersionMetrics(
    module="calc", version="1.0.0", requests=4, errors=3, traps=2, cpu=1, latency_buckets=(3, 1), latency_sum_ms=2.5
)
VIEW = NodeView(
    "edge-1", "us-east", "http://edge-1", "Healthy", 10, 1, 1, (("calc", "1.0.0", "d", 100),), {}, None, 1, 2
)


def node_reading() -> Reading:
    return node.node_reading(node.NodeStats(), [node.Serving(CALC, 100, 1)], node_id="edge-1", modules=1)


def plane_reading() -> Reading:
    telemetry = plane.Telemetry(environ={})
    telemetry.window.add(1.0, "us-east", [CALC])
    return plane.plane_reading(telemetry, (), [VIEW], 1)


def prometheus_name(family: Family) -> str:
    """The name prometheus_client's parser gives a family (a counter's without `_total`)."""
    return family.prometheus.removesuffix("_total") if family.kind == "counter" else family.prometheus


@pytest.mark.parametrize("reading", [node_reading, plane_reading], ids=["node", "control-plane"])
def test_every_declared_family_renders_to_prometheus_with_its_type_and_help(reading: Callable[[], Reading]) -> None:
    taken = reading()
    parsed = {f.name: f for f in text_string_to_metric_families("\n".join(prometheus_lines(taken)) + "\n")}
    for family, _ in taken:
        found = parsed[prometheus_name(family)]
        assert (found.type, found.documentation) == (family.kind, family.help), family.name
        for sample in found.samples:
            assert set(sample.labels) - {"le"} == set(family.labels), sample


@pytest.mark.parametrize("reading", [node_reading, plane_reading], ids=["node", "control-plane"])
def test_every_exported_family_goes_out_as_its_otlp_instruments(reading: Callable[[], Reading]) -> None:
    taken = reading()
    samples = otlp_samples(taken)
    sent = {(name, kind) for name, kind, _, _ in samples}
    for family, points in taken:
        instruments = set(family.instruments())
        assert instruments <= sent if family.exported and points else not instruments & sent, family.name


def test_the_declarations_are_what_each_side_exports() -> None:
    # What start_metric_export creates instruments for is what the samples name, and no more.
    assert {n for n, *_ in otlp_samples(node_reading())} == {*node.COUNTERS, *node.GAUGES}
    assert {n for n, *_ in otlp_samples(plane_reading())} == {*plane.COUNTERS, *plane.GAUGES}
    # The node and the control plane agree on the type and labels of the families both export.
    both = {f.name: f for f in node.FAMILIES if f.exported}.keys() & {f.name for f in plane.FAMILIES}
    assert len(both) == 15
    for name in both:
        (mine,) = (f for f in node.FAMILIES if f.name == name)
        (theirs,) = (f for f in plane.FAMILIES if f.name == name)
        assert mine.kind == theirs.kind and (mine.otlp_labels or mine.labels) == theirs.labels, name


def test_otlp_sums_away_the_labels_a_family_keeps_out_of_it() -> None:
    # The node's failures per reason go out over OTLP as failures per version (traps 2 + cpu 1).
    failed = [s for s in otlp_samples(node_reading()) if s[0] == "wasm.functions.failed.total"]
    assert failed == [("wasm.functions.failed.total", "counter", 3, {"module": "calc", "version": "1.0.0"})]


def test_a_histogram_goes_to_otlp_as_count_and_sum_with_the_reported_count() -> None:
    family = Family("x.duration", "histogram", "X", buckets=(1.0,))
    reading = ((family, [((), Histogram((1.0,), [1, 1], 3.0, reported=5))]),)
    assert otlp_samples(reading) == [("x.duration.count", "counter", 5, {}), ("x.duration.sum", "counter", 3.0, {})]
    assert prometheus_lines(reading)[-1] == "x_duration_count 2"  # Prometheus adds up its buckets
