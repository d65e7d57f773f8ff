"""The node's HTTP API on a real socket: execute, errors, health, modules, metrics, admin, auth."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families

from edge.auth import Authenticator
from edge.protocol import ModuleEntry
from edge.router import Router
from edge.runtime import Runtime
from edge.server import Node, NodeConfig, start
from edge.standalone import DirectorySource
from edge.wat import compile_wat
from tests.edge.conftest import module_bytes

EXECUTE = "/api/v1/wasm/execute"


class ShiftedClock:
    """The monotonic clock plus an offset a test can move forward; at a `rate` below 1 it runs slow
    against the loop's timers (a sleep then ends early on it, as the loop's millisecond grid can)."""

    def __init__(self, rate: float = 1.0) -> None:
        self.offset = 0.0
        self.rate = rate

    def __call__(self) -> float:
        return time.monotonic() * self.rate + self.offset


@dataclass
class Client:
    session: aiohttp.ClientSession
    base: str
    node: Node

    async def post(self, body: Any, path: str = EXECUTE, **kw: Any) -> tuple[int, Any, aiohttp.ClientResponse]:
        data = body if isinstance(body, (bytes, str)) else None
        json_body = None if data is not None else body
        async with self.session.post(self.base + path, data=data, json=json_body, **kw) as resp:
            return resp.status, await resp.json(), resp

    async def get(self, path: str) -> tuple[int, str]:
        async with self.session.get(self.base + path) as resp:
            return resp.status, await resp.text()


NodeFactory = Callable[..., Any]


@pytest.fixture
async def make_node(tmp_path: Path) -> AsyncIterator[NodeFactory]:
    cleanups: list[Any] = []

    async def make(
        modules: dict[str, dict[str, Any]] | None = None,
        config: NodeConfig | None = None,
        auth: Authenticator | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Client:
        runtime = Runtime()
        source = DirectorySource(tmp_path)
        router = Router(runtime, source, clock=clock)
        entries = []
        for name, spec in (modules or {"arith": {}}).items():
            digest = source.add(module_bytes(spec.pop("file", name)))
            entries.append(ModuleEntry.model_validate({"module": name, "version": "1.0.0", "digest": digest, **spec}))
        report = await router.apply_table(entries, 1)
        assert not report.failed
        node = Node(runtime, router, config or NodeConfig(admin=True), auth)
        runner, port = await start(node, "127.0.0.1", 0)
        session = aiohttp.ClientSession()
        cleanups.append((session, runner, runtime))
        return Client(session, f"http://127.0.0.1:{port}", node)

    yield make
    for session, runner, runtime in cleanups:
        await session.close()
        await runner.cleanup()
        runtime.close()


async def test_execute_answers_result_module_version_and_duration(make_node: NodeFactory) -> None:
    client = await make_node()
    status, body, resp = await client.post({"module": "arith", "function": "add", "args": [40, 2]})
    assert status == 200
    assert body["result"] == 42 and body["module"] == "arith" and body["version"] == "1.0.0"
    assert body["durationMs"] >= 0
    assert resp.headers["X-Hotswap-Version"] == "1.0.0"


async def test_json_and_command_conventions_over_http(make_node: NodeFactory) -> None:
    client = await make_node({"echo": {}, "cat": {}})
    status, body, _ = await client.post({"module": "echo", "function": "echo", "args": {"k": ["v", 1]}})
    assert (status, body["result"]) == (200, {"k": ["v", 1]})
    status, body, _ = await client.post({"module": "cat", "function": "_start", "args": [1, "two"]})
    assert (status, body["result"]) == (200, [1, "two"])


@pytest.mark.parametrize(
    ("body", "status", "error", "message"),
    [
        (b"", 400, "bad_request", "must be a JSON object"),
        (b"{not json", 400, "bad_request", "Invalid JSON"),
        (b"[1, 2]", 400, "bad_request", "body"),
        ({"function": "add"}, 400, "bad_request", "module: Field required"),
        ({"module": "arith", "function": "add", "args": [1], "extra": 1}, 400, "bad_request", "extra"),
        ({"module": "arith", "function": "add", "args": [1]}, 400, "bad_request", "takes 2 argument"),
        ({"module": "arith", "function": "add", "args": ["a", 1]}, 400, "bad_request", "expected a number"),
        ({"module": "nope", "function": "add", "args": []}, 404, "not_found", "'nope' is not loaded"),
        ({"module": "arith", "function": "nope", "args": []}, 404, "not_found", "'nope' is not an export"),
        ({"module": "arith", "function": "add", "version": "9.9.9"}, 404, "not_found", "version '9.9.9'"),
    ],
)
async def test_bad_requests_get_a_4xx_with_a_message(
    make_node: NodeFactory, body: Any, status: int, error: str, message: str
) -> None:
    client = await make_node()
    got_status, got, _ = await client.post(body)
    assert (got_status, got["error"]) == (status, error)
    assert message in got["message"]
    ok, result, _ = await client.post({"module": "arith", "function": "add", "args": [1, 1]})
    assert (ok, result["result"]) == (200, 2)  # the node keeps serving
    metrics = client.node.router.metrics_delta()
    assert [(m.requests, m.errors) for m in metrics] == [(1, 0)]  # client mistakes never count


async def test_an_oversized_body_is_refused(make_node: NodeFactory) -> None:
    client = await make_node(config=NodeConfig(max_body=1024))
    status, body, _ = await client.post({"module": "arith", "function": "add", "args": [1] * 2000})
    assert (status, body["error"]) == (413, "too_large")


async def test_unknown_paths_and_methods_answer_json(make_node: NodeFactory) -> None:
    client = await make_node()
    async with client.session.get(client.base + "/nope") as resp:
        assert (resp.status, (await resp.json())["error"]) == (404, "not_found")
    async with client.session.get(client.base + EXECUTE) as resp:
        assert (resp.status, (await resp.json())["error"]) == (405, "method_not_allowed")


async def test_module_failures_are_5xx_naming_module_and_version(make_node: NodeFactory) -> None:
    client = await make_node({"arith": {}, "limits": {"limits": {"timeoutSeconds": 0.05, "memoryMB": 2}}})
    status, body, resp = await client.post({"module": "arith", "function": "crash", "args": []})
    assert (status, body["error"], body["module"], body["version"]) == (500, "trap", "arith", "1.0.0")
    assert resp.headers["X-Hotswap-Version"] == "1.0.0"
    status, body, _ = await client.post({"module": "limits", "function": "spin", "args": []})
    assert (status, body["error"]) == (504, "timeout")
    status, body, _ = await client.post({"module": "limits", "function": "grow_or_trap", "args": [100]})
    assert (status, body["error"]) == (507, "memory")
    counted = {m.module: m for m in client.node.router.metrics_delta()}
    assert (counted["arith"].traps, counted["limits"].timeouts, counted["limits"].memory) == (1, 1, 1)


async def test_a_long_call_does_not_stall_fast_ones(make_node: NodeFactory) -> None:
    client = await make_node({"limits": {"limits": {"timeoutSeconds": 2}}})
    spin = asyncio.create_task(client.post({"module": "limits", "function": "spin", "args": []}))
    loaded = client.node.router.slots()[0].loaded
    while "spin" not in loaded.slow:  # it ran out of its inline budget and went to a worker
        await asyncio.sleep(0.001)
    for _ in range(50):
        status, body, _ = await client.post({"module": "limits", "function": "fast", "args": []})
        assert (status, body["result"]) == (200, 7)
    assert not spin.done()  # 50 calls answered while the spinning call still runs
    status, body, _ = await spin
    assert (status, body["error"]) == (504, "timeout")


async def test_a_version_over_its_cpu_share_is_held_then_refused(make_node: NodeFactory) -> None:
    clock = ShiftedClock()
    client = await make_node({"arith": {"limits": {"cpuPercent": 1}}}, config=NodeConfig(cpu_max_wait=0.5), clock=clock)
    slot = client.node.router.slots()[0]
    slot.cpu.charge(10_000_000 + 1)  # just over its 10 ms per second
    clock.offset = 0.95  # the charge leaves the window in 50 ms of real time
    status, body, _ = await client.post({"module": "arith", "function": "add", "args": [1, 2]})
    assert (status, body["result"]) == (200, 3)  # held back, then served
    slot.cpu.charge(5_000_000_000)  # five seconds of CPU: far over, longer than cpu_max_wait
    status, body, _ = await client.post({"module": "arith", "function": "add", "args": [1, 2]})
    assert (status, body["error"], body["version"]) == (429, "cpu", "1.0.0")
    assert client.node.router.metrics_delta()[0].cpu == 1


async def test_a_request_whose_share_frees_within_cpu_max_wait_is_served_however_its_sleeps_end(
    make_node: NodeFactory,
) -> None:
    clock = ShiftedClock(rate=0.99)  # every sleep of the held request ends 1 % early on the share's clock
    client = await make_node({"arith": {"limits": {"cpuPercent": 1}}}, config=NodeConfig(cpu_max_wait=0.3), clock=clock)
    slot = client.node.router.slots()[0]
    slot.cpu.charge(10_000_000 + 1)  # just over its 10 ms per second: back under it one second from now
    clock.offset += 0.701  # now the charge leaves the window in 0.299 s, 1 ms inside cpu_max_wait
    status, body, _ = await client.post({"module": "arith", "function": "add", "args": [1, 2]})
    assert (status, body.get("result")) == (200, 3), body  # adding up its sleeps (0.299 + 0.003) refused it
    assert client.node.router.metrics_delta()[0].cpu == 0


async def test_health_modules_and_metrics(make_node: NodeFactory) -> None:
    client = await make_node({"arith": {}, "echo": {}})
    await client.post({"module": "arith", "function": "add", "args": [1, 2]})
    await client.post({"module": "arith", "function": "crash", "args": []})
    status, text = await client.get("/health")
    assert status == 200 and '"status": "ok"' in text and '"modules": 2' in text
    async with client.session.get(client.base + "/api/v1/wasm/modules") as resp:
        listed = {m["module"]: m for m in (await resp.json())["modules"]}
    functions = {f["name"]: f["convention"] for f in listed["echo"]["functions"]}
    assert functions["echo"] == "json" and functions["alloc"] == "numeric"
    assert listed["arith"]["limits"] == {"memoryMB": 128, "cpuPercent": 50, "timeoutSeconds": 30.0}
    status, text = await client.get("/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    invoked = {s.labels["module"]: s.value for s in families["wasm_functions_invoked"].samples}
    assert invoked == {"arith": 2.0, "echo": 0.0}
    failed = {(s.labels["module"], s.labels["reason"]): s.value for s in families["wasm_functions_failed"].samples}
    assert failed[("arith", "trap")] == 1.0
    count = [s for s in families["wasm_function_invoke_duration_ms"].samples if s.name.endswith("_count")]
    assert {s.labels["module"]: s.value for s in count} == {"arith": 2.0, "echo": 0.0}


async def test_the_admin_endpoint_applies_a_full_table(make_node: NodeFactory) -> None:
    client = await make_node({"arith": {}})
    source = client.node.router.source
    assert isinstance(source, DirectorySource)
    digest = source.add(module_bytes("echo"))
    table = {"generation": 5, "modules": [{"module": "echo", "version": "2.0.0", "digest": digest}]}
    async with client.session.put(client.base + "/api/v1/wasm/admin/table", json=table) as resp:
        report = await resp.json()
    assert report["loaded"] == ["echo@2.0.0"] and report["retired"] == ["arith@1.0.0"]
    status, body, resp2 = await client.post({"module": "echo", "function": "answer"})
    assert (status, body["result"], resp2.headers["X-Hotswap-Version"]) == (200, {"answer": 42}, "2.0.0")
    status, body, _ = await client.post({"module": "arith", "function": "add", "args": [1, 2]})
    assert status == 404
    async with client.session.put(client.base + "/api/v1/wasm/admin/table", json={"modules": "x"}) as resp:
        assert resp.status == 400


async def test_the_admin_endpoint_is_absent_unless_enabled(make_node: NodeFactory) -> None:
    client = await make_node(config=NodeConfig(admin=False))
    async with client.session.put(client.base + "/api/v1/wasm/admin/table", json={}) as resp:
        assert resp.status == 404


async def test_a_node_with_a_key_needs_a_token_for_nodes_with_an_execute_role(make_node: NodeFactory) -> None:
    private = Ed25519PrivateKey.generate()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    client = await make_node(auth=Authenticator(public_pem.decode(), node_id="edge-1"))

    def token(**claims: Any) -> dict[str, str]:
        base = {"exp": int(time.time()) + 60, "iss": "hotswap", "aud": "hotswap-edge", "sub": "someone"}
        value = jwt.encode({**base, **claims}, private, algorithm="EdDSA")
        return {"Authorization": f"Bearer {value}"}

    request = {"module": "arith", "function": "add", "args": [1, 2]}
    status, body, _ = await client.post(request)
    assert (status, body["error"]) == (401, "unauthorized")
    status, body, _ = await client.post(request, headers={"Authorization": "Bearer not-a-jwt"})
    assert (status, body["error"]) == (401, "unauthorized")
    status, body, _ = await client.post(request, headers=token(role="viewer"))
    assert (status, body["error"]) == (403, "forbidden") and "may not do this" in body["message"]
    status, body, _ = await client.post(request, headers=token(role="developer"))
    assert (status, body["result"]) == (200, 3)
    status, body, _ = await client.post(request, headers=token(roles=["viewer", "admin"]))
    assert status == 200
    status, body, _ = await client.post(request, headers=token(role="developer", aud="hotswap-node/edge-1"))
    assert status == 200  # a token for this node only
    wrongs: list[dict[str, Any]] = [
        {"aud": "hotswap-api"},
        {"aud": "hotswap-node/edge-2"},
        {"iss": "mallory"},
        {"aud": ["hotswap-edge", "hotswap-api"]},  # one audience each
        {"sub": None},
    ]
    for wrong in wrongs:
        status, body, _ = await client.post(request, headers=token(role="admin", **wrong))
        assert (status, body["error"]) == (401, "unauthorized"), wrong
    unaddressed = jwt.encode({"exp": int(time.time()) + 60, "iss": "hotswap", "role": "admin"}, private, "EdDSA")
    status, body, _ = await client.post(request, headers={"Authorization": f"Bearer {unaddressed}"})
    assert status == 401  # no audience at all
    other = Ed25519PrivateKey.generate()
    forged = jwt.encode(
        {"exp": int(time.time()) + 60, "iss": "hotswap", "aud": "hotswap-edge", "role": "admin"},
        other,
        algorithm="EdDSA",
    )
    status, body, _ = await client.post(request, headers={"Authorization": f"Bearer {forged}"})
    assert status == 401


async def test_an_entry_names_the_header_that_pins_clients_to_a_version(make_node: NodeFactory) -> None:
    client = await make_node({"arith": {}})
    source = client.node.router.source
    assert isinstance(source, DirectorySource)
    a, b = (source.add(compile_wat(f'(module (func (export "v") (result i32) i32.const {n}))')) for n in (1, 2))
    modules = [
        {"module": "m", "version": "1.0.0", "digest": a, "weight": 50, "sticky": "X-User"},
        {"module": "m", "version": "2.0.0", "digest": b, "weight": 50, "sticky": "X-User"},
    ]
    async with client.session.put(client.base + "/api/v1/wasm/admin/table", json={"modules": modules}) as resp:
        assert resp.status == 200

    async def version_for(user: str) -> str:
        async with client.session.post(
            client.base + EXECUTE, json={"module": "m", "function": "v", "args": []}, headers={"X-User": user}
        ) as resp:
            assert resp.status == 200
            return resp.headers["X-Hotswap-Version"]

    for user in ("alice", "bob"):
        first = await version_for(user)
        assert {await version_for(user) for _ in range(10)} == {first}
    assert {await version_for(f"user-{i}") for i in range(40)} == {"1.0.0", "2.0.0"}
