"""bench/binding.py runs (`--quick`) and prints each figure it promises, for both fleet sizes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_binding_bench_prints_its_figures() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "binding.py"), "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    assert "1,000 nodes, two tables:" in out and "5,000 nodes, two tables:" in out, out
    sections = out.split("nodes, two tables:")[1:]
    figures = ("the batch's tree and signature", "one table signature alone", "its path", "checking its binding")
    assert len(sections) == 2 and all(f"{figure}: median" in s for s in sections for figure in figures), out
