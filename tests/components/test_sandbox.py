"""Components under the node's limits and capabilities: memory, timeout, CPU share, outgoing HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from edge.component import host_allowed
from edge.errors import LoadError, ModuleTimeoutError
from edge.protocol import ModuleEntry
from edge.router import Router
from edge.runtime import MIB, Runtime, Sandbox
from edge.server import Node, NodeConfig, start
from edge.standalone import DirectorySource
from tests.components.conftest import build


def test_memory_grows_up_to_the_limit_and_no_further(runtime: Runtime, kitchen: bytes) -> None:
    loaded = runtime.load_any(kitchen, Sandbox(memory_bytes=2 * MIB))  # 32 pages
    assert loaded.invoke(loaded.prepare("grow", [30])).value == 1  # the old size: one page
    assert loaded.invoke(loaded.prepare("grow", [5])).value == -1  # 36 pages: refused
    assert loaded.invoke(loaded.prepare("grow", [1])).value == 31


def test_a_component_whose_initial_memory_exceeds_the_limit_does_not_load(runtime: Runtime, tmp_path: Path) -> None:
    wat = '(module (memory (export "memory") 64) (func (export "f") (result s32) (i32.const 1)))'
    wat = wat.replace("(result s32)", "(result i32)")
    data = build(tmp_path, "package t:big@0.1.0;\nworld big { export f: func() -> s32; }\n", wat, "big")
    with pytest.raises(LoadError, match="memory"):
        runtime.load_any(data, Sandbox(memory_bytes=2 * MIB))
    loaded = runtime.load_any(data, Sandbox(memory_bytes=8 * MIB))
    assert loaded.invoke(loaded.prepare("f", [])).value == 1


def test_an_endless_call_stops_at_its_timeout_and_the_next_call_runs(runtime: Runtime, kitchen: bytes) -> None:
    loaded = runtime.load_any(kitchen, Sandbox(timeout_seconds=0.05))
    with pytest.raises(ModuleTimeoutError, match=r"timeout of 0\.05s"):
        loaded.invoke(loaded.prepare("spin", []))
    assert loaded.invoke(loaded.prepare("echo-u8", [[1]])).value == [1]


def test_an_inline_call_over_its_budget_moves_to_a_worker(runtime: Runtime, kitchen: bytes) -> None:
    from edge.loaded import BudgetExceededError

    loaded = runtime.load_any(kitchen, Sandbox(timeout_seconds=1))
    assert loaded.may_run_inline("spin")
    with pytest.raises(BudgetExceededError):
        loaded.invoke(loaded.prepare("spin", []), budget=2, cpu_clock=time.perf_counter_ns)
    loaded.mark_slow("spin")
    assert not loaded.may_run_inline("spin") and loaded.slow == frozenset({"spin"})


@pytest.mark.parametrize(
    ("url", "allow", "ok"),
    [
        ("http://127.0.0.1:8080/x", ("127.0.0.1:8080",), True),
        ("http://127.0.0.1:8081/x", ("127.0.0.1:8080",), False),
        ("http://127.0.0.1:8081/x", ("127.0.0.1",), True),
        ("https://api.example.com/", ("*.example.com",), True),
        ("https://example.org/", ("*.example.com",), False),
        ("https://anything/", ("*",), True),
        ("ftp://127.0.0.1/", ("*",), False),
        ("http://127.0.0.1:8080/", (), False),
    ],
)
def test_host_allowed(url: str, allow: tuple[str, ...], ok: bool) -> None:
    assert host_allowed(url, allow) is ok


@pytest.fixture
async def http_server() -> AsyncIterator[int]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi from the allowed host", headers={"X-Test": "1"})

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await runner.cleanup()


async def test_outgoing_http_reaches_an_allowed_host_and_is_refused_elsewhere(
    fetcher: bytes, http_server: int, tmp_path: Path
) -> None:
    runtime = Runtime()
    source = DirectorySource(tmp_path)
    router = Router(runtime, source)
    digest = source.add(fetcher)
    entry = ModuleEntry.model_validate(
        {
            "module": "fetcher",
            "version": "1.0.0",
            "digest": digest,
            "capabilities": {"network": {"allowHosts": [f"127.0.0.1:{http_server}"]}},
        }
    )
    assert not (await router.apply_table([entry], 1)).failed
    node = Node(runtime, router, NodeConfig())
    runner, port = await start(node, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/api/v1/wasm/execute"
            allowed = {"module": "fetcher", "function": "get", "args": [f"http://127.0.0.1:{http_server}/hello"]}
            async with session.post(url, json=allowed) as resp:
                body = await resp.json()
            assert resp.status == 200, body
            ok = body["result"]["ok"]
            assert ok["status"] == 200 and bytes(ok["body"]) == b"hi from the allowed host"
            assert {"name": "X-Test", "value": "1"} in ok["headers"]
            other = {"module": "fetcher", "function": "get", "args": [f"http://127.0.0.1:{port}/health"]}
            async with session.post(url, json=other) as resp:
                body = await resp.json()
            assert resp.status == 200
            denied = body["result"]["err"]["denied"]
            assert f"127.0.0.1:{port} is not on network.allowHosts (127.0.0.1:{http_server})" == denied
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                text = await resp.text()
            assert 'hotswap_sandbox_violations_total{module="fetcher",version="1.0.0",kind="network"} 1' in text
        (delta,) = router.metrics_delta()
        assert (delta.requests, delta.errors, delta.violations) == (2, 0, 1)  # refused, counted, not an error
    finally:
        await runner.cleanup()
        runtime.close()


async def test_a_fetch_that_cannot_connect_or_outlives_the_call_is_an_error_value(fetcher: bytes) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="too late")

    app = web.Application()
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        with Runtime() as runtime:
            loaded = runtime.load_any(fetcher, Sandbox(timeout_seconds=0.3, allow_hosts=("127.0.0.1",)))
            assert not loaded.may_run_inline("get")  # a fetch blocks: never on the event loop
            timed_out = await asyncio.to_thread(loaded.invoke, loaded.prepare("get", [f"http://127.0.0.1:{port}/slow"]))
            assert timed_out.value == {"err": "timeout"}
            refused = await asyncio.to_thread(loaded.invoke, loaded.prepare("get", ["http://127.0.0.1:1/"]))
            assert "Connect" in refused.value["err"]["failed"]
            assert refused.violations == 0
    finally:
        await runner.cleanup()
