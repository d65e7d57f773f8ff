"""Benchmark: binding a fleet's tables to their nodes and generations (`edge.tablebinding`).

Run from the repository root: `python bench/binding.py` (`--quick`: fewer rounds). After a publish,
the first long-poll answer binds every node whose table changed (`NodeTables.binding`): one Merkle
tree over the batch and one signature, on the control plane's event loop. This prints, for 1,000 and
5,000 nodes (half on one table, half on another, as a blue-green's two phases have them), the median
and p99 over the rounds of:
- that first binding (the whole batch), against one table signature made the same way (the baseline:
  what signing a single table costs in the same run);
- every later node's answer (its path from the tree, made then) per node;
- a node checking its binding (`edge.tablecache.verify_binding`).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stats import percentile
from edge.protocol import ModuleEntry, ModuleTable
from edge.tablecache import TrustedKey, verify_binding
from reconciler.api.auth import AuthOptions, TokenAuthority
from reconciler.apply.nodetables import NodeTables
from reconciler.apply.tables import TableEncoder

DIGEST = "sha256:" + "ab" * 32


def tables(weight: int) -> tuple[ModuleEntry, ...]:
    return (
        ModuleEntry(module="greeter", version="1.0.0", digest=DIGEST, weight=100 - weight),
        ModuleEntry(module="greeter", version="1.1.0", digest=DIGEST.replace("ab", "cd"), weight=weight),
    )


def line(what: str, values: list[float]) -> None:
    median, p99 = statistics.median(values), percentile(values, 0.99)
    print(f"  {what}: median {median:.3f} ms, p99 {p99:.3f} ms (n={len(values)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 3 if args.quick else 15
    print(f"binding bench: {platform.machine()}, Python {platform.python_version()}, {rounds} rounds")
    authority = TokenAuthority.load(AuthOptions(), Path(tempfile.mkdtemp()) / "control")
    key = TrustedKey(authority.public_key_pem, "hotswap")
    contents = (tables(0), tables(100))
    for count in (1000, 5000):
        first, single, later, checks = [], [], [], []
        for r in range(rounds):
            node_tables = NodeTables(TableEncoder(authority.sign, "hotswap"))
            for i in range(count):
                table = ModuleTable.model_construct(generation=r + i + 1, modules=contents[i % 2], traceparents={})
                node_tables.set(f"edge-{i:05d}", table)
            started = time.perf_counter()
            authority.sign({"aud": "hotswap-table", "sha256": "ab" * 32, "iat": r})
            single.append((time.perf_counter() - started) * 1e3)
            node = "edge-00000"
            started = time.perf_counter()
            node_tables.binding(node, node_tables.by_node[node])
            first.append((time.perf_counter() - started) * 1e3)
            started = time.perf_counter()
            values = {n: node_tables.binding(n, t) for n, t in node_tables.by_node.items() if n != node}
            later.append((time.perf_counter() - started) * 1e3 / max(len(values), 1))
            sha = node_tables._encoding("edge-00001", node_tables.by_node["edge-00001"]).sha256
            generation = node_tables.by_node["edge-00001"].generation
            started = time.perf_counter()
            verify_binding("edge-00001", generation, sha, values["edge-00001"], key)
            checks.append((time.perf_counter() - started) * 1e3)
        print(f"{count:,} nodes, two tables:")
        line("first answer after a publish: the batch's tree and signature", first)
        line("baseline: one table signature alone", single)
        line("each later answer: its path", later)
        line("a node checking its binding", checks)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
