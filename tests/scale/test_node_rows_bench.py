"""bench/node_rows.py runs on a small fleet, on PostgreSQL and SQLite, and prints each figure it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_node_rows_bench_prints_its_figures(database_url: str) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "node_rows.py"), "--nodes", "40", "--rounds", "2",
         "--database-url", database_url],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    for store in ("PostgreSQL", "SQLite"):
        assert f"{store}: publish_assignments of 40 tables: median " in out, out
        assert f"{store}: get_nodes of 20 rows, 500 a read: median " in out, out
    assert out.count("(n=2)") == 4, out
