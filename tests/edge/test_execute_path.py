"""The execute path's shortcuts keep its behaviour: the fast decoder agrees with the model, answers
name the version that served them across splits and swaps, a short call held up by the machine
stays inline, and the server's shortcut past the router takes plain execute calls only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from pydantic import ValidationError
from yarl import URL

from edge import wasm
from edge.errors import BadRequestError
from edge.execute import _validated, decode, encode
from edge.loaded import BudgetExceededError
from edge.onepiece import header_lines
from edge.protocol import MAX_ARGS_DEPTH, ExecuteRequest, ModuleEntry, may_nest_deeper, nests_deeper
from edge.router import Router
from edge.runtime import Runtime
from edge.server import Node, NodeConfig, build_app, start, take_execute_shortcut
from edge.standalone import DirectorySource
from tests.edge.conftest import module_bytes
from tests.edge.test_server import Client, NodeFactory, make_node  # noqa: F401 - the fixture

EXECUTE = "/api/v1/wasm/execute"


def by_decode(body: bytes) -> Any:
    try:
        asked = decode(body)
        return repr((asked.module, asked.function, asked.args, asked.version, asked.argv, asked.stdin_bytes()))
    except BadRequestError as exc:
        return exc.message


def by_model(body: bytes) -> Any:
    """What the handler did before the fast decoder: the model for every body."""
    try:
        asked = _validated(body)
        if may_nest_deeper(body, MAX_ARGS_DEPTH + 1) and nests_deeper(asked.args, MAX_ARGS_DEPTH):
            raise BadRequestError(f"args: arrays and objects nest deeper than {MAX_ARGS_DEPTH} levels")
        return repr((asked.module, asked.function, asked.args, asked.version, asked.argv, asked.stdin_bytes()))
    except BadRequestError as exc:
        return exc.message


NAMES = st.one_of(st.sampled_from(["", "a", "m" * 128, "m" * 129, "f" * 256, "f" * 257]), st.text(max_size=8))
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 10**19, 0.1 + 0.2, -0.0]),
)
VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)),
    max_leaves=12,
)
FIELDS = st.dictionaries(
    st.sampled_from(["module", "function", "args", "version", "argv", "stdin", "stdinBase64", "extra"]),
    st.one_of(NAMES, VALUES),
    max_size=6,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FIELDS, st.integers(min_value=0, max_value=3), st.integers(min_value=0, max_value=80))
def test_the_fast_decoder_answers_every_body_as_the_model_does(fields: dict[str, Any], how: int, cut: int) -> None:
    if how == 3:  # nested deep enough for the depth checks
        fields = {**fields, "args": json.loads("[" * (MAX_ARGS_DEPTH + cut) + "]" * (MAX_ARGS_DEPTH + cut))}
    body = json.dumps(fields, ensure_ascii=how == 1).encode()
    if how == 2 and cut:
        body = body[:-cut]  # broken JSON
    assert by_decode(body) == by_model(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", None),
        (b"[]", None),
        (b'{"module": "arith"}', None),
        (b'{"module": "arith", "function": "add", "args": [1, 2], "extra": 1}', None),
        (b'{"module": "arith", "function": "add", "args": [' + b"[" * 250 + b"]" * 250 + b"]}", None),
        (b'\xef\xbb\xbf{"module": "arith", "function": "add", "args": [1, 2]}', None),
        # bodies the model takes, whose args the export refuses: an integer orjson would make a float
        (
            b'{"module": "arith", "function": "add", "args": [18446744073709551616, 1]}',
            "args[0]: 18446744073709551616 does not fit in i32",
        ),
        (b'{"module": "arith", "function": "add", "args": [NaN, 1]}', "args[0]: i32 takes an integer, got nan"),
    ],
)
async def test_a_body_off_the_common_shape_answers_as_before(
    make_node: NodeFactory,  # noqa: F811
    body: bytes,
    message: str | None,
) -> None:
    client: Client = await make_node()
    status, answer, _ = await client.post(body, headers={"Content-Type": "application/json"})
    assert answer == {"error": "bad_request", "message": message or by_model(body)}
    assert status == 400


def test_answers_keep_what_orjson_refuses_or_the_stdlib_encoder_refused() -> None:
    assert json.loads(encode({"result": 2**70, "text": "é\n"})) == {"result": 2**70, "text": "é\n"}
    assert json.loads(encode({"result": "\ud800"})) == {"result": "\ud800"}  # a lone surrogate, escaped
    deep: Any = []
    for _ in range(300):
        deep = [deep]
    assert json.loads(encode({"result": deep}))["result"] == deep


V = '(module (func (export "version") (result i32) i32.const {n}))'


@pytest.fixture
async def greeter(tmp_path: Path) -> AsyncIterator[tuple[Client, DirectorySource]]:
    runtime = Runtime()
    source = DirectorySource(tmp_path)
    router = Router(runtime, source)
    node = Node(runtime, router, NodeConfig())
    runner, port = await start(node, "127.0.0.1", 0)
    async with aiohttp.ClientSession() as session:
        yield Client(session, f"http://127.0.0.1:{port}", node), source
    await runner.cleanup()
    runtime.close()


def version(source: DirectorySource, n: int, weight: int) -> ModuleEntry:
    digest = source.add(wasm.compile_wat(V.format(n=n)))
    return ModuleEntry.model_validate({"module": "greeter", "version": f"{n}.0.0", "digest": digest, "weight": weight})


async def ask(client: Client, **headers: str) -> tuple[str, str, int]:
    status, body, resp = await client.post({"module": "greeter", "function": "version", "args": []}, headers=headers)
    assert status == 200, body
    return resp.headers["X-Hotswap-Version"], body["version"], body["result"]


async def test_answers_name_the_version_that_served_them_across_a_split(
    greeter: tuple[Client, DirectorySource],
) -> None:
    client, source = greeter
    await client.node.router.apply_table([version(source, 1, 50), version(source, 2, 50)], 1)
    seen = {await ask(client) for _ in range(60)}
    assert seen == {("1.0.0", "1.0.0", 1), ("2.0.0", "2.0.0", 2)}
    assert await ask(client, **{"X-Hotswap-Version": "2.0.0"}) == ("2.0.0", "2.0.0", 2)


async def test_a_swap_mid_traffic_answers_from_the_new_version_after_it(
    greeter: tuple[Client, DirectorySource],
) -> None:
    client, source = greeter
    router = client.node.router
    await router.apply_table([version(source, 1, 100)], 1)
    swapped = asyncio.Event()
    answered = 0
    flowing = asyncio.Event()
    after: list[tuple[str, str, int]] = []

    async def traffic() -> None:
        nonlocal answered
        while not swapped.is_set():
            assert (await ask(client))[0] in ("1.0.0", "2.0.0")
            answered += 1
            if answered >= 16:
                flowing.set()  # calls are in flight when the table swaps, not a pause
        after.extend([await ask(client) for _ in range(20)])

    tasks = [asyncio.create_task(traffic()) for _ in range(8)]
    await flowing.wait()
    await router.apply_table([version(source, 2, 100)], 2)  # 2.0.0 only: a new route, new answer headers
    swapped.set()
    await asyncio.gather(*tasks)
    assert set(after) == {("2.0.0", "2.0.0", 2)}
    await router.apply_table([version(source, 2, 0), version(source, 3, 100)], 3)  # the sole version moves
    assert {await ask(client) for _ in range(10)} == {("3.0.0", "3.0.0", 3)}


async def test_a_short_call_held_up_past_its_inline_budget_stays_inline(make_node: NodeFactory) -> None:  # noqa: F811
    client: Client = await make_node()
    loaded = client.node.router.slots()[0].loaded
    invoke, inline = loaded.invoke, []

    def held_up_once(call: Any, **kw: Any) -> Any:
        if kw.get("budget") is not None:
            inline.append(call.function)
            if len(inline) == 1:  # as if the machine took the loop's core for the whole budget
                raise BudgetExceededError
        return invoke(call, **kw)

    loaded.invoke = held_up_once  # type: ignore[method-assign]
    status, body, _ = await client.post({"module": "arith", "function": "add", "args": [20, 22]})
    assert (status, body["result"]) == (200, 42)  # rerun on a worker, which took microseconds of CPU
    assert "add" not in loaded.slow
    status, body, _ = await client.post({"module": "arith", "function": "add", "args": [1, 2]})
    assert (status, body["result"], inline) == (200, 3, ["add", "add"])  # inline again


def test_the_model_still_parses_what_the_fast_decoder_takes() -> None:
    body = b'{"module": "arith", "function": "add", "args": [1, 2], "version": "1.0.0"}'
    req = ExecuteRequest.model_validate_json(body)
    assert by_decode(body) == repr((req.module, req.function, req.args, req.version, None, None))


# -- the server's shortcut to the execute handler (edge.server.take_execute_shortcut) -------------


@pytest.fixture
async def shortcut(tmp_path: Path) -> AsyncIterator[tuple[str, list[str], web.AppRunner]]:
    """A node serving arith, its runner set up as `start` does, with what reaches the application's own
    handler recorded (`method path`) and a header added by the application's `on_response_prepare`."""
    runtime = Runtime()
    source = DirectorySource(tmp_path)
    router = Router(runtime, source)
    digest = source.add(module_bytes("arith"))
    await router.apply_table([ModuleEntry.model_validate({"module": "arith", "version": "1.0.0", "digest": digest})], 1)
    app = build_app(Node(runtime, router, NodeConfig()))

    async def tag(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["X-Test-App"] = f"{request.app is app} {request.match_info.route.method}"

    app.on_response_prepare.append(tag)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    assert runner.server is not None
    general = runner.server.request_handler
    reached: list[str] = []

    async def recorded(request: web.BaseRequest) -> web.StreamResponse:
        reached.append(f"{request.method} {request.raw_path}")
        return await general(request)

    runner.server.request_handler = recorded
    assert take_execute_shortcut(runner)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", reached, runner
    finally:
        await runner.cleanup()
        runtime.close()


ADD = {"module": "arith", "function": "add", "args": [20, 22]}


async def test_the_shortcut_takes_a_plain_execute_call_with_the_app_and_route_the_router_gives(
    shortcut: tuple[str, list[str], web.AppRunner],
) -> None:
    url, reached, _ = shortcut
    async with aiohttp.ClientSession() as http:
        async with http.post(url + EXECUTE, json=ADD) as r:
            assert r.status == 200 and (await r.json())["result"] == 42
            assert r.headers["X-Test-App"] == "True POST"  # request.app, match_info and the signal, as before
            assert r.headers["X-Hotswap-Version"] == "1.0.0"
        async with http.post(url + EXECUTE, data=b"{") as r:
            assert r.status == 400 and (await r.json())["error"] == "bad_request"
    assert reached == []  # neither went through the application's router


async def test_every_other_request_goes_to_the_application_and_is_answered_as_before(
    shortcut: tuple[str, list[str], web.AppRunner],
) -> None:
    url, reached, _ = shortcut
    async with aiohttp.ClientSession() as http:
        async with http.post(url + EXECUTE + "?trace=1", json=ADD) as r:
            assert r.status == 200 and (await r.json())["result"] == 42
            assert r.headers["X-Test-App"] == "True POST"
        async with http.post(url + EXECUTE, json=ADD, headers={"Expect": "100-continue"}) as r:
            assert r.status == 200 and (await r.json())["result"] == 42
        async with http.post(URL(url + "/api/v1/wasm/%65xecute", encoded=True), json=ADD) as r:
            assert r.status == 200 and (await r.json())["result"] == 42  # the router decodes the escape
        async with http.get(url + EXECUTE) as r:
            assert r.status == 405 and (await r.json())["error"] == "method_not_allowed"
        async with http.post(url + EXECUTE + "/", json=ADD) as r:
            assert r.status == 404 and (await r.json())["error"] == "not_found"
        async with http.get(url + "/health") as r:
            assert r.status == 200
    assert reached == [
        f"POST {EXECUTE}?trace=1",
        f"POST {EXECUTE}",
        "POST /api/v1/wasm/%65xecute",
        f"GET {EXECUTE}",
        f"POST {EXECUTE}/",
        "GET /health",
    ]


async def test_no_shortcut_past_a_middleware_or_before_setup(tmp_path: Path) -> None:
    runtime = Runtime()
    try:
        node = Node(runtime, Router(runtime, DirectorySource(tmp_path)), NodeConfig())
        plain = web.AppRunner(build_app(node))
        assert not take_execute_shortcut(plain)  # not set up: no server yet
        app = build_app(node)

        @web.middleware
        async def passing(request: web.Request, handler: Any) -> web.StreamResponse:
            return await handler(request)

        app.middlewares.append(passing)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            assert not take_execute_shortcut(runner)  # a middleware would be skipped: the router keeps it all
        finally:
            await runner.cleanup()
    finally:
        runtime.close()


# -- the answer written in one piece (edge.execute.PlainAnswer) ---------------------------------------


async def _unchanged(request: web.Request, response: web.StreamResponse) -> None:
    """An `on_response_prepare` receiver that changes nothing: its application answers with `web.Response`."""


@contextlib.asynccontextmanager
async def served(
    router: Router, runtime: Runtime, *, signal: bool, max_body: int = NodeConfig().max_body
) -> AsyncIterator[tuple[int, web.AppRunner, list[str]]]:
    """`router`'s node served as `start` serves it, with (`signal`: every answer a `web.Response`) or
    without a prepare receiver that changes nothing: its port, the runner, and the type of each
    response its handler returned."""
    app = build_app(Node(runtime, router, NodeConfig(max_body=max_body)))
    if signal:
        app.on_response_prepare.append(_unchanged)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    assert runner.server is not None and take_execute_shortcut(runner)
    shortcut, kinds = runner.server.request_handler, []

    async def recorded(request: web.BaseRequest) -> web.StreamResponse:
        response = await shortcut(request)
        kinds.append(type(response).__name__)
        return response

    runner.server.request_handler = recorded
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield int(runner.addresses[0][1]), runner, kinds
    finally:
        await runner.cleanup()


async def exchange(port: int, data: bytes) -> bytes:
    """What the server writes back on one connection until it closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(-1), 30)
    finally:
        writer.close()


def _normal(raw: bytes) -> bytes:
    raw = re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", raw)
    raw = re.sub(rb'"durationMs":[0-9.eE+-]+', b'"durationMs":-', raw)
    return re.sub(rb"\r\nContent-Length: \d+", b"\r\nContent-Length: -", raw)


def _call(
    version: bytes, *headers: bytes, body: bytes = b'{"module":"arith","function":"add","args":[20,22]}'
) -> bytes:
    head = b"POST " + EXECUTE.encode() + b" HTTP/" + version + b"\r\nHost: 127.0.0.1\r\n" + b"".join(headers)
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


PLAIN_CASES = {
    "1.1, kept alive, two calls, then one that closes": _call(b"1.1") * 2 + _call(b"1.1", b"Connection: close\r\n"),
    "1.1, closing": _call(b"1.1", b"Connection: close\r\n"),
    "1.0": _call(b"1.0"),
    "1.0, kept alive, then plain 1.0": _call(b"1.0", b"Connection: keep-alive\r\n") + _call(b"1.0"),
    "a version asked for by its header": _call(
        b"1.1", "X-Hotswap-Version: 1.0.0-\u00e9\r\n".encode(), b"Connection: close\r\n"
    ),
}


async def test_a_plain_answer_is_byte_for_byte_what_aiohttp_writes(tmp_path: Path) -> None:
    """An application with no prepare receiver answers a 200 with `PlainAnswer`; the same node with
    one answers with aiohttp's `web.Response`; both write the same bytes, for HTTP/1.0 and 1.1,
    kept alive or closed, and for a version whose name is not ASCII (written as UTF-8)."""
    runtime = Runtime()
    source = DirectorySource(tmp_path)
    router = Router(runtime, source)
    digest = source.add(module_bytes("arith"))
    entry = {"module": "arith", "version": "1.0.0-\u00e9", "digest": digest}
    await router.apply_table([ModuleEntry.model_validate(entry)], 1)
    try:
        async with (
            served(router, runtime, signal=False) as (plain, _, plain_kinds),
            served(router, runtime, signal=True) as (aiohttp_port, _, aiohttp_kinds),
        ):
            for name, data in PLAIN_CASES.items():
                mine, theirs = await exchange(plain, data), await exchange(aiohttp_port, data)
                assert mine.count(b"HTTP/1.") == data.count(b"HTTP/1."), (name, mine)
                assert b" 200 OK\r\n" in mine and b'"result":42' in mine, (name, mine)
                assert _normal(mine) == _normal(theirs), name
            assert set(plain_kinds) == {"PlainAnswer"} and set(aiohttp_kinds) == {"Response"}
            # a failure is still aiohttp's own JSON answer
            assert b" 404 Not Found\r\n" in await exchange(
                plain, _call(b"1.1", b"Connection: close\r\n", body=b'{"module":"x","function":"f"}')
            )
            assert plain_kinds[-1] == "Response"
    finally:
        runtime.close()


def test_a_version_that_cannot_be_a_header_has_no_plain_head() -> None:
    """`header_lines` writes what aiohttp writes, and refuses what it refuses: such a version's answers
    go through `web.Response`, which refuses them as it always did."""
    assert header_lines(CIMultiDict({"Content-Type": "application/json", "V": "1.0.0"})) == (
        b"Content-Type: application/json\r\nV: 1.0.0\r\n"
    )
    for bad in ("1.0\r\nX-Injected: 1", "1.0\n", "1.0\x00", "1.0\x7f"):
        assert header_lines(CIMultiDict({"V": bad})) is None, repr(bad)
        with pytest.raises(ValidationError, match="version"):  # and no table carries such a version
            ModuleEntry.model_validate({"module": "m", "version": bad, "digest": "sha256:" + "0" * 64})
    assert ModuleEntry.model_validate({"module": "m", "version": "1.0\t\u00e9", "digest": "sha256:" + "0" * 64})
    # aiohttp's rule, kept in `edge.onepiece`: every control character but the tab is refused, in a
    # name as in a value; the rest is written as UTF-8.
    for code in range(0x80):
        refused = (code < 0x20 and code != 0x09) or code == 0x7F
        assert (header_lines({"V": f"a{chr(code)}b"}) is None) == refused, hex(code)
        assert (header_lines({f"N{chr(code)}": "v"}) is None) == refused, hex(code)
    assert header_lines({"V": "1.0\t\u00e9"}) == "V: 1.0\t\u00e9\r\n".encode()
    assert header_lines({"V": 1}) is None  # type: ignore[dict-item]  # not text
