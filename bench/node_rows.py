"""Benchmark: a pass's tables written to the state store, and another replica's read of them back.

Run from the repository root: `python bench/node_rows.py [--nodes 5000] [--rounds 7] [--database-url URL]`.
`--nodes` nodes in 10 regions, each region's nodes given one table of 11 entries (the same objects, as
a pass's publish gives them: `TableEncoder` shares one table per content). Each round publishes a new
version to every node (`publish_assignments`, one call: what `NodeHub.publish_all` writes), then a
fresh store, as another replica, reads half the nodes back (`get_nodes`, in the 500-row chunks a
follower reads). It prints the median and p99 of each, on PostgreSQL (a private server as the tests
start one, or `--database-url`) and on SQLite.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ha import fresh_schema
from bench.stats import machine, percentile
from reconciler.store.records import JsonObject, NodeRecord
from reconciler.store.state import open_state_store

REGIONS = 10
ENTRIES = 11
READ_CHUNK = 500  # reconciler.apply.leader.READ_CHUNK


def tables(version: str) -> list[JsonObject]:
    """One table a region, as the store is given it (`EncodedTable.assignment`)."""
    out: list[JsonObject] = []
    for region in range(REGIONS):
        modules: list[JsonObject] = [
            {
                "module": f"r{region}-mod-{k}" if k else "global",
                "version": version if not k else "1.0.0",
                "digest": "sha256:" + f"{region:04d}{k:060d}",
                "weight": 100,
                "interface": None,
                "wasi": "preview1",
                "grants": {},
                "smoke": [],
                "limits": {"memory_mb": 64, "timeout_ms": 1000, "fuel": None},
            }
            for k in range(ENTRIES)
        ]
        out.append({"modules": modules})
    return out


def measure(url: str, nodes: int, rounds: int) -> tuple[list[float], list[float]]:
    writer = open_state_store(database_url=url)
    ids = [f"node-{i:05d}" for i in range(nodes)]
    for i, node_id in enumerate(ids):
        writer.upsert_node(NodeRecord(id=node_id, region=f"r{i % REGIONS}", url=f"http://127.0.0.1:9/{node_id}"))
    publishes: list[float] = []
    reads: list[float] = []
    try:
        for r in range(rounds + 1):
            given = tables(f"1.{r}.0")
            rows = [(node_id, given[i % REGIONS]) for i, node_id in enumerate(ids)]
            started = time.perf_counter()
            writer.publish_assignments(rows)
            published = time.perf_counter() - started
            reader = open_state_store(database_url=url)  # another replica: nothing read before
            try:
                started = time.perf_counter()
                for chunk in range(0, nodes // 2, READ_CHUNK):
                    reader.get_nodes(ids[chunk : min(chunk + READ_CHUNK, nodes // 2)])
                read = time.perf_counter() - started
            finally:
                reader.close()
            if r:  # the first round warms the caches and the connections
                publishes.append(published * 1000)
                reads.append(read * 1000)
    finally:
        writer.close()
    return publishes, reads


def figures(values: list[float]) -> str:
    return f"median {statistics.median(values):.1f} ms, p99 {percentile(values, 0.99):.1f} ms (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--database-url", help="a PostgreSQL to use (a fresh schema on it); default: a private one")
    args = parser.parse_args()
    print(machine())
    print(f"{args.nodes} nodes, {REGIONS} distinct tables of {ENTRIES} entries, {args.rounds} rounds")
    with fresh_schema(args.database_url) as url, tempfile.TemporaryDirectory() as tmp:
        for name, where in (("PostgreSQL", url), ("SQLite", f"sqlite:{Path(tmp) / 'state.db'}")):
            publishes, reads = measure(where, args.nodes, args.rounds)
            print(f"{name}: publish_assignments of {args.nodes} tables: {figures(publishes)}")
            print(f"{name}: get_nodes of {args.nodes // 2} rows, {READ_CHUNK} a read: {figures(reads)}")


if __name__ == "__main__":
    main()
