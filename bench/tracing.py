"""What tracing costs the execute hot path: the same edge node with tracing off, at the default
sampling, and tracing every call, measured in alternating rounds of the same run.

    python bench/tracing.py            9 rounds of 2 s per configuration (about a minute on 2 cores)
    python bench/tracing.py --quick    1 round of 1 s (what CI may run; never fails on a time)

Three standalone nodes serve calc (fleet-example) and export to an OTLP/HTTP sink (a process that
counts the spans it gets): `off` has no OTLP endpoint (no tracer provider at all); `default` has
one and samples execute calls without a parent at the default ratio (0.01); `all` samples every
call (`OTEL_TRACES_SAMPLER=parentbased_always_on`). The nodes run pinned to CPU 0, the client
(raw asyncio HTTP/1.1 keep-alive, 32 connections) here on CPU 1. Prints req/s and latency per
configuration and the ratios to `off` (the figure that counts: default/off, target > 0.90).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stats import percentile, pin  # noqa: E402

CALC = ROOT / "fleet-example" / "wasm" / "calc-1.0.0.wat"
CONCURRENCY = 32
BODY = {"module": "calc", "function": "add", "args": [2, 3]}


def sink(port_file: str) -> None:
    """An OTLP/HTTP receiver that only counts what it gets (spans are not decoded)."""
    from aiohttp import web

    received = {"requests": 0, "bytes": 0}

    async def traces(request: web.Request) -> web.Response:
        received["requests"] += 1
        received["bytes"] += len(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(received)

    async def main() -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", traces)
        app.router.add_get("/stats", stats)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        Path(port_file).write_text(str(port))  # noqa: ASYNC240 - once, before serving
        await asyncio.Event().wait()

    asyncio.run(main())


def start_sink(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = tmp / "sink.port"
    proc = subprocess.Popen([sys.executable, __file__, "--sink", str(port_file)])
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline:
            raise RuntimeError("the OTLP sink did not start")
        time.sleep(0.02)
    return proc, int(port_file.read_text())


def start_node(tmp: Path, name: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    folder = tmp / name
    folder.mkdir()
    (folder / "calc.wat").write_text(CALC.read_text())
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hotswap", "edge", "--standalone", str(folder), "--port", "0",
         "--cache-dir", str(tmp / "cache"), "--log-level", "ERROR"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**environ, **env},
    )  # fmt: skip
    pin(proc.pid, 0)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "serving" not in line:
        raise RuntimeError(f"the node did not start: {line!r}")
    return proc, int(line.strip().rsplit(":", 1)[1])


def request_bytes(port: int) -> bytes:
    data = json.dumps(BODY).encode()
    head = (
        f"POST /api/v1/wasm/execute HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


async def _connection(port: int, payload: bytes, stop_at: float, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    clock = time.perf_counter
    try:
        while clock() < stop_at:
            started = clock()
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            at = head.find(b"Content-Length: ")
            await reader.readexactly(int(head[at + 16 : head.index(b"\r\n", at)]))
            if head[9:12] != b"200":
                raise RuntimeError(f"execute answered {head[9:12].decode()}")
            latencies.append(clock() - started)
    finally:
        writer.close()


async def hammer(port: int, seconds: float) -> tuple[float, list[float]]:
    payload = request_bytes(port)
    await asyncio.gather(*(_connection(port, payload, time.perf_counter() + 0.2, []) for _ in range(CONCURRENCY)))
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(_connection(port, payload, started + seconds, latencies) for _ in range(CONCURRENCY)))
    return len(latencies) / (time.perf_counter() - started), latencies


def hot_path_costs(n: int = 20000) -> tuple[float, float, float]:
    """(unsampled decision, one sampled span, expected per call at the default ratio) in µs, in this
    process, with an exporter that drops what it gets."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from edge import telemetry

    class Drop(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracing = telemetry.configure_tracing("bench", exporter=Drop(), environ={})
    tracing.ratio = 0.0
    started = time.perf_counter()
    for _ in range(n):
        tracing.sample(None)
    decision = (time.perf_counter() - started) / n * 1e6
    attributes = telemetry.module_attributes("calc", "1.0.0")
    started = time.perf_counter()
    for _ in range(n // 10):
        with tracing.tracer.start_as_current_span("wasm.function.invoke", attributes=attributes) as span:
            span.set_attribute("http.response.status_code", 200)
    span_cost = (time.perf_counter() - started) / (n // 10) * 1e6
    tracing.shutdown()
    return decision, span_cost, decision + telemetry.DEFAULT_RATIO * span_cost


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sink", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        sink(args.sink)
        return 0
    rounds, seconds = (1, 1.0) if args.quick else (9, 2.0)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        sink_proc, sink_port = start_sink(tmp)
        endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}"}
        configs = {
            "off": {},
            "default": endpoint,
            "all": {**endpoint, "OTEL_TRACES_SAMPLER": "parentbased_always_on"},
        }
        # off and default alternate; all (which keeps its exporter busy) runs last, alone.
        nodes = {name: start_node(tmp, name, env) for name, env in configs.items() if name != "all"}
        rates: dict[str, list[float]] = {name: [] for name in configs}
        latencies: dict[str, list[float]] = {name: [] for name in configs}
        try:
            for _ in range(rounds):
                for name, (_, port) in nodes.items():
                    rate, lat = asyncio.run(hammer(port, seconds))
                    rates[name].append(rate)
                    latencies[name].extend(lat)
            for proc, _ in nodes.values():
                proc.terminate()
            nodes["all"] = start_node(tmp, "all", configs["all"])
            for _ in range(rounds):
                rate, lat = asyncio.run(hammer(nodes["all"][1], seconds))
                rates["all"].append(rate)
                latencies["all"].extend(lat)
            time.sleep(6)  # the batch processor exports every 5 s
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{sink_port}/stats") as answer:
                received = json.load(answer)
        finally:
            for proc, _ in nodes.values():
                proc.terminate()
            sink_proc.terminate()
            for proc, _ in nodes.values():
                proc.wait(timeout=10)
            sink_proc.wait(timeout=10)
    print(
        f"tracing cost on execute: {rounds} round(s) x {seconds:g} s per configuration, {CONCURRENCY} connections, "
        f"{platform.machine()} x{os.cpu_count()}, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'configuration':<10} {'req/s (median)':>15} {'rounds':>28} {'p50 ms':>8} {'p99 ms':>8}")
    for name in configs:
        each = ", ".join(f"{r:,.0f}" for r in rates[name])
        print(
            f"{name:<10} {statistics.median(rates[name]):>15,.0f} {each:>28} "
            f"{percentile(latencies[name], 0.5) * 1e3:>8.2f} {percentile(latencies[name], 0.99) * 1e3:>8.2f}"
        )
    off = statistics.median(rates["off"])
    paired = [d / o for d, o in zip(rates["default"], rates["off"], strict=True)]
    print(
        f"default/off req/s: {statistics.median(paired):.3f} median of the paired rounds "
        f"({', '.join(f'{p:.2f}' for p in paired)}); ratio of medians {statistics.median(rates['default']) / off:.3f}; "
        "target > 0.90"
    )
    print(f"all/off req/s: {statistics.median(rates['all']) / off:.3f}")
    print(f"OTLP sink: {received['requests']} export requests, {received['bytes']:,} bytes")
    decision, span_cost, expected = hot_path_costs()
    budget = 1e6 / max(rates["off"])  # µs of node time per request at the best rate seen
    print(
        f"in-process, per execute call: unsampled decision {decision:.2f} µs; a sampled span (start, attributes, "
        f"end, queued for export) {span_cost:.1f} µs; expected at the default ratio {expected:.2f} µs = "
        f"{100 * expected / budget:.2f} % of the {budget:.0f} µs a request takes at the best rate seen"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
