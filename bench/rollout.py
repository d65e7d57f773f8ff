"""Rollout speed, end to end on real processes (DESIGN.md section 7):

1. commit -> every node serving: a blue-green switch on 10 local edge nodes (target < 2 s; spec 60 s),
   timed from `git commit` until a probe of every node answers with the new version;
2. detection -> rolled back: a faulty canary; timed from the first module failure a client sees, and
   from the control plane's decision, until every node answers with the stable version again
   (target < 1 s; spec 30 s);
3. one planner pass over 1,000 nodes x 10,000 modules (bench/planner.py does it in full).

    python bench/rollout.py [--quick] [--nodes 10] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.cluster import Cluster, FleetRepo, poll, start_cluster, stop_cluster

BLUE_GREEN = """\
apiVersion: hotswap.dev/v1
kind: RolloutStrategy
metadata: {name: blue-green}
spec:
  type: BlueGreen
  blueGreen: {previewSeconds: 0, autoPromote: true, keepPreviousSeconds: 5}
  analysis: {minRequests: 0, onNoTraffic: proceed}
"""


async def versions_served(session: aiohttp.ClientSession, urls: list[str], module: str, args: object) -> set[str]:
    async def probe(url: str) -> str:
        body = {"module": module, "function": "add" if module == "calc" else "greet", "args": args}
        async with session.post(f"{url}/api/v1/wasm/execute", json=body) as response:
            await response.read()
            return response.headers.get("X-Hotswap-Version", f"status {response.status}")

    return set(await asyncio.gather(*(probe(u) for u in urls)))


def fmt(values: list[float]) -> str:
    values = sorted(values)
    p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
    return f"median {statistics.median(values) * 1000:7.0f} ms   max/p99 {p99 * 1000:7.0f} ms   (n={len(values)})"


async def blue_green(cluster: Cluster, runs: int) -> list[float]:
    repo = cluster.repo
    urls = list(cluster.node_urls().values())
    times = []
    async with aiohttp.ClientSession() as session:
        for run in range(runs):
            old, new = ("1.0.0", "1.1.0") if run % 2 == 0 else ("1.1.0", "1.0.0")
            await poll(lambda o=old: cluster.latest("calc").phase.value == "Promoted", "a stable calc")
            source = f"calc-{new}.wat"
            started = time.perf_counter()
            repo.set_module("calc", new, source)
            while await versions_served(session, urls, "calc", [2, 2]) != {new}:
                await asyncio.sleep(0.005)
            times.append(time.perf_counter() - started)
            print(f"  blue-green {old} -> {new} on {len(urls)} nodes: {times[-1] * 1000:.0f} ms", flush=True)
    return times


async def rollback(cluster: Cluster, runs: int) -> tuple[list[float], list[float]]:
    repo = cluster.repo
    urls = list(cluster.node_urls().values())
    from_error, from_decision = [], []
    async with aiohttp.ClientSession() as session:
        for run in range(runs):
            good = "1.1.0"
            bad = f"1.2.{run}"
            name = repo.derive_wat("greeter-1.2.0-faulty.wat", f"greeter-{bad}.wat", **{"1.2.0": bad[:5]})
            await poll(lambda: cluster.latest("greeter").phase.value in ("Promoted", "RolledBack"), "a stable greeter")
            repo.set_module("greeter", bad, name)
            first_error = None
            decided = None
            stop = asyncio.Event()

            async def load(stop: asyncio.Event = stop) -> None:
                nonlocal first_error
                i = 0
                while not stop.is_set():
                    body = {"module": "greeter", "function": "greet", "args": {"n": "x" * (i % 3)}}
                    i += 1
                    for url in urls:
                        async with session.post(f"{url}/api/v1/wasm/execute", json=body) as response:
                            await response.read()
                            if response.status >= 500 and first_error is None:
                                first_error = time.perf_counter()
                    await asyncio.sleep(0)

            task = asyncio.create_task(load())
            await poll(lambda b=bad: cluster.latest("greeter").target.version == b, "the faulty rollout")
            while True:
                record = cluster.latest("greeter")
                if record.phase.value == "RolledBack" and decided is None:
                    decided = time.perf_counter()
                if decided is not None:
                    served = await versions_served(session, urls, "greeter", {"n": ""})
                    if served == {good}:
                        done = time.perf_counter()
                        break
                await asyncio.sleep(0.002)
            stop.set()
            await task
            assert first_error is not None
            from_error.append(done - first_error)
            from_decision.append(done - decided)
            print(
                f"  rollback of {bad}: first error -> rolled back {from_error[-1] * 1000:.0f} ms, "
                f"decision -> every node stable {from_decision[-1] * 1000:.0f} ms",
                flush=True,
            )
    return from_error, from_decision


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="hotswap-bench-"))
    try:
        regions = ["us-east", "eu-central", "apac-east"]
        nodes = [(f"edge-{regions[i % 3]}-{i // 3 + 1}", regions[i % 3]) for i in range(args.nodes)]
        cluster = await start_cluster(tmp, nodes, heartbeat=args.heartbeat)
        try:
            repo: FleetRepo = cluster.repo
            (repo.fleet / "strategies/blue-green.yaml").write_text(BLUE_GREEN)
            repo.edit("modules/greeter.yaml", "replicas: 2", "replicas: all")
            repo.commit("bench settings")
            await cluster.wait_ready(args.nodes)
            await cluster.wait_all_serving("calc", "1.0.0", [n for n, _ in nodes])
            await cluster.wait_all_serving("greeter", "1.1.0", [n for n, r in nodes if r != "apac-east"])
            print(f"{args.nodes} edge nodes, heartbeat {args.heartbeat}s, {args.runs} runs each")
            bg = await blue_green(cluster, args.runs)
            # the rollback runs use nodes that serve greeter 1.1.0 (apac-east keeps its 1.0.0 override)
            cluster_urls = {n: u for n, u in cluster.node_urls().items() if not n.startswith("edge-apac")}
            original = cluster.node_urls
            cluster.node_urls = lambda: cluster_urls  # type: ignore[method-assign]
            errors, decisions = await rollback(cluster, args.runs)
            cluster.node_urls = original  # type: ignore[method-assign]
        finally:
            await stop_cluster(cluster)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"commit -> all {args.nodes} nodes serving (blue-green):   {fmt(bg)}   target < 2000 ms")
    print(f"first client error -> rolled back everywhere:  {fmt(errors)}   target < 1000 ms")
    print(f"rollback decision -> every node stable:        {fmt(decisions)}")
    if not args.quick:
        print("\nplanner pass, 1,000 nodes x 10,000 modules: see `python bench/planner.py`")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 nodes, 2 runs")
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--heartbeat", type=float, default=1.0, help="node heartbeat period (default 1 s)")
    ns = parser.parse_args()
    if ns.quick:
        ns.nodes, ns.runs = 3, 2
    asyncio.run(main(ns))
