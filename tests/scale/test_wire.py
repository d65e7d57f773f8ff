"""bench/wire.py, the simulated agents' HTTP/1.1 client, against a real aiohttp server on 127.0.0.1.

The client keeps one connection for a run of requests, reads 204s without a body and bodies of
exactly their Content-Length, opens a new connection after an answer with `Connection: close`, and
raises (never waits on) a connection dropped in the middle of an answer, a chunked answer, or a port
nothing listens on.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.wire import Wire, WireError

TOKEN = "t0ken"
BIG = b"".join(b"%06d\r\n\r\n" % i for i in range(20_000))  # spans many reads, and holds the head's end mark


@dataclass
class Server:
    port: int
    transports: list[asyncio.BaseTransport] = field(default_factory=list)  # one entry per request served
    bodies: list[bytes] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)

    def connections(self) -> int:
        return len({id(t) for t in self.transports})  # the list holds them: no id is reused


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    served = Server(0)

    def note(request: web.Request) -> None:
        assert request.transport is not None
        served.transports.append(request.transport)
        served.authorizations.append(request.headers.get("Authorization", ""))

    async def echo(request: web.Request) -> web.Response:
        note(request)
        body = await request.read()
        served.bodies.append(body)
        return web.json_response({"method": request.method, "query": dict(request.query), "length": len(body)})

    async def empty(request: web.Request) -> web.Response:
        note(request)
        return web.Response(status=204)

    async def closing(request: web.Request) -> web.Response:
        note(request)
        response = web.Response(text="bye")
        response.force_close()  # answers `Connection: close` and ends the connection
        return response

    async def big(request: web.Request) -> web.Response:
        note(request)
        return web.Response(body=BIG, content_type="application/octet-stream")

    async def chunked(request: web.Request) -> web.StreamResponse:
        note(request)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"a piece")
        await response.write_eof()
        return response

    async def drops(request: web.Request) -> web.StreamResponse:
        note(request)
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b"the first bytes of a thousand")
        assert request.transport is not None
        request.transport.abort()
        raise asyncio.CancelledError  # the handler ends with its connection

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/empty", empty)
    app.router.add_get("/closing", closing)
    app.router.add_get("/big", big)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/drops", drops)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    served.port = runner.addresses[0][1]
    try:
        yield served
    finally:
        await runner.cleanup()


async def test_requests_in_a_row_share_one_kept_alive_connection(server: Server) -> None:
    wire = Wire(server.port, TOKEN, 30.0)
    try:
        for generation in range(3):
            answer = await wire.get(f"/echo?after={generation}&wait=25.0")
            assert answer.status == 200 and answer.keep_alive
            assert answer.json() == {"method": "GET", "query": {"after": str(generation), "wait": "25.0"}, "length": 0}
        body = {"generation": 3, "running": [{"module": "m", "version": "1.0.0"}]}
        answer = await wire.post_json("/echo", body)
        assert answer.json() == {"method": "POST", "query": {}, "length": len(orjson.dumps(body))}
        assert orjson.loads(server.bodies[-1]) == body
    finally:
        wire.close()
    assert server.connections() == 1 and wire.connections == 1
    assert server.authorizations == [f"Bearer {TOKEN}"] * 4


async def test_a_204_has_no_body_and_the_connection_carries_on(server: Server) -> None:
    wire = Wire(server.port, TOKEN, 30.0)
    try:
        answer = await wire.get("/empty")
        assert (answer.status, answer.body, answer.keep_alive) == (204, b"", True)
        assert (await wire.get("/echo")).status == 200
    finally:
        wire.close()
    assert server.connections() == 1 and wire.connections == 1


async def test_an_answer_with_connection_close_has_the_next_request_reconnect(server: Server) -> None:
    wire = Wire(server.port, TOKEN, 30.0)
    try:
        answer = await wire.get("/closing")
        assert (answer.status, answer.text(), answer.keep_alive) == (200, "bye", False)
        assert answer.headers["connection"].lower() == "close"
        assert wire.connection is None  # dropped at once
        assert (await wire.get("/echo")).status == 200
        assert (await wire.get("/echo")).status == 200
    finally:
        wire.close()
    assert server.connections() == 2 and wire.connections == 2


async def test_a_body_is_exactly_its_content_length(server: Server) -> None:
    wire = Wire(server.port, TOKEN, 30.0)
    try:
        answer = await wire.get("/big")
        assert answer.headers["content-length"] == str(len(BIG))
        assert answer.body == BIG
        answer = await wire.post_json("/echo", {"after": "the big one"})  # nothing of it was left over
        assert answer.json()["length"] == len(b'{"after":"the big one"}')
    finally:
        wire.close()
    assert server.connections() == 1


async def test_a_connection_dropped_mid_answer_raises_and_the_next_request_reconnects(server: Server) -> None:
    wire = Wire(server.port, TOKEN, 30.0)
    try:
        with pytest.raises(WireError, match="closed before the answer ended"):
            await wire.get("/drops")
        assert wire.connection is None
        assert (await wire.get("/echo")).status == 200
    finally:
        wire.close()
    assert wire.connections == 2


async def test_a_chunked_answer_is_refused(server: Server) -> None:
    wire = Wire(server.port, TOKEN, 30.0)
    try:
        with pytest.raises(WireError, match="chunked"):
            await wire.get("/chunked")
    finally:
        wire.close()


async def test_a_port_nothing_listens_on_raises() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: a connection is refused
        wire = Wire(port, TOKEN, 30.0)
        with pytest.raises(WireError, match="cannot connect"):
            await wire.get("/echo")
