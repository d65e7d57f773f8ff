"""Scale, small: bench/scale.py's simulated fleet against a real control plane process.

Thirty lightweight agents (three per region) speak the node protocol over HTTP to `ControlPlane` in a
child process: they register with node tokens, long-poll their tables, heartbeat what they were
assigned. The fleet converges on its first tables (ten module placements per node), a blue-green
switch of the module every node carries reaches every agent, and a canary driven by the agents'
reported traffic promotes. The full-size run (1,000 nodes, 10,000 placements) is
`python bench/scale.py`; its figures are in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "bench" / "scale.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_a_simulated_fleet_converges_switches_and_promotes_a_canary(tmp_path: Path) -> None:
    bench = load_bench()
    args = argparse.Namespace(nodes=30, runs=1, profile=None, heartbeat_seconds=1.0)
    out = await bench.measure(args, tmp_path)  # asserts both rollouts end Promoted
    assert out["placements"] == 300
    assert out["agent_errors"] == 0  # no call of the node protocol failed
    assert len(out["blue_green_s"]) == 1
    assert out["canary_converged_s"] >= out["canary_promoted_s"] > 0
    assert out["passes_ms"] and out["first_passes"] >= 1
    assert out["memory_end_kb"]["VmRSS"] > 0
