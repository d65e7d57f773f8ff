"""`hotswap edge --workers 2`: one node, two server processes on one port, under a supervisor.

Real processes: a standalone node on a folder, and a managed node under a real control plane.
Load comes from new connections (so the kernel spreads it over both workers); every response must
name its version, a table swap under load must fail no request, the node's metrics (its /metrics,
and the heartbeats the control plane received) must add up to what the client sent, and a killed
worker must come back with the current table.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import wasmtime

from edge import wasm
from edge.cache import ModuleCache, engine_key
from edge.counters import Counters
from edge.ipc import WORKER_HEADER
from edge.protocol import LATENCY_BUCKETS_MS, VersionMetrics
from edge.supervisor import SUMMED_COUNTS, add_metrics, as_metrics, gained
from tests.e2e.cluster import Cluster, poll, start_cluster, stop_cluster

ROOT = Path(__file__).resolve().parents[2]
WAT = '(module (func (export "version") (result i32) i32.const {n}))'
INVOKED = re.compile(r'^wasm_functions_invoked_total\{module="([^"]+)",version="([^"]+)"\} (\d+)$', re.M)


@dataclass
class Tally:
    """What a client saw: responses by version and by worker, and anything that was not a clean 200."""

    versions: Counter[str] = field(default_factory=Counter)
    workers: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return sum(self.versions.values())


async def call(session: aiohttp.ClientSession, url: str, body: dict[str, Any], tally: Tally) -> dict[str, Any]:
    try:
        async with session.post(f"{url}/api/v1/wasm/execute", json=body) as response:
            data: dict[str, Any] = await response.json(content_type=None)
            version, worker = response.headers.get("X-Hotswap-Version"), response.headers.get(WORKER_HEADER)
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.failures.append(f"{type(exc).__name__}: {exc}")
        return {}
    if response.status != 200 or version is None or data.get("version") != version or worker is None:
        tally.failures.append(f"{response.status} {version} {worker} {data}")
    else:
        tally.versions[version] += 1
        tally.workers[worker] += 1
    return data


class Load:
    """Calls in a loop over `connections` tasks, each request on a new connection, until stopped."""

    def __init__(self, url: str, body: dict[str, Any], headers: dict[str, str] | None = None, connections: int = 6):
        self.url, self.body, self.headers, self.connections = url, body, headers or {}, connections
        self.tally = Tally()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Load:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True),
            headers=self.headers,
            timeout=aiohttp.ClientTimeout(total=10),
        )
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(self.connections)]
        return self

    async def _loop(self) -> None:
        while not self._stop.is_set():
            data = await call(self._session, self.url, self.body, self.tally)
            if data and "result" in data and self.body["function"] == "version":
                assert data["result"] == int(data["version"][0]), data  # the version's own code answered

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._session.close()


async def invoked(url: str, headers: dict[str, str] | None = None) -> dict[tuple[str, str], int]:
    async with aiohttp.ClientSession(headers=headers) as session, session.get(f"{url}/metrics") as response:
        text = await response.text()
    return {(m, v): int(n) for m, v, n in INVOKED.findall(text)}


def children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


# -- standalone ------------------------------------------------------------------------------------


@dataclass
class Standalone:
    proc: subprocess.Popen[str]
    url: str
    folder: Path


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Standalone]:
    folder = tmp_path / "modules"
    folder.mkdir()
    (folder / "greeter@1.0.0.wat").write_text(WAT.format(n=1))
    proc = subprocess.Popen(
        [sys.executable, "-m", "hotswap", "edge", "--standalone", str(folder), "--port", "0", "--workers", "2",
         "--cache-dir", str(tmp_path / "cache"), "--log-level", "WARNING"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "serving 1 module version(s)" in line and "with 2 workers" in line, line
    yield Standalone(proc, line.strip().rsplit(" ", 1)[1], folder)
    workers = children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    proc.stdout.close()
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)  # the workers stopped with it


GREETER = {"module": "greeter", "function": "version", "args": []}


async def test_a_swap_under_load_on_two_workers_fails_nothing_and_the_metrics_add_up(node: Standalone) -> None:
    async with Load(node.url, GREETER) as load:
        await poll(lambda: len(load.tally.workers) == 2 and load.tally.ok >= 200, "load on both workers")
        (node.folder / "greeter@2.0.0.wat").write_text(WAT.format(n=2))
        node.proc.send_signal(signal.SIGHUP)  # rescan: 2.0.0 takes all traffic, on both workers
        await poll(lambda: load.tally.versions["2.0.0"] >= 200, "2.0.0 serving")
        await poll(lambda: load.tally.versions["2.0.0"] >= 400, "more load on 2.0.0")
    tally = load.tally
    assert tally.failures == []
    assert set(tally.versions) == {"1.0.0", "2.0.0"}
    assert set(tally.workers) == {"0", "1"} and min(tally.workers.values()) > tally.ok // 10
    # Once the rescan is applied, no worker serves 1.0.0: every later response is 2.0.0.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        after = Tally()
        for _ in range(40):
            await call(session, node.url, GREETER, after)
    assert set(after.versions) == {"2.0.0"} and len(after.workers) == 2
    counts = await invoked(node.url)  # whichever worker answers: the whole node's counts
    assert counts == {("greeter", "1.0.0"): tally.versions["1.0.0"], ("greeter", "2.0.0"): tally.versions["2.0.0"] + 40}


async def test_an_admin_table_reaches_every_worker_and_a_killed_worker_comes_back(node: Standalone) -> None:
    one = wasm.sha256_digest(wasm.compile_wat(WAT.format(n=1)))
    table = {"generation": 7, "modules": [{"module": "greeter", "version": "1.0.0", "digest": one, "weight": 100}]}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        async with session.put(f"{node.url}/api/v1/wasm/admin/table", json=table) as response:
            report = await response.json()
        assert response.status == 200 and report["generation"] == 7 and report["failed"] == {}, report
        tally = Tally()
        await poll(lambda: _fill(session, node.url, tally), "calls on both workers")
        assert tally.failures == [] and set(tally.versions) == {"1.0.0"}

        before = children(node.proc.pid)
        assert len(before) == 2
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        await poll(lambda: len(children(node.proc.pid) - before) == 1, "a new worker process")
        again = Tally()
        await poll(lambda: _fill(session, node.url, again), "both workers answering again")
        assert set(again.versions) == {"1.0.0"}  # the new worker got the current table (the admin one)
        async with session.get(f"{node.url}/health") as response:
            assert (await response.json())["generation"] == 7


async def _fill(session: aiohttp.ClientSession, url: str, tally: Tally) -> bool:
    """A few calls; true once both workers answered cleanly (failures while a worker restarts are cleared)."""
    for _ in range(10):
        await call(session, url, GREETER, tally)
    tally.failures.clear()
    return len(tally.workers) == 2


def test_a_second_node_cannot_join_the_port_of_a_node_with_workers(node: Standalone, tmp_path: Path) -> None:
    port = node.url.rsplit(":", 1)[1]
    result = subprocess.run(
        [sys.executable, "-m", "hotswap", "edge", "--standalone", str(node.folder), "--workers", "2", "--port", port,
         "--cache-dir", str(tmp_path / "cache")],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in result.stderr, result.stderr


def test_workers_must_be_at_least_one(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hotswap", "edge", "--standalone", str(tmp_path), "--workers", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "--workers 0: at least 1" in result.stderr


# -- managed ---------------------------------------------------------------------------------------


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = await start_cluster(tmp_path, [])
    cluster.start_node("edge-us-east-1", "us-east", workers=2)
    try:
        await cluster.wait_ready(1)
        await cluster.wait_all_serving("calc", "1.0.0", ["edge-us-east-1"])
        yield cluster
    finally:
        await stop_cluster(cluster)


async def test_a_managed_node_on_two_workers_swaps_under_load_and_heartbeats_whole_metrics(cluster: Cluster) -> None:
    url = cluster.node_urls()["edge-us-east-1"]
    headers = cluster.edge_headers("developer")
    body = {"module": "calc", "function": "add", "args": [2, 3]}
    async with Load(url, body, headers) as load:
        await poll(lambda: len(load.tally.workers) == 2 and load.tally.ok >= 200, "load on both workers")
        cluster.repo.set_module("calc", "1.1.0", "calc-1.1.0.wat")  # blue-green: switches at once
        record = await cluster.wait_ended("calc", "1.1.0")
        assert record.phase.value == "Promoted", record
        await cluster.wait_all_serving("calc", "1.1.0", ["edge-us-east-1"])
        served = load.tally.versions["1.1.0"]
        await poll(lambda: load.tally.versions["1.1.0"] >= served + 100, "load on 1.1.0")
    tally = load.tally
    assert tally.failures == []
    assert tally.versions["1.0.0"] > 0 and tally.versions["1.1.0"] > 0
    assert set(tally.workers) == {"0", "1"}
    # Execute needs the control plane's token on both workers (the key reached each of them).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for _ in range(10):
            async with session.post(f"{url}/api/v1/wasm/execute", json=body) as response:
                assert response.status == 401
    # The heartbeats carried every request exactly once, summed over both workers.
    window = cluster.plane.hub.metrics

    def shipped() -> dict[str, int]:
        return {v: window.since("calc", v, "us-east", 0.0).requests for v in ("1.0.0", "1.1.0")}

    expected = {v: tally.versions[v] for v in ("1.0.0", "1.1.0")}
    await poll(lambda: shipped() == expected, f"heartbeats totalling {expected}")
    counts = await invoked(url, headers)
    assert counts.get(("calc", "1.1.0")) == expected["1.1.0"]


# -- the shared precompiled cache ------------------------------------------------------------------


def test_concurrent_fills_of_the_shared_cache_never_hand_out_a_broken_module(tmp_path: Path) -> None:
    """Workers fill one cache directory at once: writers race, readers see a whole entry or none."""
    engine = wasmtime.Engine()
    data = wasm.compile_wat(WAT.format(n=7))
    digest = wasm.sha256_digest(data)
    module = wasmtime.Module(engine, data)
    cache = ModuleCache(tmp_path, engine_key({"test": "workers"}))
    writers_done = threading.Event()
    seen: Counter[str] = Counter()

    def fill() -> None:
        for _ in range(60):
            cache.store(digest, module)

    def read() -> None:
        while not writers_done.is_set():
            loaded = cache.load(engine, digest)
            if loaded is None:
                seen["miss"] += 1
                continue
            names = [e.name for e in loaded.exports]
            seen["hit" if names == ["version"] else f"wrong {names}"] += 1

    readers = [threading.Thread(target=read) for _ in range(2)]
    writers = [threading.Thread(target=fill) for _ in range(2)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    writers_done.set()
    for t in readers:
        t.join()
    assert set(seen) <= {"hit", "miss"}, seen
    cache.store(digest, module)  # a last whole fill: the entry loads, and no temporary file is left
    loaded = cache.load(engine, digest)
    assert loaded is not None and [e.name for e in loaded.exports] == ["version"]
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".cwasm", ".sum"]


def test_worker_deltas_add_up_field_by_field() -> None:
    """Every count a worker ships (and the latency histogram) is summed into the node's counters."""
    one = VersionMetrics.model_validate(
        {
            "module": "m",
            "version": "1.0.0",
            **{name: i + 1 for i, name in enumerate(SUMMED_COUNTS)},
            "latencyBuckets": list(range(len(LATENCY_BUCKETS_MS) + 1)),
            "latencySumMs": 1.5,
        }
    )
    counters = Counters()
    add_metrics(counters, one)
    add_metrics(counters, one)
    total = as_metrics(("m", "1.0.0"), counters)
    assert {"requests", "traps", "timeouts", "memory", "cpu"} <= set(SUMMED_COUNTS)
    for name in SUMMED_COUNTS:
        assert getattr(total, name) == 2 * getattr(one, name), name
    assert total.latency_buckets == tuple(2 * b for b in one.latency_buckets)
    assert total.latency_sum_ms == 3.0
    assert total.errors == 2 * (one.traps + one.timeouts + one.memory + one.cpu)


def test_a_version_that_only_ran_its_health_check_is_shipped_with_why_it_failed() -> None:
    """With workers, a version that took no requests but ran its health check still reaches the
    heartbeat, its failure's message with it; a period with nothing new ships nothing."""
    counters = {("m", "1.0.0"): Counters()}
    counters["m", "1.0.0"].checked("health", "trap: unreachable")
    shipped: dict[tuple[str, str], Counters] = {}
    [delta] = gained(counters, shipped)
    assert (delta.requests, delta.health_checks, delta.health_failures) == (0, 1, 1)
    assert delta.last_error == "health check health failed: trap: unreachable"
    assert gained(counters, shipped) == []
