"""Shared rate limits and the notification outbox: the cost per request of a rate-limit take from the
state store (one upsert, awaited through a thread as the API middleware does), against the in-memory
limiter, and the cost of one outbox row's add -> claim -> finish.

    .venv/bin/python -m bench.shared_limits --database-url postgresql://... [--requests 2000]

Prints the machine, the date, the load average, and per-call latencies (median, p99).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from datetime import UTC, datetime

from reconciler.api.security import RateLimiter, RateLimits, SharedRateLimiter
from reconciler.store.outbox import OutboxEntry, OutboxStore
from reconciler.store.ratelimits import SharedBuckets
from reconciler.store.state import open_state_store


def figures(name: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    print(f"{name:<44} median {statistics.median(ordered) * 1e6:8.0f} us   p99 {p99 * 1e6:8.0f} us")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M}Z"
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores; {when}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    store = open_state_store(database_url=args.database_url)
    limits = RateLimits(execution=10**9)
    memory = RateLimiter(limits)
    shared = SharedRateLimiter(SharedBuckets(store), limits)
    for name, take in (("in-memory RateLimiter.take", None), ("SharedRateLimiter.admit (PostgreSQL)", shared)):
        samples = []
        for i in range(args.requests):
            start = time.perf_counter()
            if take is None:
                memory.take(f"user-{i % 50}", "execution")
            else:
                await take.admit(f"user-{i % 50}", "execution")
            samples.append(time.perf_counter() - start)
        figures(name, samples[len(samples) // 10 :])
    outbox = OutboxStore(store, "bench")
    samples = []
    for i in range(min(args.requests, 500)):
        now = datetime.now(UTC)
        start = time.perf_counter()
        await asyncio.to_thread(outbox.add, [OutboxEntry("bench", f"n{time.time_ns()}-{i}", "{}")], now)
        row = await asyncio.to_thread(outbox.claim, "bench", now)
        assert row is not None
        await asyncio.to_thread(outbox.finish, row.seq, "delivered", 1, None, now)
        samples.append(time.perf_counter() - start)
    figures("outbox add + claim + finish (PostgreSQL)", samples)
    store.close()


if __name__ == "__main__":
    asyncio.run(main())
