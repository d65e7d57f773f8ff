"""Smoke checks on the node: a version runs its smoke calls once loaded; one that fails them takes no
request (whatever its weight) and the heartbeat reports it failed, in the module's words; one that
passes takes its weight and is reported passed. On one process (a node on a real socket) and on the
`--workers N` path (worker processes)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.agent import Agent, AgentState, TableTarget
from edge.nodeapi import Heartbeat, Registration
from edge.protocol import VERSION_HEADER, ModuleEntry
from edge.router import Router
from edge.runtime import Runtime
from edge.server import Node, NodeConfig, start
from edge.smoke import same_json
from edge.standalone import DirectorySource
from edge.supervisor import PoolOptions, WorkerPool
from edge.wat import compile_wat

CALC = """
(module
  (func (export "add") (param $a i32) (param $b i32) (result i32)
    {body})
  (func (export "spin") (loop $l (br $l))))
"""
GOOD = CALC.format(body="(i32.add (local.get $a) (local.get $b))")
TRAPS = CALC.format(
    body="(if (i32.and (local.get $a) (i32.const 1)) (then unreachable)) (i32.add (local.get $a) (local.get $b))"
)
WRONG = CALC.format(body="(i32.mul (local.get $a) (local.get $b))")
SMOKE = [{"function": "add", "args": [3, 2], "expect": 5}]


def entry(source: DirectorySource, version: str, wat: str, weight: int, **extra: Any) -> ModuleEntry:
    digest = source.add(compile_wat(wat))
    body = {"module": "calc", "version": version, "digest": digest, "weight": weight, "smoke": SMOKE, **extra}
    return ModuleEntry.model_validate(body)


def heartbeat(target: TableTarget) -> Heartbeat:
    registration = Registration(id="edge-1", region="us-east", hostname="localhost", url="http://127.0.0.1:1")
    # an hour of uptime: a CPU share the heartbeat can carry
    agent = Agent("http://127.0.0.1:1", registration, target, state=AgentState(started=time.monotonic() - 3600))
    return agent.heartbeat_body()


def outcomes(beat: Heartbeat) -> dict[str, tuple[bool, str | None]]:
    return {s.version: (s.passed, s.error) for s in beat.smoke}


def weights(beat: Heartbeat) -> dict[str, int]:
    return {r.version: r.weight for r in beat.running}


async def served(url: str, count: int, headers: dict[str, str] | None = None) -> Counter[str]:
    """Which version answered each of `count` add calls (statuses other than 200 count as such)."""
    seen: Counter[str] = Counter()
    body = {"module": "calc", "function": "add", "args": [1, 2]}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for _ in range(count):
            async with session.post(f"{url}/api/v1/wasm/execute", json=body, headers=headers) as response:
                version = response.headers.get(VERSION_HEADER, "?")
                seen[version if response.status == 200 else str(response.status)] += 1
    return seen


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[Router, DirectorySource, str]]:
    runtime = Runtime()
    source = DirectorySource(tmp_path)
    router = Router(runtime, source)
    runner, port = await start(Node(runtime, router, NodeConfig()), "127.0.0.1", 0)
    try:
        yield router, source, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        runtime.close()


async def test_a_version_that_fails_its_smoke_check_takes_no_request_and_is_reported(
    node: tuple[Router, DirectorySource, str],
) -> None:
    router, source, url = node
    table = [entry(source, "1.0.0", GOOD, 50), entry(source, "2.0.0", TRAPS, 50)]
    report = await router.apply_table(table, 1)
    assert report.failed == {} and set(report.loaded) == {"calc@1.0.0", "calc@2.0.0"}  # loaded, smoke or not
    assert await served(url, 40) == Counter({"1.0.0": 40})  # half the weight, none of the requests
    beat = heartbeat(router)
    passed, error = outcomes(beat)["2.0.0"]
    assert not passed and error is not None
    assert error.startswith("smoke add [3, 2]: trap: ") and "unreachable" in error, error
    assert outcomes(beat)["1.0.0"] == (True, None)
    assert weights(beat) == {"1.0.0": 50, "2.0.0": 0}  # what it serves, not what the table says
    # Still loaded, for a look with X-Hotswap-Version; the smoke calls counted in no metric.
    assert await served(url, 1, {VERSION_HEADER: "2.0.0"}) == Counter({"500": 1})
    assert {(m.version, m.requests) for m in beat.metrics} == {("1.0.0", 40)}


async def test_a_version_alone_whose_result_does_not_match_leaves_the_module_unavailable(
    node: tuple[Router, DirectorySource, str],
) -> None:
    router, source, url = node
    await router.apply_table([entry(source, "1.0.0", WRONG, 100)], 1)
    assert await served(url, 3) == Counter({"503": 3})
    assert outcomes(heartbeat(router)) == {"1.0.0": (False, "smoke add [3, 2]: returned 6, expected 5")}


async def test_a_passing_version_takes_its_weight_and_keeps_its_outcome_across_tables(
    node: tuple[Router, DirectorySource, str],
) -> None:
    router, source, url = node
    await router.apply_table([entry(source, "1.0.0", GOOD, 100)], 1)
    assert outcomes(heartbeat(router)) == {"1.0.0": (True, None)}
    report = await router.apply_table([entry(source, "1.0.0", GOOD, 40), entry(source, "2.0.0", GOOD, 60)], 2)
    assert report.kept == ("calc@1.0.0",) and report.loaded == ("calc@2.0.0",)
    beat = heartbeat(router)
    assert outcomes(beat) == {"1.0.0": (True, None), "2.0.0": (True, None)}
    assert weights(beat) == {"1.0.0": 40, "2.0.0": 60}
    assert set(await served(url, 40)) == {"1.0.0", "2.0.0"}


async def test_smoke_calls_run_under_the_versions_limits(node: tuple[Router, DirectorySource, str]) -> None:
    router, source, _ = node
    spins = entry(source, "1.0.0", GOOD, 100, smoke=[{"function": "spin"}], limits={"timeoutSeconds": 1})
    await router.apply_table([spins], 1)
    passed, error = outcomes(heartbeat(router))["1.0.0"]
    assert not passed and error is not None and error.startswith("smoke spin []: timeout: "), error


async def test_on_workers_a_failed_smoke_check_takes_no_request_on_any_worker_and_is_reported(
    tmp_path: Path,
) -> None:
    source = DirectorySource(tmp_path / "blobs")
    (tmp_path / "blobs").mkdir()
    pool = WorkerPool(PoolOptions(count=2, cache_dir=tmp_path / "cache"), source)
    await pool.start()
    try:
        await pool.apply_table([entry(source, "1.0.0", GOOD, 50), entry(source, "2.0.0", TRAPS, 50)], 1)
        assert await served(f"http://127.0.0.1:{pool.port}", 40) == Counter({"1.0.0": 40})
        beat = heartbeat(pool)
        passed, error = outcomes(beat)["2.0.0"]
        assert not passed and error is not None and "unreachable" in error, error
        assert outcomes(beat)["1.0.0"] == (True, None)
        assert weights(beat) == {"1.0.0": 50, "2.0.0": 0}
    finally:
        await pool.close()


@pytest.mark.parametrize(
    ("actual", "expected", "same"),
    [
        (5, 5, True),
        (5.0, 5, True),
        (True, 1, False),
        (1, True, False),
        ([1, {"a": "b"}], [1, {"a": "b"}], True),
        ([1, 2], [2, 1], False),
        ({"a": 1}, {"a": 1, "b": None}, False),
        ("5", 5, False),
        (None, None, True),
    ],
)
def test_expected_results_compare_as_exact_json(actual: Any, expected: Any, same: bool) -> None:
    assert same_json(actual, expected) is same
