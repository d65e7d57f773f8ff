"""Several control-plane replicas on one PostgreSQL (DESIGN.md section 4, issue 10):

1. wake: the leader publishes a node's table -> a long-poll waiting on the follower returns
   (store commit, NOTIFY, the follower reads the row);
2. heartbeat: one heartbeat with metric deltas as a replica records it when the store is shared (node
   row + metric_deltas row + batched NOTIFY), against the single-replica path on the same database;
3. handover: `hotswap serve` leader killed with SIGKILL -> the other replica's status says it leads.

Starts a private PostgreSQL (as the tests do), or uses --database-url.

    python bench/ha.py [--samples 200] [--handovers 5] [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from edge.nodeapi import Heartbeat, Registration
from edge.protocol import ModuleEntry, VersionMetrics
from reconciler.api.auth import AuthOptions, TokenAuthority
from reconciler.apply.nodes import NodeHub
from reconciler.server import ControlPlane
from tests.e2e.cluster import FleetRepo, poll
from tests.ha.replicas import shared_key, spawn_replica, start_replica, status_of, wait_leader


def figures(name: str, samples_ms: list[float]) -> None:
    ordered = sorted(samples_ms)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"| {name} | {statistics.median(ordered):.2f} ms | {p99:.2f} ms |", flush=True)


@contextmanager
def fresh_schema(base: str | None) -> Iterator[str]:
    """A URL for an empty schema on `base`, or on a private server started for the run."""
    if base is None:
        from tests import services

        private = contextmanager(services.postgres_server.__wrapped__)  # type: ignore[attr-defined]
        with private() as server, fresh_schema(server.test_database_url) as url:
            yield url
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def entry(weight: int) -> ModuleEntry:
    return ModuleEntry(module="greeter", version="1.0.0", digest="sha256:" + "0" * 64, weight=weight)


async def wake_and_heartbeat(tmp: Path, url: str, samples: int) -> None:
    repo = FleetRepo(tmp / "repo")
    key = shared_key(tmp)
    leader = await start_replica(repo, tmp / "a", url, str(tmp / "blobs"), key)
    await poll(lambda: leader.controller.leader, "a leader")
    follower = await start_replica(repo, tmp / "b", url, str(tmp / "blobs"), key)
    try:
        await leader.controller.hub.register(
            Registration(id="bench-node", region="us-east", hostname="bench", url="http://127.0.0.1:9")
        )
        await poll(lambda: follower.hub.known("bench-node"), "the follower to know the node")
        latencies = []
        for i in range(samples):
            table = follower.hub.table("bench-node")
            assert table is not None
            waiting = asyncio.create_task(follower.hub.wait_assignment("bench-node", table.generation, 10))
            await asyncio.sleep(0.005)
            started = time.perf_counter()
            await leader.hub.publish("bench-node", (entry(i % 100 + 1),))
            assert await waiting is not None, "the follower's long-poll timed out"
            latencies.append((time.perf_counter() - started) * 1000)
        figures("leader publishes -> long-poll on the follower returns", latencies)

        beat = Heartbeat(metrics=(VersionMetrics(module="greeter", version="1.0.0", requests=10),))
        shared: list[float] = []
        alone: list[float] = []
        single = NodeHub(follower.store)  # the same database, without peers: one replica's path
        for hub, out in ((follower.hub, shared), (single, alone)) * 2:
            for _ in range(samples // 2):
                started = time.perf_counter()
                assert await hub.heartbeat("bench-node", beat) is not None
                out.append((time.perf_counter() - started) * 1000)
        figures("heartbeat, shared store (row + metric deltas + NOTIFY)", shared)
        figures("heartbeat, one replica on the same PostgreSQL", alone)
    finally:
        await follower.stop()
        await leader.stop()


def leads(plane: ControlPlane) -> Callable[[], bool]:
    return lambda: plane.controller.leader


async def handovers(tmp: Path, url: str, rounds: int) -> None:
    repo = FleetRepo(tmp / "repo")
    key = shared_key(tmp)
    token = TokenAuthority.load(AuthOptions(private_key=key), tmp / "tokens").mint("bench", ["admin"])
    times = []
    standby: ControlPlane | None = None
    try:
        for i in range(rounds):
            process = spawn_replica(repo, tmp / f"p{i}", url, str(tmp / "blobs"), key)
            try:
                await wait_leader(process.url, token, "the process to lead")
                standby = await start_replica(repo, tmp / f"s{i}", url, str(tmp / "blobs"), key)
                status = await status_of(standby.url, token)
                assert status is not None and status["leader"] is False
                process.kill()
                started = time.perf_counter()
                await poll(leads(standby), "the standby to lead")
                times.append((time.perf_counter() - started) * 1000)
            finally:
                process.kill()
                if standby is not None:
                    await standby.stop()
                    standby = None
        figures(f"leader SIGKILLed -> the other replica leads ({rounds} rounds)", times)
    finally:
        if standby is not None:
            await standby.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--handovers", type=int, default=5)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    print("| what | p50 | p99 |\n|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory(prefix="hotswap-ha-") as tmp:
        with fresh_schema(args.database_url) as url:
            asyncio.run(wake_and_heartbeat(Path(tmp) / "wake", url, args.samples))
        with fresh_schema(args.database_url) as url:
            asyncio.run(handovers(Path(tmp) / "handover", url, args.handovers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
