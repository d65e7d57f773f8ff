"""Benchmark: what the control plane's event loop reads of a large fleet at every pass and wake.

Run from the repository root: `python bench/fleet_reads.py [--nodes 5000] [--beats 200] [--rounds 15]`.
A `NodeHub` over the embedded store holds `--nodes` nodes, each reporting a 10-module table. Each
round, `--beats` of them heartbeat (a second of a 5,000-node fleet's heartbeats), then it times, on
the loop:
- a pass's read of the fleet as it is now (`NodeHub.view_in_turns`: the views of the nodes a watcher
  saw change since the last pass), against a read of every node in the same round (`view`, whose
  views are cached by row, and every node's table: what a pass did before);
- the controller loop's health check of every node (`check_health`) and its wait for the next
  health change (`next_health_change`), each a walk of the fleet.
It prints the median and p99 of each, and the ratio of the pass's read to the read from scratch.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stats import machine, percentile
from edge.nodeapi import Heartbeat, Registration, Running
from edge.protocol import ModuleTable
from reconciler.apply.nodes import NodeHub
from reconciler.store.state import open_state_store

RUNNING = tuple(
    Running(module=f"mod-{k}", version="1.0.0", digest="sha256:" + f"{k:064d}", weight=100) for k in range(10)
)


def from_scratch(hub: NodeHub, now: float) -> list[ModuleTable | None]:
    """Every node's view (`NodeHub.view`: its cached view when the row is the same) and table: what a pass
    read before it kept its own views."""
    return [hub.table(view.id) for view in hub.view(now)]


async def timed(samples: dict[str, list[float]], name: str, call: Callable[[], Awaitable[object] | object]) -> None:
    start = time.perf_counter()
    result = call()
    if asyncio.iscoroutine(result):
        await result
    samples.setdefault(name, []).append((time.perf_counter() - start) * 1000)


async def run(nodes: int, beats: int, rounds: int, data_dir: Path) -> None:
    store = open_state_store(data_dir=data_dir)
    try:
        hub = NodeHub(store, heartbeat_seconds=5.0)
        ids = [f"edge-{i:05d}" for i in range(nodes)]
        for i, node_id in enumerate(ids):
            region = f"region-{i % 5}"
            await hub.register(Registration(id=node_id, region=region, hostname=node_id, url=f"http://{node_id}"))
        await asyncio.gather(*(hub.heartbeat(node_id, Heartbeat(generation=0, running=RUNNING)) for node_id in ids))
        await hub.view_in_turns()  # the first read: every node
        samples: dict[str, list[float]] = {}
        for r in range(rounds):
            start = (r * beats) % nodes
            beating = [ids[(start + k) % nodes] for k in range(beats)]
            await asyncio.gather(*(hub.heartbeat(n, Heartbeat(generation=0, running=RUNNING)) for n in beating))
            now = hub.clock()
            await timed(samples, "a pass's read (view_in_turns)", functools.partial(hub.view_in_turns, now))
            await timed(samples, "the read from scratch (view + tables)", functools.partial(from_scratch, hub, now))
            await timed(samples, "check_health (every node)", hub.check_health)
            await timed(samples, "next_health_change", hub.next_health_change)
        for name, values in samples.items():
            print(f"  {name}: median {statistics.median(values):.2f} ms, p99 {percentile(values, 0.99):.2f} ms")
        ratio = statistics.median(samples["a pass's read (view_in_turns)"]) / statistics.median(
            samples["the read from scratch (view + tables)"]
        )
        print(f"  a pass's read against the read from scratch, medians: {ratio:.2f}")
    finally:
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--beats", type=int, default=200, help="nodes that heartbeat between two reads")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(machine())
    print(f"fleet reads: {args.nodes} nodes, 10 modules each, {args.beats} heartbeats between reads")
    with tempfile.TemporaryDirectory() as data_dir:
        asyncio.run(run(args.nodes, args.beats, args.rounds, Path(data_dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
