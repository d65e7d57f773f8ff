"""Outside attacks on the execute route's one-piece 200 answer (27a5fa6, `edge.execute.PlainAnswer`):
a successful call is written as the status line, the version's header lines (bytes made when the
table was applied, `VersionSlot.answer_head`), Content-Length, Date, Server and Connection, and the
body, in one `write_eof`, instead of through aiohttp's `web.Response`. Real `hotswap edge` processes
and real in-process aiohttp servers on 127.0.0.1, spoken to byte for byte over raw sockets.

The oracle for "as before": the same application with a receiver on `on_response_prepare` that
changes nothing, so that every answer is aiohttp's `web.Response` (`unshortcut` and `differences` of
tests/security/test_execute_shortcut_attacks.py for a node process, `served` of
tests/edge/test_execute_path.py for an in-process server); answers are compared byte for byte but
for Date, Content-Length and durationMs.

What was tried, and held:
- HTTP/1.0 with and without keep-alive (any case, `keep-alive, close`, two Connection headers,
  Proxy-Connection), HTTP/1.1 with `close` in any case, in a list, twice, against `keep-alive`,
  `closed`, an empty Connection, Proxy-Connection: the same bytes as before, a closing 1.1 answer
  says `Connection: close`, a kept 1.0 one `Connection: keep-alive`. (llhttp's own reading, as
  before: Proxy-Connection counts as Connection, 1.0 `keep-alive, close` is kept alive, and a
  request pipelined after a closing one makes the whole a 400);
- long pipelines on one connection mixing 200s (small, UTF-8 answers whose Content-Length counts
  bytes, answers of a few hundred KB), 400, 404, 405 (GET, HEAD, OPTIONS), HTTP/1.0 keep-alive and
  1.1: in order, each framed by its Content-Length, each the answer its request asked for, the same
  bytes as before; 150 concurrent connections likewise; 40 pipelining clients while tables move
  traffic between two versions: each answer's header and body name the same version;
- a client that stops reading a pipeline of large answers: the server holds at most the answer it
  is writing (it waits for the connection to drain before the next request), serves others
  meanwhile, and everything arrives in order once the client reads; as with `web.Response`;
- clients that reset the connection before the answer, after its head, mid-pipeline, or
  half-close: nothing logged by aiohttp, no connection left behind, the next call served, the
  half-closing client answered as before (not at all);
- answers just under the 20 MiB answer limit (Content-Length exact, pipelined with others, and to
  a closing HTTP/1.0 client reading through a 4 KB window: all of it before the close), and just
  over it (a JSON failure from `web.Response`, not a truncated 200);
- versions given by a table (admin PUT to a node process, the same table to the oracle) with a
  tab, spaces, non-ASCII, U+2028, U+0085, an emoji, `:`, 64 characters, and a folder's version in
  Arabic-Indic digits: the header is the version's UTF-8 bytes, as aiohttp writes it; a version
  with a control character (DEL, ESC, CR LF `X-Injected`) is refused with its table (a 400 naming
  `version`), and the table before it is served as it was;
- a node with `--workers 2`: its worker header on every answer, which is otherwise as before;
- a sampled `traceparent`: the answer is unchanged and the span reads the status and the
  (non-ASCII) version off the `PlainAnswer`;
- SIGTERM while large answers are in flight to clients that are not reading: each client gets
  whole answers only, the node exits 0.

No weakness was found in `PlainAnswer`. Noticed on the way, not new with it (the oracle did the
same), and mended since:
- `ModuleEntry.version` had no pattern, so a table could give a version aiohttp refuses as a header
  value (a control character): every call to it ran and was counted as served, then the connection
  was dropped without an answer and aiohttp logged "Unhandled exception" with a traceback. Such a
  table is now refused with a 400 naming `version`, and the table before it stays;
- a client that reset the connection while the node read an execute body made the handler log
  "unexpected error" at ERROR with a traceback (`failure_response` took the ConnectionResetError
  for a node failure): any client could fill the log with them. It is now a client's mistake.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import re
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from edge import wasm
from edge.ipc import WORKER_HEADER
from edge.protocol import MAX_ANSWER_BYTES, ModuleEntry
from edge.router import Router
from edge.runtime import Runtime
from edge.standalone import DirectorySource
from tests.edge.conftest import module_bytes
from tests.edge.standalone import StandaloneNode, start_standalone
from tests.edge.test_execute_path import served
from tests.observability.otlp import OtlpReceiver
from tests.security.test_execute_shortcut_attacks import (
    EXECUTE,
    MIB,
    MODULES,
    Answer,
    _abort,
    _keep,
    add,
    differences,
    exchange,
    normal,
    port_of,
    read_answer,
    request,
    split_answers,
    unshortcut,
)

ODD = "\u0661.\u0662.\u0663"  # a folder's version in Arabic-Indic digits (`\d` takes them): arith's newest
KA = b"Connection: keep-alive\r\n"
UNKNOWN = b'{"module": "nope", "function": "f"}'


def v10(body: bytes = add(1, 2), headers: bytes = b"", method: bytes = b"POST", target: bytes = EXECUTE) -> bytes:
    """One HTTP/1.0 request."""
    return method + b" " + target + b" HTTP/1.0\r\n" + headers + b"Content-Length: %d\r\n\r\n" % len(body) + body


def cat(raw: bytes) -> bytes:
    """A call whose answer is `raw` as a JSON string: 0x01 bytes come back six times as long (\\u0001)."""
    return json.dumps({"module": "cat", "function": "_start", "stdinBase64": base64.b64encode(raw).decode()}).encode()


def versioned(version: str) -> bytes:
    return json.dumps({"module": "arith", "function": "add", "args": [1, 2], "version": version}).encode()


def strict_answers(raw: bytes) -> list[Answer]:
    """The answers on a closed connection, each framed by its Content-Length; an answer cut short fails."""
    got = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep and head.startswith(b"HTTP/1."), raw[:200]
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        size = int(headers["content-length"])
        assert len(rest) >= size, f"an answer cut short: {len(rest)} of {size} bytes"
        got.append(Answer(int(lines[0].split(" ", 2)[1]), headers, rest[:size]))
        raw = rest[size:]
    return got


def _no_connections(server: web.Server) -> bool:
    return not server.connections


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for a state of the server (polled), failing after 20 s."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


# -- the nodes ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """arith (0.0.0, and ODD: its newest), echo, cat and limits."""
    base = tmp_path_factory.mktemp("modules")
    for name in ("arith", "echo", "cat", "limits"):
        (base / f"{name}.wat").write_text((MODULES / f"{name}.wat").read_text())
    (base / f"arith-{ODD}.wat").write_text((MODULES / "arith.wat").read_text())
    return base


@pytest.fixture(scope="module")
def node(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneNode]:
    started = start_standalone(folder, tmp_path_factory.mktemp("cache"))
    yield started
    started.stop()


@contextlib.asynccontextmanager
async def serving_table(
    runtime: Runtime, router: Router, entries: list[ModuleEntry]
) -> AsyncIterator[tuple[Router, Runtime]]:
    """`router` with the table of `entries` applied; closed, with its runtime, at the end."""
    assert (await router.apply_table(entries, 1)).failed == {}
    try:
        yield router, runtime
    finally:
        await router.close()
        runtime.close()


@pytest.fixture
async def inprocess(tmp_path: Path) -> AsyncIterator[tuple[Router, Runtime]]:
    """A router serving arith and cat (version 1), for in-process servers."""
    runtime = Runtime()
    source = DirectorySource(tmp_path)
    router = Router(runtime, source)
    entries = [
        ModuleEntry.model_validate({"module": name, "version": "1", "digest": source.add(module_bytes(name))})
        for name in ("arith", "cat")
    ]
    async with serving_table(runtime, router, entries) as served_router:
        yield served_router


# -- Connection handling, HTTP/1.0 and 1.1 ----------------------------------------------------------

CONNECTION: dict[str, bytes] = {  # each case's last request closes (a 1.0 one, or `Connection: close`)
    "1.1 close, capitals": request(headers=b"Connection: CLOSE\r\n", close=False),
    "1.1 close, mixed case name": request(headers=b"cOnNeCtIoN: cLoSe\r\n", close=False),
    "1.1 Keep-Alive then close": _keep(request(headers=b"Connection: Keep-Alive\r\n")) + request(),
    "1.1 keep-alive, close": request(headers=b"Connection: keep-alive, close\r\n", close=False),
    "1.1 close, keep-alive": request(headers=b"Connection: close, keep-alive\r\n", close=False),
    "1.1 two headers, keep-alive first": request(headers=KA + b"Connection: close\r\n", close=False),
    "1.1 two headers, close first": request(headers=b"Connection: close\r\n" + KA, close=False),
    "1.1 close in a list": request(headers=b"Connection: TE, close\r\n", close=False),
    "1.1 closed is not close": request(headers=b"Connection: closed\r\n", close=False) + request(),
    "1.1 empty Connection": request(headers=b"Connection:\r\n", close=False) + request(),
    "1.1 Proxy-Connection: close": request(headers=b"Proxy-Connection: close\r\n", close=False),  # llhttp reads it
    "1.1 close, then more": request() + request(),  # the parser refuses data after a closing request
    "1.0": v10(),
    "1.0, then more": v10() + v10(),
    "1.0 keep-alive": v10(headers=KA) * 3 + v10(),
    "1.0 KEEP-ALIVE": v10(headers=b"Connection: KEEP-ALIVE\r\n") + v10(),
    "1.0 keep-alive, close": v10(headers=b"Connection: keep-alive, close\r\n") + v10(),  # 1.0: kept alive
    "1.0 two headers": v10(headers=KA + b"Connection: close\r\n") + v10(),
    "1.0 Proxy-Connection": v10(headers=b"Proxy-Connection: keep-alive\r\n") + v10(),
    "1.0 keep-alive, failures between": v10(body=b"{", headers=KA)
    + v10(body=UNKNOWN, headers=KA)
    + v10(body=b"", headers=KA, method=b"GET")
    + v10(headers=KA)
    + v10(),
    "1.0 keep-alive, then 1.1": v10(headers=KA) + _keep(request()) + request(),
    "1.1, then 1.0 keep-alive": _keep(request()) + v10(headers=KA) + v10(),
    "HEAD and OPTIONS between": _keep(request())
    + _keep(request(method=b"HEAD", body=b""))
    + _keep(request(method=b"OPTIONS", body=b""))
    + request(),
    "versions asked for": _keep(request(body=versioned("0.0.0")))
    + _keep(request(headers=b"X-Hotswap-Version: 0.0.0\r\n"))
    + request(body=versioned(ODD)),
}

EXPECTED = {  # the statuses each case must get, in order
    "1.1 close, capitals": [200],
    "1.1 close, mixed case name": [200],
    "1.1 Keep-Alive then close": [200, 200],
    "1.1 keep-alive, close": [200],
    "1.1 close, keep-alive": [200],
    "1.1 two headers, keep-alive first": [200],
    "1.1 two headers, close first": [200],
    "1.1 close in a list": [200],
    "1.1 closed is not close": [200, 200],
    "1.1 empty Connection": [200, 200],
    "1.1 Proxy-Connection: close": [200],
    "1.1 close, then more": [400],
    "1.0": [200],
    "1.0, then more": [400],
    "1.0 keep-alive": [200, 200, 200, 200],
    "1.0 KEEP-ALIVE": [200, 200],
    "1.0 keep-alive, close": [200, 200],
    "1.0 two headers": [200, 200],
    "1.0 Proxy-Connection": [200, 200],
    "1.0 keep-alive, failures between": [400, 404, 405, 200, 200],
    "1.0 keep-alive, then 1.1": [200, 200, 200],
    "1.1, then 1.0 keep-alive": [200, 200, 200],
    "HEAD and OPTIONS between": [200, 405, 405, 200],
    "versions asked for": [200, 200, 200],
}


async def test_connection_handling_is_aiohttps_own(node: StandaloneNode, folder: Path) -> None:
    async with unshortcut(folder) as before:
        assert await differences(port_of(node.url), before, CONNECTION) == {}
    for name, data in CONNECTION.items():
        raw = await exchange(port_of(node.url), data)
        got = split_answers(raw)
        assert [a.status for a in got] == EXPECTED[name], (name, raw[:600])
        last = data[data.rfind(b"POST ") :]
        if len(got) == data.count(b" HTTP/1.") and last.startswith(b"POST " + EXECUTE + b" HTTP/1.1"):
            assert got[-1].headers["connection"] == "close", name  # a 1.1 answer that closes says so
        elif len(got) == data.count(b" HTTP/1."):
            assert "connection" not in got[-1].headers, name  # 1.0: closing is the default
        for answer in got:
            if answer.status == 200:
                assert answer.json()["result"] == 3, (name, answer)
                assert answer.headers["x-hotswap-version"].encode("latin-1").decode() in (ODD, "0.0.0")
    one = split_answers(await exchange(port_of(node.url), CONNECTION["1.0 keep-alive"]))
    assert [a.headers.get("connection") for a in one] == ["keep-alive"] * 3 + [None]  # 1.0: said when kept
    versions = split_answers(await exchange(port_of(node.url), CONNECTION["versions asked for"]))
    assert [a.headers["x-hotswap-version"].encode("latin-1").decode() for a in versions] == ["0.0.0", "0.0.0", ODD]


# -- pipelines and many connections -----------------------------------------------------------------


def _pipeline() -> tuple[bytes, list[tuple[int, int | None]]]:
    """70 requests on one connection, and what each must be answered: (status, result or its length)."""
    parts: list[bytes] = []
    expected: list[tuple[int, int | None]] = []
    for i in range(70):
        kind = i % 7
        if kind == 0:
            parts.append(_keep(request(body=add(i, 1000))))
            expected.append((200, i + 1000))
        elif kind == 1:
            parts.append(v10(body=add(i, 2000), headers=KA))
            expected.append((200, i + 2000))
        elif kind == 2:
            parts.append(_keep(request(body=b"{")))
            expected.append((400, None))
        elif kind == 3:
            parts.append(_keep(request(body=cat(b"\x01" * (40_000 + i)))))  # a ~240 KB answer
            expected.append((200, 40_000 + i))
        elif kind == 4:
            parts.append(_keep(request(body=UNKNOWN)))
            expected.append((404, None))
        elif kind == 5:  # an answer in UTF-8: its Content-Length counts bytes, not characters
            wide = json.dumps({"module": "echo", "function": "echo", "args": "\u00e9\U0001f600" * (500 + i)})
            parts.append(_keep(request(body=wide.encode())))
            expected.append((200, 2 * (500 + i)))
        else:
            parts.append(_keep(request(method=b"GET", body=b"")))
            expected.append((405, None))
    parts.append(request(body=add(7, 7)))
    expected.append((200, 14))
    return b"".join(parts), expected


def _outcome(answer: Answer) -> tuple[int, int | None]:
    if answer.status != 200:
        return answer.status, None
    result = answer.json()["result"]
    return 200, len(result) if isinstance(result, str) else int(str(result))


async def test_a_long_pipeline_of_200s_and_failures_answers_in_order(node: StandaloneNode, folder: Path) -> None:
    data, expected = _pipeline()
    async with unshortcut(folder) as before:
        assert await differences(port_of(node.url), before, {"pipeline": data}) == {}
    got = strict_answers(await exchange(port_of(node.url), data))
    assert [_outcome(a) for a in got] == expected


async def test_many_concurrent_connections_each_get_their_own_answers(node: StandaloneNode) -> None:
    port = port_of(node.url)

    async def client(i: int) -> list[tuple[int, int | None]]:
        data = (
            v10(body=add(i, 1), headers=KA)
            + _keep(request(body=add(i, 2)))
            + _keep(request(body=json.dumps({"module": "echo", "function": "echo", "args": "x" * (9000 + i)}).encode()))
            + request(body=add(i, 3))
        )
        return [_outcome(a) for a in strict_answers(await exchange(port, data))]

    results = await asyncio.gather(*(client(i) for i in range(150)))
    expected = [[(200, i + 1), (200, i + 2), (200, 9000 + i), (200, i + 3)] for i in range(150)]
    # Each answer is its own request's, in order, or a 429 busy: on a busy machine a call can run past
    # its inline budget and move to the worker threads, whose queue sheds a burst of 150 (edge.lanes).
    busy = (429, None)
    assert [
        [a if a == busy else w for a, w in zip(got, want, strict=True)]
        for got, want in zip(results, expected, strict=True)
    ] == [list(got) for got in results], results
    assert any(a != busy for got in results for a in got)


# -- a client that stops reading -----------------------------------------------------------------


async def _small_window(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to `port` whose receive buffer holds 4 KB: a client that reads slowly."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)


async def _stalled(port: int, runner: web.AppRunner, kinds: list[str]) -> tuple[int, int]:
    """A client pipelining 30 requests of ~600 KB answers that reads nothing until others were served:
    (the most the server held for it, requests handled by then); then it reads everything."""
    server = runner.server
    assert server is not None
    reader, writer = await _small_window(port)
    try:
        sizes = [100_000 + i for i in range(30)]
        writer.write(b"".join(_keep(request(body=cat(b"\x01" * size))) for size in sizes) + request(body=add(2, 3)))
        await until(lambda: len(server.connections) == 1, "the connection is the server's")
        (handler,) = server.connections
        assert handler.transport is not None
        transport = handler.transport
        await until(lambda: handler.writing_paused, "the server waits for the client to read")
        held = transport.get_write_buffer_size()
        for i in range(3):  # meanwhile others are served
            (other,) = split_answers(await exchange(port, request(body=add(i, 40))))
            assert other.status == 200 and other.json()["result"] == i + 40, other
        held = max(held, transport.get_write_buffer_size())
        handled = len(kinds) - 3
        got = []
        for _ in range(len(sizes) + 1):
            got.append(_outcome(await read_answer(reader)))
        assert got == [(200, size) for size in sizes] + [(200, 5)]
        assert await reader.read() == b""
        return held, handled
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_a_client_that_stops_reading_holds_one_answer_and_no_one_else(
    inprocess: tuple[Router, Runtime],
) -> None:
    router, runtime = inprocess
    answer = 6 * 100_030 + 100  # the largest answer of the pipeline
    for signal_ in (False, True):
        async with served(router, runtime, signal=signal_) as (port, runner, kinds):
            held, handled = await _stalled(port, runner, kinds)
            # the server goes on to the next request only once the answer it wrote has drained:
            # it holds at most one answer (and the 64 KiB it may pass its high-water mark by)
            assert held <= answer + 64 * 1024, (signal_, held)
            assert handled < 30, (signal_, handled)  # the kernel cannot hold 30 answers (18 MB)
            assert set(kinds) == {"Response" if signal_ else "PlainAnswer"}, kinds


# -- clients that vanish ---------------------------------------------------------------------------


async def _vanishing(port: int) -> bytes:
    """Clients that go away before, during and between answers; what a half-closing one got."""
    big = cat(b"\x01" * 1_000_000)  # a 6 MB answer
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request(body=big))
    await writer.drain()
    _abort(writer)  # before the answer (the call is still running)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request(body=big))
    await reader.readuntil(b"\r\n\r\n")
    _abort(writer)  # after the answer's head, mid-body
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_keep(request(body=add(1, 1))) + _keep(request(body=big)) + request(body=add(2, 2)))
    first = await read_answer(reader)
    assert first.status == 200 and first.json()["result"] == 2
    await reader.readuntil(b"\r\n\r\n")
    _abort(writer)  # mid-pipeline
    return await exchange(port, _keep(request(body=add(3, 3))), half_close=True)


async def test_clients_that_vanish_leave_nothing_behind(
    inprocess: tuple[Router, Runtime], caplog: pytest.LogCaptureFixture
) -> None:
    router, runtime = inprocess
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    half_closed = []
    for signal_ in (False, True):
        async with served(router, runtime, signal=signal_) as (port, runner, kinds):
            half_closed.append(normal(await _vanishing(port)))
            server = runner.server
            assert server is not None
            await until(functools.partial(_no_connections, server), "every connection is gone")
            (answer,) = split_answers(await exchange(port, request(body=add(20, 22))))
            assert answer.status == 200 and answer.json()["result"] == 42
            assert ("PlainAnswer" in kinds) is not signal_, kinds  # (a body cut short is a failure: a Response)
    assert half_closed[0] == half_closed[1], half_closed  # (aiohttp answers no client that half-closed)
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    # nothing: no "Unhandled exception" from aiohttp, and a body cut short by a reset is the client's
    # doing, not logged as the node's failure (it was, with a traceback, at ERROR)
    assert [(r.name, r.getMessage()) for r in logged] == []


# -- answers near the limit --------------------------------------------------------------------------


async def test_answers_at_the_limit_are_whole_and_over_it_a_failure(inprocess: tuple[Router, Runtime]) -> None:
    router, runtime = inprocess
    async with (
        served(router, runtime, signal=False, max_body=16 * MIB) as (port, _, kinds),
        served(router, runtime, signal=True, max_body=16 * MIB) as (before, _, _),
    ):
        (small,) = strict_answers(await exchange(port, request(body=cat(b"\x01" * 1000))))
        overhead = len(small.body) - 6000  # `{"result":"`, module, version, durationMs

        def sized(target: int) -> bytes:
            ones, rest = divmod(target - overhead, 6)
            return cat(b"\x01" * ones + b"a" * rest)

        under, over = sized(MAX_ANSWER_BYTES - 200), sized(MAX_ANSWER_BYTES + 200)
        data = _keep(request(body=under)) + _keep(request(body=over)) + request(body=add(4, 5))
        raw = await exchange(port, data)
        got = strict_answers(raw)
        assert (len(got), got[0].status, got[2].status, got[2].json()["result"]) == (3, 200, 200, 9)
        assert MAX_ANSWER_BYTES - 250 < len(got[0].body) <= MAX_ANSWER_BYTES, len(got[0].body)
        assert (
            len(str(got[0].json()["result"]))
            == (MAX_ANSWER_BYTES - 200 - overhead) // 6 + (MAX_ANSWER_BYTES - 200 - overhead) % 6
        )
        assert got[1].status >= 500 and "over the limit" in str(got[1].json()["message"]), got[1].body[:300]
        then = await exchange(before, data)
        sized_ = re.compile(rb"would be \d+ bytes")  # durationMs's digits count in the over-limit message
        assert sized_.sub(b"-", normal(raw)) == sized_.sub(b"-", normal(then))
        assert kinds == ["PlainAnswer", "PlainAnswer", "Response", "PlainAnswer"]
        # the largest answer to a closing HTTP/1.0 client that reads through a small window: all of it
        reader, writer = await _small_window(port)
        try:
            writer.write(v10(body=under))
            raw = await asyncio.wait_for(reader.read(-1), 30)
        finally:
            writer.close()
        (whole,) = strict_answers(raw)
        assert whole.status == 200 and "connection" not in whole.headers
        assert len(whole.body) == int(whole.headers["content-length"]) > MAX_ANSWER_BYTES - 250
        assert kinds[-1] == "PlainAnswer"


# -- versions given by a table -----------------------------------------------------------------------

FINE = ["1.0.0\t", " 1 ", "\u00e9-\u00fc", "\u2028", "\u0085", "\U0001f600", ":", "v" * 64, "%0d%0a"]
REFUSED = ["\x7f", "\x1b[31m", "a\r\nX-Injected: 1"]


@pytest.fixture
def table_node(folder: Path, tmp_path: Path) -> Iterator[StandaloneNode]:
    started = start_standalone(folder, tmp_path / "cache")
    yield started
    started.stop()


def _table(folder: Path, versions: list[str], generation: int = 50) -> dict[str, Any]:
    entries = [e.model_dump(mode="json", by_alias=True) for e in DirectorySource(folder).scan().entries]
    digest = wasm.sha256_digest(module_bytes("arith"))
    entries += [{"module": "arith", "version": v, "digest": digest, "weight": 0} for v in versions]
    return {"generation": generation, "modules": entries}


async def test_versions_a_table_gives_are_written_as_aiohttp_writes_them(
    table_node: StandaloneNode, folder: Path
) -> None:
    table = json.dumps(_table(folder, FINE)).encode()
    put = b"PUT /api/v1/wasm/admin/table HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
    cases = {repr(v): request(body=versioned(v)) for v in FINE}
    async with unshortcut(folder) as before:
        for port in (port_of(table_node.url), before):
            (applied,) = split_answers(await exchange(port, put % (len(table), table)))
            assert applied.status == 200 and applied.json()["failed"] == {}, applied.body
        assert await differences(port_of(table_node.url), before, cases) == {}
    for version in FINE:
        raw = await exchange(port_of(table_node.url), cases[repr(version)])
        assert b"\r\nX-Hotswap-Version: " + version.encode() + b"\r\n" in raw, raw[:300]
        (answer,) = split_answers(raw)
        assert answer.status == 200 and answer.json()["version"] == version
    for version in REFUSED:  # a version no header can carry: the table is refused, naming the field
        bad = json.dumps(_table(folder, [*FINE, version], generation=51)).encode()
        (refused,) = split_answers(await exchange(port_of(table_node.url), put % (len(bad), bad)))
        assert refused.status == 400 and "version" in str(refused.json()["message"]), refused.body
        assert "x-injected" not in refused.headers
    for version in FINE[:2]:  # and the table before it is served as it was
        (answer,) = split_answers(await exchange(port_of(table_node.url), cases[repr(version)]))
        assert answer.status == 200 and answer.json()["version"] == version
    (answer,) = split_answers(await exchange(port_of(table_node.url), request()))
    assert answer.status == 200 and answer.json()["version"] == ODD


async def test_each_answer_names_the_version_that_served_it_across_swaps(
    table_node: StandaloneNode, folder: Path
) -> None:
    """Tables that move arith's traffic between two versions while 40 clients pipeline calls: the
    header of each answer (the slot's bytes) and its body name the same version."""
    port = port_of(table_node.url)
    scanned = [e.model_dump(mode="json", by_alias=True) for e in DirectorySource(folder).scan().entries]
    put = b"PUT /api/v1/wasm/admin/table HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"

    async def swaps() -> None:
        for generation in range(2, 22):
            for entry in scanned:
                if entry["module"] == "arith":
                    entry["weight"] = 100 if (entry["version"] == ODD) == (generation % 2 == 0) else 0
            table = json.dumps({"generation": generation, "modules": scanned}).encode()
            (applied,) = split_answers(await exchange(port, put % (len(table), table)))
            assert applied.status == 200, applied.body

    async def client(i: int) -> set[str]:
        data = b"".join(_keep(request(body=add(i, k))) for k in range(9)) + v10(body=add(i, 9))
        got = strict_answers(await exchange(port, data))
        assert [a.json()["result"] for a in got] == [i + k for k in range(10)]
        for answer in got:
            assert answer.headers["x-hotswap-version"].encode("latin-1").decode() == answer.json()["version"]
        return {str(a.json()["version"]) for a in got}

    swapping = asyncio.ensure_future(swaps())
    seen = await asyncio.gather(*(client(i) for i in range(40)))
    await swapping
    assert set().union(*seen) <= {ODD, "0.0.0"}


# -- a node with worker processes ------------------------------------------------------------------


async def test_every_answer_of_a_worker_names_it(folder: Path, tmp_path: Path) -> None:
    workers = await asyncio.to_thread(start_standalone, folder, tmp_path / "cache", "--workers", "2")
    try:
        port = port_of(workers.url)
        cases = {
            "1.0": v10(),
            "1.0 keep-alive": v10(headers=KA) + v10(body=b"{", headers=KA) + v10(),
            "pipeline": _keep(request(body=cat(b"\x01" * 50_000)))
            + _keep(request(body=UNKNOWN))
            + _keep(request(body=versioned("0.0.0")))
            + request(method=b"HEAD", body=b""),
            "1.1 close": request(),
        }
        named = re.compile(rb"\r\n" + WORKER_HEADER.encode() + rb": [01]")
        async with unshortcut(folder) as before:
            for name, data in cases.items():
                raw = await exchange(port, data)
                assert raw.count(b"\r\n" + WORKER_HEADER.encode() + b": ") == data.count(b" HTTP/1."), (name, raw[:400])
                assert normal(named.sub(b"", raw)) == normal(await exchange(before, data)), name
                assert all(a.headers[WORKER_HEADER.lower()] in ("0", "1") for a in split_answers(raw))
    finally:
        await asyncio.to_thread(workers.stop)


# -- a traced call ---------------------------------------------------------------------------------


async def test_a_traced_call_is_answered_as_before_and_its_span_reads_the_answer(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = OtlpReceiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", await receiver.start())
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"

    def traced(parent: str) -> bytes:
        return f"traceparent: 00-{trace}-{parent}-01\r\n".encode()

    data = (
        _keep(request(body=add(1, 2), headers=traced("1" * 16)))
        + v10(body=add(3, 4), headers=KA + traced("2" * 16))
        + _keep(request(body=cat(b"\x01" * 30_000), headers=traced("3" * 16)))
        + _keep(request(body=UNKNOWN, headers=traced("4" * 16)))
        + request(body=versioned("0.0.0"), headers=traced("5" * 16))
    )
    try:
        traced_node = await asyncio.to_thread(start_standalone, folder, tmp_path / "cache", "--trace-ratio", "0")
        try:
            raw = await exchange(port_of(traced_node.url), data)  # once: one span per call
            async with unshortcut(folder) as before:
                assert normal(raw) == normal(await exchange(before, data))
            got = strict_answers(raw)
            assert [_outcome(a) for a in got] == [(200, 3), (200, 7), (200, 30_000), (404, None), (200, 3)]
        finally:
            await asyncio.to_thread(traced_node.stop)  # the node's last spans go out as it stops
    finally:
        await receiver.stop()
    spans = {s.parent_span_id: s for s in receiver.named("wasm.function.invoke") if s.trace_id == trace}
    assert {p: s.attributes.get("http.response.status_code") for p, s in spans.items()} == {
        "1" * 16: 200,
        "2" * 16: 200,
        "3" * 16: 200,
        "4" * 16: None,  # the failure left the handler inside the span
        "5" * 16: 200,
    }
    assert [p for p, s in spans.items() if s.error] == ["4" * 16]
    assert spans["1" * 16].attributes["wasm.module.version"] == ODD  # read off the PlainAnswer's headers
    assert spans["2" * 16].attributes["wasm.module.version"] == ODD
    assert spans["5" * 16].attributes["wasm.module.version"] == "0.0.0"
    assert spans["3" * 16].attributes["wasm.function.name"] == "_start"


# -- shutdown with answers in flight ----------------------------------------------------------------


async def test_shutdown_with_answers_in_flight_sends_whole_answers_only(folder: Path, tmp_path: Path) -> None:
    stopping = await asyncio.to_thread(start_standalone, folder, tmp_path / "cache")
    try:
        port = port_of(stopping.url)
        size = 300_000  # ~1.8 MB answers: they stall in flight while the client reads nothing
        clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(6)]
        for i, (_, writer) in enumerate(clients):
            writer.write(b"".join(_keep(request(body=cat(b"\x01" * (size + 10 * i + k)))) for k in range(3)))
        heads = [await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30) for reader, _ in clients]
        assert all(h.startswith(b"HTTP/1.1 200 OK\r\n") for h in heads)  # every first answer is in flight
        stopping.proc.send_signal(signal.SIGTERM)
        for i, ((reader, writer), head) in enumerate(zip(clients, heads, strict=True)):
            raw = head + await asyncio.wait_for(reader.read(-1), 30)
            writer.close()
            got = [_outcome(a) for a in strict_answers(raw)]  # an answer cut short fails here
            assert 1 <= len(got) <= 3 and got[0] == (200, size + 10 * i), got
            for k, outcome in enumerate(got[1:], 1):  # a later call the stop (or a busy machine) cut short
                assert outcome in ((200, size + 10 * i + k), (503, None), (504, None)), got  # is answered whole
        assert await asyncio.to_thread(stopping.proc.wait, 30) == 0
    finally:
        await asyncio.to_thread(stopping.kill)
