"""How many users a faulty canary reaches before it is rolled back, at 2, 20 and 200 requests a second.

Real processes: the control plane in this process, three edge nodes on 127.0.0.1 (two in us-east, one
in eu-central), the example fleet with its canary strategy written as a user writes it from the README
(`type: Canary`, every other field left out: steps 10/25/50/100 %, 30 s each, the default analysis).
A paced client sends `rate` requests a second, spread over the nodes that serve greeter; a commit
switches greeter to a build that traps on 3 requests in 7. Per run it prints the client errors served
by the faulty version before the rollback, and the time from the commit to the control plane's
decision and to every node serving the stable version again.

    python bench/faulty_canary.py [--rates 2,20,200] [--runs 3] [--quick]
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

from bench.stats import percentile
from tests.e2e.cluster import Cluster, poll, start_cluster, stop_cluster

CANARY = """\
apiVersion: hotswap.dev/v1
kind: RolloutStrategy
metadata: {name: canary}
spec:
  type: Canary
"""
NODES = [("edge-us-east-1", "us-east"), ("edge-us-east-2", "us-east"), ("edge-eu-central-1", "eu-central")]
STABLE = "1.1.0"


class Client:
    """`rate` requests a second, each in its own task, round the nodes; counts what the faulty version failed."""

    def __init__(self, session: aiohttp.ClientSession, urls: list[str], rate: float, faulty: str) -> None:
        self.session, self.urls, self.rate, self.faulty = session, urls, rate, faulty
        self.sent = self.errors = self.other_failures = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def _one(self, i: int) -> None:
        body = {"module": "greeter", "function": "greet", "args": {"name": "x" * (i % 7)}}
        try:
            async with self.session.post(f"{self.urls[i % len(self.urls)]}/api/v1/wasm/execute", json=body) as r:
                await r.read()
                if r.status >= 500 and r.headers.get("X-Hotswap-Version", "") == self.faulty:
                    self.errors += 1
                elif r.status >= 500 or r.status == 0:
                    self.other_failures += 1
        except (aiohttp.ClientError, TimeoutError):
            self.other_failures += 1

    async def run(self, stop: asyncio.Event) -> None:
        start = time.perf_counter()
        i = 0
        while not stop.is_set():
            task = asyncio.create_task(self._one(i))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            i += 1
            self.sent = i
            delay = start + i / self.rate - time.perf_counter()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    pass
        await asyncio.gather(*self._tasks)


async def one_run(cluster: Cluster, urls: list[str], rate: float, run: int) -> tuple[int, float, float]:
    repo = cluster.repo
    faulty = f"1.2.{run}"
    name = repo.derive_wat("greeter-1.2.0-faulty.wat", f"greeter-{faulty}.wat", **{"1.2.0": faulty[:5]})
    await poll(lambda: cluster.latest("greeter").phase.value in ("Promoted", "RolledBack"), "a stable greeter")
    headers = cluster.edge_headers("developer")
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as session:
        stop = asyncio.Event()
        client = Client(session, urls, rate, faulty)
        load = asyncio.create_task(client.run(stop))
        committed = time.perf_counter()
        repo.set_module("greeter", faulty, name)
        decided = None
        while True:
            record = cluster.latest("greeter")
            if record.target.version == faulty and record.phase.value in ("RolledBack", "Promoted", "Aborted"):
                decided = time.perf_counter()
                if record.phase.value != "RolledBack":
                    raise SystemExit(f"faulty {faulty} ended {record.phase.value}: {record.message}")
                break
            await asyncio.sleep(0.005)
        await poll(lambda: all(cluster.serving("greeter").get(n) == {(STABLE, 100)} for n, _ in NODES), "stable again")
        stable = time.perf_counter()
        stop.set()
        await load
    print(
        f"  {rate:>5g} req/s run {run}: {client.errors:3d} client errors from {faulty} "
        f"({client.sent} sent, {client.other_failures} other failures); commit -> decision "
        f"{(decided - committed) * 1000:6.0f} ms, -> every node stable {(stable - committed) * 1000:6.0f} ms",
        flush=True,
    )
    return client.errors, decided - committed, stable - committed


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="hotswap-bench-canary-"))
    rows = []
    try:
        cluster = await start_cluster(tmp, NODES, heartbeat=args.heartbeat)
        try:
            repo = cluster.repo
            (repo.fleet / "strategies/canary.yaml").write_text(CANARY)
            repo.edit("modules/greeter.yaml", "replicas: 2", "replicas: all")
            repo.commit("the canary as README writes it")
            await cluster.wait_ready(len(NODES))
            await cluster.wait_all_serving("greeter", STABLE, [n for n, _ in NODES])
            urls = list(cluster.node_urls().values())
            print(f"{len(NODES)} edge nodes, heartbeat {args.heartbeat}s, {args.runs} runs per rate")
            run = 0
            for rate in args.rates:
                results = []
                for _ in range(args.runs):
                    results.append(await one_run(cluster, urls, rate, run))
                    run += 1
                rows.append((rate, results))
        finally:
            await stop_cluster(cluster)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print("rate      client errors (median / max)   commit -> rolled back (median / p99)   -> every node stable")
    for rate, results in rows:
        errors = [e for e, _, _ in results]
        decided = [d * 1000 for _, d, _ in results]
        stable = [s * 1000 for _, _, s in results]
        print(
            f"{rate:>5g}/s   {statistics.median(errors):6.0f} / {max(errors):4d}"
            f"               {statistics.median(decided):7.0f} / {percentile(decided, 0.99):7.0f} ms"
            f"            {statistics.median(stable):7.0f} ms"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="2,20,200", help="requests a second, comma-separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--heartbeat", type=float, default=1.0, help="node heartbeat period (default 1 s)")
    parser.add_argument("--quick", action="store_true", help="one run at 20 req/s")
    ns = parser.parse_args()
    ns.rates = [float(r) for r in ns.rates.split(",")]
    if ns.quick:
        ns.rates, ns.runs = [20.0], 1
    asyncio.run(main(ns))
