"""Benchmark: one planner pass over 1,000 nodes x 10,000 modules (target < 200 ms).

Run from the repository root: `python bench/planner.py` (or `--quick` for CI: fewer passes, a tenth
of the size). It prints the median and p99 of several passes for:
- steady: every module promoted, every node already holding its table (the common pass);
- steady, rebuilt tables: the same, but the published tables are equal copies, not the very objects
  the planner made (what an executor that reloads tables from its store hands in);
- rollout: 1 % of the modules in the middle of a canary whose step time is up, so every pass
  analyses and advances them (the same snapshot is planned again each time);
- node lost: one node Unhealthy, so placement runs again over every module;
- cold: the first pass (initial deployment: a record per module, every table new);
- incremental (`Planner`, `reconciler.planner.incremental`) against the full recompute (`plan`) over
  the same sequences of snapshots, in the same run: nothing changed, one node's row changed (a
  heartbeat), 20 rows changed, one node Unhealthy, and the rollout pass; each sequence's snapshots
  differ from the one before only by those rows, as the controller's do (it hands the same
  `ObservedNode` object while a node's row is unchanged). The two plans are checked equal.
Wall-clock figures move with the machine's load; the CPU time of the process is printed too. The
p99 column mostly shows Python's full garbage collections over the whole heap (10,000 pydantic
modules, records, tables: ~450,000 objects, a full collection takes ~0.5 s on its own);
`--gc-freeze` moves what exists before the passes out of the collector's sight, as the controller
can do after loading a revision.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stats import percentile
from reconciler.planner import (
    NodeStatus,
    ObservedNode,
    Plan,
    Planner,
    RegionMetrics,
    RunningEntry,
    SetAssignment,
    Snapshot,
    plan,
)
from reconciler.spec.fields import Metadata
from reconciler.spec.fleet import DesiredFleet
from reconciler.spec.models import Fleet, FleetSpec, Module, ModuleSpec, Placement, Region, RolloutStrategy, Source
from reconciler.spec.strategies import RolloutStrategySpec

REGIONS = ["us-east", "us-west", "eu-central", "eu-west", "apac-east"]


def digest(name: str, version: str) -> str:
    return "sha256:" + (f"{name}@{version}".encode().hex() * 8)[:64]


def fleet(modules: int, bumped: int = 0) -> DesiredFleet:
    spec = FleetSpec(regions=[Region(name=r, max_nodes=1000) for r in REGIONS])
    canary = RolloutStrategy(
        metadata=Metadata(name="canary"),
        spec=RolloutStrategySpec.model_validate(
            {"type": "Canary", "canary": {"steps": [10, 50, 100], "stepSeconds": 30}}
        ),
    )
    out: dict[str, Module] = {}
    for i in range(modules):
        name = f"mod-{i:05d}"
        version = "1.1.0" if i < bumped else "1.0.0"
        out[name] = Module(
            metadata=Metadata(name=name),
            spec=ModuleSpec(
                version=version,
                source=Source(digest=digest(name, version)),
                placement=Placement(replicas=2, regions=None if i % 4 else [REGIONS[i % 5]]),
                rollout="canary",
            ),
        )
    return DesiredFleet(
        fleet=Fleet(metadata=Metadata(name="bench"), spec=spec),
        modules=out,
        strategies={"canary": canary},
        interfaces={},
        binaries={},
    )


def node_lost(nodes: tuple[ObservedNode, ...], i: int) -> tuple[ObservedNode, ...]:
    return tuple(dataclasses.replace(n, status=NodeStatus.UNHEALTHY) if k == i else n for k, n in enumerate(nodes))


def applied(snapshot: Snapshot, result: Plan, now: float) -> Snapshot:
    records = {r.id: r for r in snapshot.records}
    records.update({r.id: r for r in result.records})
    tables = {a.node_id: a.table for a in result.actions if isinstance(a, SetAssignment)}
    nodes = tuple(dataclasses.replace(n, assigned=tables.get(n.id, n.assigned)) for n in snapshot.nodes)
    return dataclasses.replace(snapshot, records=tuple(records.values()), nodes=nodes, now=now)


def heartbeats(nodes: tuple[ObservedNode, ...], which: range) -> tuple[ObservedNode, ...]:
    """The nodes with the rows of `which` (indexes, wrapping) replaced: each reports running its table."""
    picked = {i % len(nodes) for i in which}
    return tuple(
        dataclasses.replace(
            n,
            running=tuple(RunningEntry(e.module, e.version, e.digest, e.weight) for e in n.assigned),
            last_heartbeat=k,
        )
        if k in picked
        else n
        for k, n in enumerate(nodes)
    )


def sequence(start: Snapshot, passes: int, change: Callable[[Snapshot, int], Snapshot]) -> list[Snapshot]:
    """`passes` snapshots, each `change`d from the one before (the first from `start`)."""
    out, snapshot = [], start
    for i in range(passes):
        snapshot = change(snapshot, i)
        out.append(snapshot)
    return out


def compare(label: str, passes: int, start: Snapshot, change: Callable[[Snapshot, int], Snapshot]) -> None:
    """Time the full recompute and the incremental planner over the same snapshots; check the plans equal."""
    snapshots = sequence(start, passes, change)
    full = iter(snapshots)
    plans = [timed(f"{label}: full", passes, lambda: plan(next(full)))]
    planner = Planner()
    planner.plan(start)  # the pass before: what the incremental planner keeps
    incremental = iter(snapshots)
    plans.append(timed(f"{label}: incremental", passes, lambda: planner.plan(next(incremental))))
    assert plans[0] == plans[1], f"{label}: the incremental plan differs from the full recompute"


FREEZE = False


def timed(label: str, passes: int, run: Callable[[], Plan]) -> Plan:
    if FREEZE:  # everything built so far is long-lived input: out of the collector's sight
        gc.collect()
        gc.freeze()
    wall, cpu = [], []
    result = Plan()
    for _ in range(passes):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = run()
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    print(
        f"{label:<46} median {statistics.median(wall):7.1f} ms  p99 {percentile(wall, 0.99):7.1f} ms"
        f"   (cpu median {statistics.median(cpu):6.1f} ms, {passes} passes)"
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 nodes x 1,000 modules, 3 passes")
    parser.add_argument("--passes", type=int, default=None)
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() once the inputs are built, as a service that freezes its long-lived state does",
    )
    args = parser.parse_args()
    n_nodes, n_modules = (100, 1000) if args.quick else (1000, 10000)
    passes = args.passes or (3 if args.quick else 15)
    bumped = n_modules // 100

    print(f"planner pass: {n_nodes} nodes x {n_modules} modules, {len(REGIONS)} regions, replicas 2")
    nodes = tuple(ObservedNode(f"edge-{REGIONS[i % 5]}-{i:04d}", REGIONS[i % 5]) for i in range(n_nodes))
    desired = fleet(n_modules)
    cold = Snapshot(desired, 0.0, nodes)
    global FREEZE
    FREEZE = args.gc_freeze
    first = timed("cold (initial deployment)", max(1, passes // 5), lambda: plan(cold))
    steady = applied(cold, first, 10.0)
    result = timed("steady", passes, lambda: plan(steady))
    assert not result.actions and not result.records, "steady pass must plan nothing"

    # A node goes Unhealthy: placement is computed again from scratch (a new node list each pass).
    lost = [dataclasses.replace(steady, nodes=node_lost(steady.nodes, i)) for i in range(passes)]
    it = iter(lost)
    timed("node lost (placement recomputed)", passes, lambda: plan(next(it)))

    copies = dataclasses.replace(
        steady,
        nodes=tuple(
            dataclasses.replace(n, assigned=tuple(dataclasses.replace(e) for e in n.assigned)) for n in steady.nodes
        ),
    )
    timed("steady, rebuilt tables", passes, lambda: plan(copies))

    rolling = dataclasses.replace(steady, desired=fleet(n_modules, bumped), now=20.0)
    started = plan(rolling)
    mid = applied(rolling, started, 60.0)
    metrics = tuple(
        RegionMetrics(f"mod-{i:05d}", v, r, 1000, 0, 4.0)
        for i in range(bumped)
        for v in ("1.0.0", "1.1.0")
        for r in REGIONS
    )
    mid = dataclasses.replace(mid, metrics=metrics)
    result = timed(f"rollout ({bumped} canaries)", passes, lambda: plan(mid))
    advanced = sum(1 for a in result.actions if type(a).__name__ == "AdvanceStep")
    print(f"  each rollout pass advanced {advanced} canaries and republished {len(result.actions) - advanced} tables")

    print("incremental planner (Planner.plan) against the full recompute (plan), same snapshots:")
    compare("nothing changed", passes, steady, lambda s, i: s)
    compare(
        "1 heartbeat", passes, steady, lambda s, i: dataclasses.replace(s, nodes=heartbeats(s.nodes, range(i, i + 1)))
    )
    compare(
        "20 heartbeats",
        passes,
        steady,
        lambda s, i: dataclasses.replace(s, nodes=heartbeats(s.nodes, range(20 * i, 20 * i + 20))),
    )
    compare("node lost", passes, steady, lambda s, i: dataclasses.replace(s, nodes=node_lost(steady.nodes, i)))
    compare(
        f"rollout + 20 heartbeats, {bumped} canaries",
        passes,
        mid,
        lambda s, i: dataclasses.replace(s, nodes=heartbeats(s.nodes, range(20 * i, 20 * i + 20))),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
