"""Outside attacks on the node protocol's one-piece 200s (d3b659d: `reconciler.api.security.one_piece`,
`edge.onepiece.OnePieceAnswer`): a heartbeat's answer and a table on the long-poll are written as
bytes made beforehand, hardening lines included, instead of through `web.Response` and the
`security_headers` receiver. A real control plane on 127.0.0.1, spoken to byte for byte over raw
sockets, with a node's token, another node's, a viewer's, an admin's or none; a real `hotswap edge`
node managed by it. The oracle for "as before": the same bytes with `NODE_ANSWER_RECEIVERS` emptied,
so that every answer is a `web.Response` (as tests/api/test_one_piece_answers.py does); compared
but for Date.

What was tried, and held:
- pipelines on one connection (HTTP/1.1 kept alive then closing, HTTP/1.0 with and without
  keep-alive) mixing heartbeats and long-polls answered at once (200, 204), with 400 (a bad `after`,
  a bad heartbeat body), 401 (no token, a forged one), 403 (another node's token, a viewer's key),
  404 (a node never registered): the same bytes as before, in order, each framed by its
  Content-Length, and every hardening header on every answer, 2xx or not;
- a long-poll parked in the hub, answered by a publish: a 200 with the hardening headers whose
  table verifies (signature and binding, `edge.tablecache.verify_table`, as the agent checks it);
- clients that vanish while parked, and right after sending their poll or heartbeat (RST):
  nothing logged at ERROR, and the node's next poll and heartbeat are answered;
- a stopping plane: a parked poll gets 503, `Connection: close` and the hardening headers;
- rate limits on the node routes' class still answer 429 with Retry-After and the hardening
  headers; they are checked before the handler makes its answer;
- a real `hotswap edge` node registers, polls, verifies and applies the tables written in one piece
  (calc 1.0.0 served), and its heartbeats are answered in one piece;
- the console: /ui still carries its own Content-Security-Policy, not the API's.

What did not hold at first, mended since (`one_piece` leaves a HEAD to `web.Response`, and
`OnePieceAnswer` writes no body for one):
- HEAD on the long-poll route (aiohttp's `RouteTableDef.get` also routes HEAD): `OnePieceAnswer`
  wrote the table's body after a HEAD answer's head, where `web.Response` writes none (RFC 9110
  9.3.2). A client or proxy reading the HEAD answer took the body bytes as the start of the next
  answer on the connection: the answers behind it on a kept-alive connection were desynchronised.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from edge.nodeapi import NODES_PATH
from edge.protocol import TABLE_BINDING_HEADER, TABLE_SIGNATURE_HEADER, ModuleEntry, ModuleTable
from edge.tablecache import TrustedKey, verify_table
from reconciler.api import control, security
from reconciler.api.base import DEPS
from reconciler.api.security import SECURITY_HEADERS, RateLimiter
from tests.api.conftest import call
from tests.e2e.cluster import Cluster, poll, ready_cluster, start_cluster, stop_cluster
from tests.edge.test_execute_path import exchange

NODE = "edge-one-piece-attack"
OTHER = "edge-one-piece-other"
HARDENING = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
P = NODES_PATH.encode()


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = await start_cluster(tmp_path, [])
    try:
        admin = cluster.token("admin")
        for node in (NODE, OTHER):
            registration = {"id": node, "region": "nowhere", "hostname": "h", "url": "http://x:9", "generation": 5}
            assert (await call(cluster.url, "POST", NODES_PATH, admin, json=registration)).status == 201
        yield cluster
    finally:
        await stop_cluster(cluster)


def _port(cluster: Cluster) -> int:
    return int(cluster.url.rsplit(":", 1)[1])


async def _both(port: int, data: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, bytes]:
    """The bytes the plane answers `data` with now, and with every answer a `web.Response`."""
    mine = await exchange(port, data)
    with monkeypatch.context() as patched:
        patched.setattr(security, "NODE_ANSWER_RECEIVERS", set())
        theirs = await exchange(port, data)
    return mine, theirs


def _normal(raw: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", raw)


def _answers(raw: bytes, heads: list[bool] | None = None) -> list[tuple[int, dict[str, str], bytes]]:
    """Split `raw` into answers by their Content-Length (none for a 204 or a HEAD answer), as a
    client reads them; fails on anything that is not an answer's status line where one must start."""
    out: list[tuple[int, dict[str, str], bytes]] = []
    rest = raw
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        assert sep, ("a truncated head", head[:200])
        lines = head.decode("latin-1").split("\r\n")
        match = re.fullmatch(r"HTTP/1\.[01] (\d{3}) .*", lines[0])
        assert match is not None, ("not a status line where an answer starts", lines[0][:120])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(": ")
            assert name not in headers, ("a header twice", name)
            headers[name] = value
        status = int(match.group(1))
        is_head = heads is not None and heads[len(out)]
        length = 0 if status == 204 or is_head else int(headers.get("Content-Length", "0"))
        body, rest = rest[:length], rest[length:]
        assert len(body) == length, "a truncated body"
        out.append((status, headers, body))
    return out


def _hardened(headers: dict[str, str], what: object) -> None:
    for name, value in HARDENING.items():
        assert headers.get(name) == value, (what, name, headers)


def _req(
    method: bytes, path: bytes, token: str | None, version: bytes = b"1.1", extra: bytes = b"", body: bytes = b""
) -> bytes:
    auth = b"Authorization: Bearer %s\r\n" % token.encode() if token is not None else b""
    length = b"Content-Length: %d\r\n" % len(body) if method == b"POST" else b""
    return b"%s %s HTTP/%s\r\nHost: x\r\n%s%s%s\r\n%s" % (method, path, version, auth, extra, length, body)


def _beat(
    node: str, token: str | None, version: bytes = b"1.1", extra: bytes = b"", body: bytes = b'{"generation": 5}'
) -> bytes:
    return _req(b"POST", b"%s/%s/heartbeat" % (P, node.encode()), token, version, extra, body)


def _poll(
    node: str, token: str | None, query: bytes = b"after=0", version: bytes = b"1.1", extra: bytes = b""
) -> bytes:
    return _req(b"GET", b"%s/%s/assignment?%s" % (P, node.encode(), query), token, version, extra)


def _tokens(cluster: Cluster) -> dict[str, str]:
    return {
        "node": cluster.plane.mint(NODE, "node"),
        "other": cluster.plane.mint(OTHER, "node"),
        "viewer": cluster.token("viewer"),
        "admin": cluster.token("admin"),
    }


async def test_a_mixed_pipeline_is_answered_as_before_in_order_every_answer_hardened(
    plane: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = _tokens(plane)
    forged = t["node"][:-4] + ("AAAA" if not t["node"].endswith("AAAA") else "BBBB")
    for version, keep, last in [
        (b"1.1", b"", b"Connection: close\r\n"),
        (b"1.0", b"Connection: keep-alive\r\n", b""),
    ]:
        steps = [
            (_beat(NODE, t["node"], version, keep), 200),
            (_poll(NODE, t["node"], b"after=0", version, keep), 200),
            (_poll(NODE, t["node"], b"after=5&wait=0", version, keep), 204),
            (_poll(NODE, t["other"], b"after=0", version, keep), 403),
            (_beat(NODE, t["viewer"], version, keep), 403),
            (_beat(NODE, None, version, keep), 401),
            (_poll(NODE, forged, b"after=0", version, keep), 401),
            (_poll(NODE, t["node"], b"after=nope", version, keep), 400),
            (_beat(NODE, t["node"], version, keep, b'{"generation": "x"'), 400),
            (_poll("edge-never-registered", t["admin"], b"after=0", version, keep), 404),
            (_beat(NODE, t["admin"], version, keep), 200),
            (_poll(OTHER, t["other"], b"after=0", version, keep), 200),
            (_beat(NODE, t["node"], version, last), 200),
        ]
        data = b"".join(request for request, _ in steps)
        generations = (plane.plane.hub.table(NODE).generation, plane.plane.hub.table(OTHER).generation)  # type: ignore[union-attr]
        mine, theirs = await _both(_port(plane), data, monkeypatch)
        assert generations == (plane.plane.hub.table(NODE).generation, plane.plane.hub.table(OTHER).generation)  # type: ignore[union-attr]
        answers = _answers(mine)
        assert [status for status, _, _ in answers] == [status for _, status in steps], (version, mine[-600:])
        for i, (status, headers, body) in enumerate(answers):
            _hardened(headers, (version, i, status))
            if status == 200 and b"assignment" in steps[i][0][:80]:
                assert TABLE_SIGNATURE_HEADER in headers and TABLE_BINDING_HEADER in headers
                node = NODE if b"/" + NODE.encode() + b"/" in steps[i][0][:120] else OTHER
                table = ModuleTable.model_validate(json.loads(body))
                verify_table(
                    node,
                    table,
                    json.loads(body)["modules"],
                    headers[TABLE_SIGNATURE_HEADER],
                    headers[TABLE_BINDING_HEADER],
                    TrustedKey(plane.plane.authority.public_key_pem),
                )
        assert _normal(mine) == _normal(theirs), version


async def test_http10_without_keep_alive_and_11_closing_are_closed_as_before(
    plane: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = _tokens(plane)
    for data in [
        _beat(NODE, t["node"], b"1.0"),
        _poll(NODE, t["node"], b"after=0", b"1.0"),
        _poll(NODE, t["node"], b"after=0", b"1.1", b"Connection: close\r\n"),
        _beat(NODE, t["node"], b"1.1", b"Connection: CLOSE\r\n"),
    ]:
        mine, theirs = await _both(_port(plane), data, monkeypatch)
        answers = _answers(mine)
        assert len(answers) == 1 and answers[0][0] == 200, mine[:300]
        _hardened(answers[0][1], data[:60])
        assert _normal(mine) == _normal(theirs), data[:60]


async def test_a_parked_poll_answered_by_a_publish_is_a_verified_hardened_table(plane: Cluster) -> None:
    t = _tokens(plane)
    hub = plane.plane.hub
    generation = hub.table(NODE).generation  # type: ignore[union-attr]
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(plane))
    try:
        writer.write(_poll(NODE, t["node"], b"after=%d&wait=30" % generation, b"1.1", b"Connection: close\r\n"))
        await poll(lambda: NODE in hub._changed, "the long-poll parked in the hub")
        entry = ModuleEntry(module="calc", version="9.9.9", digest="sha256:" + "ab" * 32)
        published = await hub.publish(NODE, (entry,))
        assert published is not None and published > generation
        raw = await asyncio.wait_for(reader.read(-1), 30)
    finally:
        writer.close()
    ((status, headers, body),) = _answers(raw)
    assert status == 200 and headers.get("Connection") == "close", raw[:300]
    _hardened(headers, "parked")
    parsed = json.loads(body)
    table = ModuleTable.model_validate(parsed)
    assert table.generation >= published  # the controller may publish on top of the test's table
    key = TrustedKey(plane.plane.authority.public_key_pem)
    verify_table(NODE, table, parsed["modules"], headers[TABLE_SIGNATURE_HEADER], headers[TABLE_BINDING_HEADER], key)
    with pytest.raises(Exception, match=r"."):  # and bound to this node only
        verify_table(
            OTHER, table, parsed["modules"], headers[TABLE_SIGNATURE_HEADER], headers[TABLE_BINDING_HEADER], key
        )


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def test_clients_that_vanish_parked_or_before_their_answer_leave_the_plane_serving(
    plane: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    t = _tokens(plane)
    hub = plane.plane.hub
    port = _port(plane)
    caplog.set_level(logging.WARNING)
    generation = hub.table(NODE).generation  # type: ignore[union-attr]
    # parked, then gone (one closed, one reset): their answers are written when a publish wakes them
    gone = []
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(_poll(NODE, t["node"], b"after=%d&wait=30" % generation))
        gone.append(sock)
    await poll(lambda: NODE in hub._changed, "the long-polls parked in the hub")
    gone[0].close()
    _reset(gone[1])
    # gone right after a request answered at once: many times, a reset each
    for request in [_poll(NODE, t["node"]), _beat(NODE, t["node"])] * 20:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(request)
        _reset(sock)
    entry = ModuleEntry(module="calc", version="9.9.8", digest="sha256:" + "cd" * 32)
    published = await hub.publish(NODE, (entry,))
    assert published is not None and published > generation
    await poll(lambda: NODE not in hub._changed, "the parked polls woken")
    # the node's next poll and heartbeat are answered, in one piece, the new table given
    data = _beat(NODE, t["node"]) + _poll(NODE, t["node"], b"after=%d" % generation, extra=b"Connection: close\r\n")
    answers = _answers(await exchange(port, data))
    assert [a[0] for a in answers] == [200, 200]
    assert json.loads(answers[1][2])["generation"] >= published  # the controller may publish on top
    for _, headers, _ in answers:
        _hardened(headers, "after the vanished")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_a_heartbeat_whose_client_vanishes_before_its_body_is_read_logs_no_error(
    plane: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A heartbeat read after its client reset the connection (it waited its turn, `TurnShare`, or its
    body was not whole): the body's read raises ConnectionResetError. That is the client gone, not the
    plane's failure: nothing at ERROR, where any client could write a traceback a request, and the plane
    serves on. (Found on a busy machine, where heartbeats wait their turn more often.)"""
    t = _tokens(plane)
    port = _port(plane)
    caplog.set_level(logging.DEBUG, logger="reconciler.api.app")
    head = _req(b"POST", b"%s/%s/heartbeat" % (P, NODE.encode()), t["node"], extra=b"Expect: 100-continue\r\n")
    head = head.replace(b"Content-Length: 0", b"Content-Length: 100")  # announced, and never all sent
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(head + b'{"generat')
        # aiohttp says 100 Continue once it has routed the request, just before the handler: the
        # handler then waits for the rest of the body, which never comes
        assert (await asyncio.to_thread(sock.recv, 64)).startswith(b"HTTP/1.1 100 Continue")
        _reset(sock)

    def gone() -> int:
        return sum("connection ended before it was answered" in r.getMessage() for r in caplog.records)

    await poll(lambda: gone() == 5, "the five handlers to find their clients gone")
    answers = _answers(await exchange(port, _beat(NODE, t["node"], extra=b"Connection: close\r\n")))
    assert [a[0] for a in answers] == [200]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_a_stopping_plane_turns_a_parked_poll_away_with_503_close_and_hardening(tmp_path: Path) -> None:
    cluster = await start_cluster(tmp_path, [])
    stopped = False
    try:
        admin = cluster.token("admin")
        registration = {"id": NODE, "region": "nowhere", "hostname": "h", "url": "http://x:9", "generation": 5}
        assert (await call(cluster.url, "POST", NODES_PATH, admin, json=registration)).status == 201
        token = cluster.plane.mint(NODE, "node")
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(cluster))
        try:
            writer.write(_poll(NODE, token, b"after=5&wait=30") + _beat(NODE, token))
            await poll(lambda: NODE in cluster.plane.hub._changed, "the long-poll parked in the hub")
            stopping = asyncio.create_task(cluster.plane.stop())
            raw = await asyncio.wait_for(reader.read(-1), 30)
        finally:
            writer.close()
        stopped = True
        await stopping
        ((status, headers, body),) = _answers(raw)  # closed after it: the heartbeat is not answered
        assert status == 503 and headers.get("Connection") == "close" and headers.get("Retry-After") == "1"
        assert json.loads(body)["error"] == "stopping"
        _hardened(headers, "stopping")
    finally:
        if not stopped:
            await cluster.plane.stop()


async def test_the_node_routes_are_still_rate_limited_with_hardened_429s(plane: Cluster) -> None:
    limiter = plane.plane.app[DEPS].limiter
    assert isinstance(limiter, RateLimiter)
    limiter.limits = replace(limiter.limits, other=4, window_seconds=3600.0)
    t = _tokens(plane)
    made: list[str] = []
    real = security.one_piece

    def counted(request: web.Request, body: bytes, head: bytes | None) -> Any:
        made.append(request.path)
        return real(request, body, head)

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(control, "one_piece", counted)
        data = b"".join([_beat(NODE, t["node"]), _poll(NODE, t["node"])] * 3) + _poll(
            NODE, t["node"], extra=b"Connection: close\r\n"
        )
        answers = _answers(await exchange(_port(plane), data))
    assert [a[0] for a in answers] == [200, 200, 200, 200, 429, 429, 429]
    for status, headers, _ in answers:
        _hardened(headers, status)
        assert (status == 429) == ("Retry-After" in headers)
    assert len(made) == 4  # no answer made for a refused call
    other = _answers(await exchange(_port(plane), _beat(OTHER, t["other"], extra=b"Connection: close\r\n")))
    assert other[0][0] == 200  # per subject


async def test_the_console_keeps_its_own_csp(plane: Cluster) -> None:
    answer = await call(plane.url, "GET", "/ui")
    api = SECURITY_HEADERS["Content-Security-Policy"]
    assert answer.headers.get("Content-Security-Policy") not in (None, api), answer.headers
    beat = await call(
        plane.url, "POST", f"{NODES_PATH}/{NODE}/heartbeat", plane.plane.mint(NODE, "node"), json={"generation": 5}
    )
    assert beat.status == 200 and beat.headers.get("Content-Security-Policy") == api


async def test_a_real_edge_node_applies_tables_written_in_one_piece(tmp_path: Path) -> None:
    made: list[str] = []
    real = security.one_piece

    def counted(request: web.Request, body: bytes, head: bytes | None) -> Any:
        answer = real(request, body, head)
        made.append(f"{request.path.rsplit('/', 1)[1]}:{type(answer).__name__}")
        return answer

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(control, "one_piece", counted)
        async with ready_cluster(tmp_path, [("edge-us-east-1", "us-east")]) as cluster:
            await poll(lambda: "heartbeat:OnePieceAnswer" in made, "a heartbeat answered in one piece")
            assert cluster.plane.hub.view()[0].applied_generation > 0  # ready_cluster: calc 1.0.0 served
    assert "assignment:OnePieceAnswer" in made, made
    assert all(entry.endswith(":OnePieceAnswer") for entry in made), made


async def test_head_on_the_long_poll_writes_no_body(plane: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    t = _tokens(plane)
    head = _req(b"HEAD", b"%s/%s/assignment?after=0" % (P, NODE.encode()), t["node"])
    data = head + _beat(NODE, t["node"], extra=b"Connection: close\r\n")
    mine, theirs = await _both(_port(plane), data, monkeypatch)
    old = _answers(theirs, heads=[True, False])
    assert [a[0] for a in old] == [200, 200]  # the oracle: a HEAD answer, then the heartbeat's
    assert [a[0] for a in _answers(mine, heads=[True, False])] == [200, 200]  # as a client reads it
    assert _normal(mine) == _normal(theirs)
