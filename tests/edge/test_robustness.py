"""The node under a hostile client or module: thread shares, instance reset, JSON nesting (issue 16).

* One module whose calls all run into their timeout holds at most its share of the worker threads:
  another module's call gets a thread at once (a real node process), calls over the share queue
  and are answered 429 busy when the queue is full or the wait too long.
* A pooled instance that failed never serves again, and what earlier calls left in a pooled
  instance (memory grown to the cap) does not turn a later stack overflow into a `memory` error.
* JSON nested deeper than the limits is a 400 (request) or a trap (module result), never a 500 or
  a crash, in a single-process node, in a node with worker processes, and in `hotswap exec`.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.ipc import WORKER_HEADER
from edge.lanes import ThreadShares
from edge.protocol import ModuleEntry
from edge.router import Router
from edge.runtime import Runtime
from edge.server import Node, NodeConfig, start
from edge.standalone import DirectorySource
from hotswap.cli import main
from tests.e2e.cluster import poll
from tests.edge.conftest import MODULES, module_bytes

ROOT = Path(__file__).resolve().parents[2]
EXECUTE = "/api/v1/wasm/execute"
SPIN = {"module": "limits", "function": "spin", "args": []}
CAT = {"module": "cat", "function": "_start", "args": {"from": "cat"}}


@contextmanager
def node_process(folder: Path, *extra: str) -> Iterator[str]:
    """`hotswap edge --standalone FOLDER` on a free port; yields its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hotswap", "edge", "--standalone", str(folder), "--port", "0",
         "--cache-dir", str(folder.parent / "cache"), "--log-level", "ERROR", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
        assert "serving" in line, line
        yield line.strip().rsplit(" ", 1)[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def folder_with(tmp_path: Path, *names: str, **texts: str) -> Path:
    """A standalone folder serving `tests/edge/modules/NAME.wat` for each name, and NAME.wat texts."""
    folder = tmp_path / "modules"
    folder.mkdir()
    for name in names:
        (folder / f"{name}.wat").write_text((MODULES / f"{name}.wat").read_text())
    for name, text in texts.items():
        (folder / f"{name}.wat").write_text(text)
    return folder


async def post(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, dict[str, Any], str | None]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with session.post(url + EXECUTE, data=data, headers={"Content-Type": "application/json"}) as response:
        return response.status, await response.json(content_type=None), response.headers.get(WORKER_HEADER)


async def inflight(session: aiohttp.ClientSession, url: str, module: str) -> int:
    async with session.get(url + "/metrics") as response:
        text = await response.text()
    found = re.search(rf'^hotswap_inflight_requests{{module="{module}",[^}}]*}} (\d+)$', text, re.M)
    return int(found.group(1)) if found else 0


@asynccontextmanager
async def local_node(
    tmp_path: Path, modules: dict[str, dict[str, Any]], config: NodeConfig
) -> AsyncIterator[tuple[Node, str]]:
    """A node in this process on a real loopback socket, and its URL."""
    runtime = Runtime()
    source = DirectorySource(tmp_path)
    router = Router(runtime, source)
    entries = [
        ModuleEntry.model_validate(
            {"module": name, "version": "1.0.0", "digest": source.add(module_bytes(name)), **spec}
        )
        for name, spec in modules.items()
    ]
    assert not (await router.apply_table(entries, 1)).failed
    node = Node(runtime, router, config)
    runner, port = await start(node, "127.0.0.1", 0)
    try:
        yield node, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        runtime.close()


async def until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.001)


# -- one module's timeouts cannot starve the others -------------------------------------------------


async def test_a_module_running_into_its_timeout_leaves_worker_threads_for_other_modules(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, "limits", "cat")
    with node_process(folder, "--threads", "4", "--timeout-s", "2") as url:
        async with aiohttp.ClientSession() as session:

            async def all_in() -> bool:
                return await inflight(session, url, "limits") == 4

            spins = [asyncio.create_task(post(session, url, SPIN)) for _ in range(4)]
            await poll(all_in, "all four looping calls in the node")
            # A command always runs on a worker thread: it finds one free although `limits` asked for all four.
            status, body, _ = await post(session, url, CAT)
            assert (status, body["result"]) == (200, {"from": "cat"})
            assert not any(spin.done() for spin in spins)  # answered while every looping call still runs
            answers = await asyncio.gather(*spins)
    assert [(status, body["error"]) for status, body, _ in answers] == [(504, "timeout")] * 4


async def test_calls_over_a_versions_share_wait_in_its_queue_and_a_full_queue_answers_busy(tmp_path: Path) -> None:
    config = NodeConfig(threads=2, thread_queue=1)  # a share of one thread, one call may wait for it
    modules: dict[str, dict[str, Any]] = {"limits": {"limits": {"timeoutSeconds": 2}}, "cat": {}}
    async with local_node(tmp_path, modules, config) as (node, url), aiohttp.ClientSession() as session:
        limits = next(s.loaded for s in node.router.slots() if s.module == "limits")
        running = asyncio.create_task(post(session, url, SPIN))
        await until(lambda: node.shares.running(limits) == 1)
        waiting = asyncio.create_task(post(session, url, SPIN))
        await until(lambda: node.shares.waiting(limits) == 1)
        status, body, _ = await post(session, url, SPIN)
        assert (status, body["error"]) == (429, "busy")
        assert "limits@1.0.0" in body["message"] and "1 call(s) wait" in body["message"]
        status, body, _ = await post(session, url, CAT)  # the other thread serves other modules
        assert status == 200
        assert not running.done() and not waiting.done()
        assert [(s, b["error"]) for s, b, _ in await asyncio.gather(running, waiting)] == [(504, "timeout")] * 2
        assert (node.shares.running(limits), node.shares.waiting(limits)) == (0, 0)
        counted = {m.module: m for m in node.router.metrics_delta()}
    assert (counted["limits"].timeouts, counted["limits"].errors) == (2, 2)  # busy is not the module's failure


async def test_a_call_that_waits_too_long_for_its_versions_share_answers_busy(tmp_path: Path) -> None:
    config = NodeConfig(threads=2, thread_max_wait=0.2)
    async with (
        local_node(tmp_path, {"limits": {"limits": {"timeoutSeconds": 3}}}, config) as (node, url),
        aiohttp.ClientSession() as session,
    ):
        limits = node.router.slots()[0].loaded
        running = asyncio.create_task(post(session, url, SPIN))
        await until(lambda: node.shares.running(limits) == 1)
        status, body, _ = await post(session, url, SPIN)
        assert (status, body["error"]) == (429, "busy") and "waited 0.2s" in body["message"]
        assert not running.done() and node.shares.waiting(limits) == 0  # it left the queue
        status, body, _ = await running
    assert (status, body["error"]) == (504, "timeout")
    assert node.shares.running(limits) == 0


async def test_a_share_goes_to_the_first_waiter_and_a_cancelled_waiter_leaves_the_queue() -> None:
    shares = ThreadShares(share=1, queue=8, max_wait=60)
    await shares.take("a", "a")
    first, second, third = (asyncio.create_task(shares.take("a", "a")) for _ in range(3))
    await until(lambda: shares.waiting("a") == 3)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert shares.waiting("a") == 2
    await shares.take("b", "b")  # another version never waits behind "a"
    shares.give_back("a")
    await second
    assert not third.done() and shares.running("a") == 1
    shares.give_back("a")
    await third
    shares.give_back("a")
    shares.give_back("b")
    assert (shares.running("a"), shares.waiting("a"), shares.running("b")) == (0, 0, 0)


# -- pooled instances after a failure -----------------------------------------------------------------


async def test_a_failed_instance_never_serves_again_and_old_memory_does_not_make_a_trap_a_memory_error(
    tmp_path: Path,
) -> None:
    folder = folder_with(tmp_path, "state")
    with node_process(folder, "--memory-mb", "2") as url:
        async with aiohttp.ClientSession() as session:

            async def call(function: str, *args: int) -> tuple[int, Any]:
                status, body, _ = await post(session, url, {"module": "state", "function": function, "args": args})
                return status, body.get("result", body.get("error"))

            assert [await call("count"), await call("count")] == [(200, 1), (200, 2)]  # one pooled instance
            assert await call("grow", 31) == (200, 1)  # 32 pages: its whole 2 MB, kept by the pool
            assert await call("recurse") == (500, "trap")  # a stack overflow, however full the memory
            assert await call("count") == (200, 1)  # the trapped instance is gone: a fresh one
            assert await call("grow_then_trap", 31) == (507, "memory")  # an allocator giving up at the cap
            assert await call("count") == (200, 1)
            assert await call("recurse") == (500, "trap")


# -- JSON nesting -------------------------------------------------------------------------------------


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


DEEP_RESULT = f"""(module
  (memory (export "memory") 1)
  (data (i32.const 16) "{_nested(300)}")
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "deep") (param i32 i32) (result i64) i64.const {(16 << 32) | 600}))"""


@pytest.mark.parametrize("workers", [1, 2])
async def test_deeply_nested_json_is_a_400_or_a_trap_and_the_node_keeps_serving(tmp_path: Path, workers: int) -> None:
    folder = folder_with(tmp_path, "echo", deep=DEEP_RESULT)
    with node_process(folder, "--workers", str(workers)) as url:
        connector = aiohttp.TCPConnector(force_close=True)  # new connections: the kernel spreads them over workers
        async with aiohttp.ClientSession(connector=connector) as session:
            bomb = b'{"module":"echo","function":"echo","args":' + _nested(100_000).encode() + b"}"
            seen: set[str | None] = set()
            for _ in range(200):
                status, body, worker = await post(session, url, bomb)
                assert (status, body["error"]) == (400, "bad_request"), body
                assert "nested too deep" in body["message"] and "64 levels" in body["message"]
                seen.add(worker)
                if len(seen) == workers:
                    break
            assert len(seen) == workers  # every worker process answered it
            status, body, _ = await post(session, url, b'{"module":"echo","function":"echo","args":' + b"[" * 100_000)
            assert (status, body["error"]) == (400, "bad_request")
            status, body, _ = await post(
                session, url, {"module": "echo", "function": "echo", "args": json.loads(_nested(65))}
            )
            assert (status, body) == (
                400,
                {"error": "bad_request", "message": "args: arrays and objects nest deeper than 64 levels"},
            )
            status, body, _ = await post(
                session, url, {"module": "echo", "function": "echo", "args": json.loads(_nested(64))}
            )
            assert (status, body["result"]) == (200, json.loads(_nested(64)))
            status, body, _ = await post(session, url, {"module": "deep", "function": "deep"})
            assert (status, body["error"]) == (500, "trap") and "deeper than 256 levels" in body["message"]
            async with session.get(url + "/health") as response:
                assert response.status == 200


@pytest.mark.parametrize("arg", [_nested(100_000), "[" * 100_000, _nested(65)])
def test_hotswap_exec_refuses_args_nested_too_deep(capsys: pytest.CaptureFixture[str], arg: str) -> None:
    code = main(["exec", str(MODULES / "echo.wat"), "echo", "1", arg])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert json.loads(err) == {
        "error": "bad_request",
        "message": "ARG 2: arrays and objects nest deeper than 64 levels",
    }
    assert main(["exec", str(MODULES / "echo.wat"), "echo", _nested(64)]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(_nested(64))
