"""bench/fleet_reads.py runs on a small fleet and prints each figure it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_fleet_reads_bench_prints_its_figures() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fleet_reads.py"), "--nodes", "60", "--beats", "10", "--rounds", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    figures = ("a pass's read (view_in_turns)", "the read from scratch", "check_health", "next_health_change")
    assert all(f"{figure}" in out for figure in figures) and out.count(": median ") == 4, out
    assert "a pass's read against the read from scratch, medians: " in out, out
