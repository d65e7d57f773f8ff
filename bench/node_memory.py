"""Node memory: a real node process's RSS with 0, 10, 50 and 100 module versions loaded.

    python bench/node_memory.py                 two passes, about half a minute on 2 cores
    python bench/node_memory.py --workers 2     the same node as a supervisor and 2 workers (RSS summed)

Where it sits: beside bench/edge.py (which times the node) this measures what loaded versions cost in
memory, the issue 20 figure "node RSS with 100 loaded versions". The node is `hotswap edge
--standalone DIR`: the same Runtime and Router a managed node drives, without a control plane in the
way. Every version is a distinct binary, a WAT variant compiled here by `edge.wasm.compile_wat` (the
project's own tooling): `--functions` small functions with their own constants, one page of memory,
an exported `run`. Versions go to the folder in steps and SIGHUP makes the node scan it; a step
counts once `GET /health` shows that generation with that many versions.

At each step it prints the node's VmRSS and VmHWM (/proc/PID/status) and PSS (smaps_rollup: shared
pages split between the processes that map them) right after the load, and
VmRSS again after one execute call to every loaded version (calls instantiate: an instance, its
linear memory, its WASI context). Two passes, each a new node process on the same cache dir:
  * cold: every version is compiled (Cranelift) and its artifact written to the cache;
  * warm: every version is deserialized from the precompiled artifact, as a restarted node does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge import wasm  # noqa: E402

STEPS = (0, 10, 50, 100)
DEADLINE = 300.0  # seconds for one step (the cold pass compiles)


def variant(index: int, functions: int) -> bytes:
    """Version `index` as a binary no other index gives: its own constants in every function."""
    funcs = "\n".join(
        f"(func $f{i} (param i32) (result i32) local.get 0 i32.const {index * 7919 + i} i32.add i32.const 3 i32.mul)"
        for i in range(functions)
    )
    calls = " ".join(f"call $f{i}" for i in range(0, functions, max(functions // 8, 1)))
    run = f'(func (export "run") (param i32) (result i32) local.get 0 {calls})'
    return wasm.compile_wat(f'(module (memory (export "memory") 1) {funcs} {run})')


def layout(index: int, per_module: int) -> tuple[str, str]:
    """Module name and version of the `index`-th version: `per_module` versions of each module."""
    return f"m{index // per_module:03d}", f"1.0.{index % per_module}"


def status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process (/proc/PID/status) and its Pss (smaps_rollup), in kB."""
    out = {}
    for path in (f"/proc/{pid}/status", f"/proc/{pid}/smaps_rollup"):
        for line in Path(path).read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Pss"):
                out[key] = int(value.split()[0])
    return out


def processes(pid: int) -> list[int]:
    """The node's processes: the node, and its workers when it has them (its children)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [pid, *children]


def memory(pid: int) -> tuple[float, float, float]:
    """RSS, peak RSS and PSS in MB, summed over the node's processes. With workers the RSS sum counts
    the pages they share (the interpreter, wasmtime's library) once per process; PSS splits them."""
    figures = [status(p) for p in processes(pid)]

    def total(key: str) -> float:
        return sum(f[key] for f in figures) / 1024

    return total("VmRSS"), total("VmHWM"), total("Pss")


def get(url: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(url: str, generation: int, versions: int, node: subprocess.Popen[str]) -> None:
    """Until the node's health shows `generation` with `versions` loaded (polling, with a deadline)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        _, raw = get(f"{url}/health")
        health = json.loads(raw)
        if health["generation"] >= generation and health["versions"] == versions:
            return
        if node.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the node did not load {versions} versions: {health}")
        time.sleep(0.05)


def call_each(url: str, count: int, per_module: int) -> None:
    for index in range(count):
        module, pinned = layout(index, per_module)
        body = json.dumps({"module": module, "function": "run", "args": [index]}).encode()
        headers = {"Content-Type": "application/json", "X-Hotswap-Version": pinned}
        code, raw = get(f"{url}/api/v1/wasm/execute", headers, body)
        if code != 200:
            raise RuntimeError(f"{module}@{pinned}: {code} {raw[:200]!r}")


def run_pass(name: str, tmp: Path, binaries: list[bytes], args: argparse.Namespace) -> list[tuple[str, ...]]:
    folder = tmp / f"modules-{name}"
    folder.mkdir()
    node = subprocess.Popen(
        [sys.executable, "-m", "hotswap", "edge", "--standalone", str(folder), "--port", "0",
         "--cache-dir", str(tmp / "cache"), "--log-level", "ERROR", "--workers", str(args.workers)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    rows: list[tuple[str, ...]] = []
    try:
        assert node.stdout is not None
        line = node.stdout.readline()
        if "serving" not in line:
            raise RuntimeError(f"the node did not start: {line!r}")
        url = "http://127.0.0.1:" + line.strip().rsplit(":", 1)[1]
        generation = 1
        for count in STEPS:
            if count:
                for index in range(len(list(folder.iterdir())), count):
                    module, ver = layout(index, args.per_module)
                    (folder / f"{module}@{ver}.wasm").write_bytes(binaries[index])
                node.send_signal(signal.SIGHUP)
                generation += 1
                started = time.monotonic()
                wait_for(url, generation, count, node)
                took = time.monotonic() - started
            else:
                wait_for(url, generation, 0, node)
                took = 0.0
            rss, hwm, pss = memory(node.pid)
            call_each(url, count, args.per_module)
            called, _, _ = memory(node.pid)
            rows.append((name, str(count), f"{rss:.1f}", f"{hwm:.1f}", f"{pss:.1f}", f"{called:.1f}", f"{took:.2f}"))
            print(
                f"  {name}: {count:3d} versions: VmRSS {rss:.1f} MB, VmHWM {hwm:.1f} MB, PSS {pss:.1f} MB, "
                f"VmRSS after one call each {called:.1f} MB (step loaded in {took:.2f} s)",
                flush=True,
            )
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
        if node.stdout is not None:
            node.stdout.close()
    return rows


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor() or "?",
    )
    total = next(
        line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return (
        f"{platform.machine()}, {os.cpu_count()} cores ({model}), {int(total) / 1024**2:.1f} GB RAM, "
        f"Linux {platform.release()}, Python {platform.python_version()}, wasmtime {version('wasmtime')}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--functions", type=int, default=50, help="functions in each version (default 50)")
    parser.add_argument(
        "--per-module", type=int, default=2, help="versions of each module (default 2: stable + canary)"
    )
    parser.add_argument("--workers", type=int, default=1, help="node processes (default 1; more: RSS summed)")
    args = parser.parse_args()
    binaries = [variant(i, args.functions) for i in range(STEPS[-1])]
    assert len(set(binaries)) == len(binaries)  # distinct binaries: no cache entry is shared
    sizes = sorted(len(b) for b in binaries)
    print(f"node memory bench: {machine()}")
    print(f"date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"command: python bench/node_memory.py --functions {args.functions} --per-module {args.per_module} "
        f"--workers {args.workers}"
    )
    print(
        f"{len(binaries)} versions ({len(binaries) // args.per_module} modules x {args.per_module}), "
        f"{sizes[0]}-{sizes[-1]} bytes each, {args.functions} functions, 1 page (64 KiB) of memory"
    )
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("cold", "warm"):
            rows += run_pass(name, Path(tmp), binaries, args)
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\n| pass | versions | VmRSS MB | VmHWM MB | PSS MB | VmRSS after one call each, MB | step load s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
