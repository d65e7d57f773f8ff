"""Interface registry figures: WIT parsing (cold and cached), module validation against an interface.

The spec's target is validation of a module against an interface in p99 < 5 ms. Parsing runs
wasm-tools (a subprocess) once per WIT content; `check_module` is pure Python over the parsed package
and the inspected binary, which is what a validation pass pays per module.

    python bench/interfaces.py [--quick]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.wasm import inspect  # noqa: E402
from edge.wat import compile_wat  # noqa: E402
from reconciler.interfaces import check_module, clear_cache, compare, parse_wit  # noqa: E402
from reconciler.interfaces.wit import wasm_tools  # noqa: E402
from tests.interfaces.conftest import GREETER, GREETER_WAT, WASI, WASI_DEPS, dummy_component  # noqa: E402

GRANTED = frozenset({"process", "clocks", "random", "stdio"})


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    """Milliseconds per call, `runs` calls after two warm-up calls."""
    fn()
    fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def line(what: str, samples: list[float]) -> None:
    print(f"{what:<56} p50 {statistics.median(samples):8.3f} ms   p99 {p99(samples):8.3f} ms   n={len(samples)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (for CI)")
    args = parser.parse_args()
    runs, cold_runs = (200, 10) if args.quick else (5000, 50)
    print(f"interfaces: {platform.machine()} {platform.python_version()}, wasm-tools {wasm_tools()}")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        counter = iter(range(10**6))

        def cold_greeter() -> None:  # a new version each time: nothing cached
            n = next(counter)
            path = folder / f"g{n}.wit"
            path.write_text(GREETER.replace("1.0.0", f"1.0.{n}"))
            parse_wit(path)

        line("parse_wit greeter.wit, cold (wasm-tools)", timed(cold_greeter, cold_runs))

        http = folder / "http"
        (http / "deps").mkdir(parents=True)
        shutil.copy(WASI / "http.wit", http)
        for dep in WASI_DEPS["http"]:
            shutil.copy(WASI / f"{dep}.wit", http / "deps")

        def cold_http() -> None:
            clear_cache()
            parse_wit(http)

        line("parse_wit wasi:http + 5 deps, cold (wasm-tools)", timed(cold_http, cold_runs))
        greeter_path = folder / "greeter.wit"
        greeter_path.write_text(GREETER)
        line("parse_wit greeter.wit, cached (hash of the text)", timed(lambda: parse_wit(greeter_path), runs))

        greeter = parse_wit(greeter_path)
        wasi_http = parse_wit(http)
        data = compile_wat(GREETER_WAT)
        info = inspect(data)
        assert check_module(info, greeter, "greet", GRANTED, "preview1") == []
        line(
            "check_module core greeter vs example:greeter/greet",
            timed(lambda: check_module(info, greeter, "greet", GRANTED, "preview1"), runs),
        )
        line(
            "inspect + check_module (validation of the binary too)",
            timed(lambda: check_module(inspect(data), greeter, "greet", GRANTED, "preview1"), runs),
        )
        line(
            "check_module core module vs wasi:http/types (40 fns)",
            timed(lambda: check_module(info, wasi_http, "types", GRANTED, "preview1"), runs),
        )
        v2 = folder / "v2.wit"
        v2.write_text(GREETER.replace("1.0.0", "2.0.0").replace("  health: func() -> u32;\n", ""))
        newer = parse_wit(v2)
        line("compare greeter 1.0.0 -> 2.0.0 (breaking)", timed(lambda: compare(greeter, newer), runs))
        line("compare wasi:http with itself", timed(lambda: compare(wasi_http, wasi_http), runs))

        component = dummy_component(greeter_path, "greeter", folder / "greeter.component.wasm")
        component_info = inspect(component)

        def cold_targets() -> None:
            clear_cache()
            check_module(component_info, greeter, "greet", GRANTED, "preview2", binary=component)

        line("check_module component, cold (wasm-tools targets)", timed(cold_targets, cold_runs))
        line(
            "check_module component, cached (digests)",
            timed(lambda: check_module(component_info, greeter, "greet", GRANTED, "preview2"), runs),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
