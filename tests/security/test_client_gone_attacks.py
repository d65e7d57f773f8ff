"""Outside attacks on the `errors` middleware's client-gone path (09644e7, reconciler/api/app.py): a
ConnectionResetError raised while `request.transport is None` is logged at DEBUG and answered 400
`client_gone` instead of an ERROR traceback and a 500. A real control plane on 127.0.0.1, spoken to
over raw sockets with a node's token, a viewer's, a developer's or admin's, or none; the client
resets (RST) at the worst moments.

What was tried, and held:
- writes cut mid-body (`Expect: 100-continue` so the handler is known to be running, then part of
  the body, then RST): registration, heartbeat, module upload as JSON, as multipart and as chunked
  JSON, execute, a deployment, an interface, the console's sign-in. Each is logged once at DEBUG
  (`client_gone`), nothing at ERROR, and nothing was half-applied: no node registered or changed,
  no heartbeat recorded, no module stored, no audit entry, and the plane answers the node after;
- nothing inside the plane raises a bare ConnectionResetError that the new path could hide: the
  execute forwarding catches `aiohttp.ClientError`/`OSError` from the upstream node (502), the S3
  blob store wraps its driver's errors as `BackendError` (503), OCI wraps `requests`' errors;
- no token: the protected routes answer 401 before reading a body, so a client without one reaches
  the new path only through public routes that read one (`/ui/session`, the webhook), where DEBUG is
  what is wanted.

What did not hold at first, mended since (the `errors` middleware now takes any ConnectionError
while the request's connection is gone or closing as the client gone):
- a binary download (`GET /api/v1/wasm/modules/{id}/binary`, `GET /api/v1/wasm/blobs/{digest}`;
  any reader: a viewer, a node) whose client stopped reading and then reset was still logged at ERROR
  with a traceback, once per request. `_send` (reconciler/api/modules.py:256) awaits
  `response.write`, paused on the transport's drain; the reset wakes it with aiohttp's
  `ConnectionError("Connection lost")` (base_protocol.py, `connection_lost`), a ConnectionError that
  is not a ConnectionResetError, so app.py:78 sends it to `log.exception("unhandled error ...")`.
  Also seen (a race, not tested): a write between the reset and `connection_lost` raises
  `ClientConnectionResetError("Cannot write to closing transport")` while `request.transport` is not
  yet None, which went to ERROR as well: any reader could flood the log. (Where it was logged at
  DEBUG it said "before its request was read", untrue of a download; it now says "before it was answered".)
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket

import pytest
from aiohttp import web

from tests.e2e.cluster import Cluster, poll
from tests.edge.test_execute_path import exchange
from tests.security.test_one_piece_node_answer_attacks import NODE, P, _beat, _port, _req, _reset, _tokens, plane

__all__ = ["plane"]

APP_LOG = "reconciler.api.app"
GONE = "connection ended before it was answered"


def _wasm(pad: int) -> bytes:
    """A valid module: the header and one custom section of `pad` bytes."""
    payload = b"\x03pad" + b"x" * pad
    n, leb = len(payload), bytearray()
    while True:
        leb.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            break
    return b"\0asm\x01\0\0\0\0" + bytes(leb) + payload


def _app_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == APP_LOG]


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def _cut(port: int, head: bytes, part: bytes) -> None:
    """Send `head` (with `Expect: 100-continue`), wait for 100 Continue (the handler is running), send
    `part` of the body and reset the connection."""
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        sock.sendall(head)
        got = await asyncio.to_thread(sock.recv, 64)
        assert got.startswith(b"HTTP/1.1 100 Continue"), got
        sock.sendall(part)
    finally:
        _reset(sock)


def _head(method: bytes, path: bytes, token: str | None, length: int | None, extra: bytes = b"") -> bytes:
    auth = b"Authorization: Bearer %s\r\n" % token.encode() if token is not None else b""
    framing = b"Transfer-Encoding: chunked\r\n" if length is None else b"Content-Length: %d\r\n" % length
    return b"%s %s HTTP/1.1\r\nHost: x\r\n%sExpect: 100-continue\r\n%s%s\r\n" % (method, path, auth, extra, framing)


def _cases(t: dict[str, str]) -> list[tuple[str, bytes, bytes]]:
    """(what, head, the part of the body sent): every body-reading write route, cut."""
    jsn = b"Content-Type: application/json\r\n"
    register = json.dumps(
        {"id": NODE, "region": "elsewhere", "hostname": "cut", "url": "http://cut:9", "generation": 9}
    ).encode()
    new = json.dumps({"id": "edge-cut-new", "region": "r", "hostname": "h", "url": "http://x:9", "generation": 1})
    beat = json.dumps({"generation": 7, "cpu_percent": 1.0}).encode() + b" " * 200_000
    upload = json.dumps({"name": "cut", "version": "1.0.0", "wasm": base64.b64encode(_wasm(1 << 20)).decode()})
    boundary = b"cutcutcut"
    multipart = (
        b'--%s\r\nContent-Disposition: form-data; name="name"\r\n\r\ncut\r\n'
        b'--%s\r\nContent-Disposition: form-data; name="version"\r\n\r\n1.0.0\r\n'
        b'--%s\r\nContent-Disposition: form-data; name="wasm"; filename="m.wasm"\r\n'
        b"Content-Type: application/wasm\r\n\r\n%s\r\n--%s--\r\n"
    ) % (boundary, boundary, boundary, _wasm(1 << 20), boundary)
    form = b"Content-Type: multipart/form-data; boundary=%s\r\n" % boundary
    chunk = upload.encode()[:300_000]
    nodes = P
    return [
        ("register (node, itself)", _head(b"POST", nodes, t["node"], len(register), jsn), register[:-5]),
        ("register (admin, new)", _head(b"POST", nodes, t["admin"], len(new), jsn), new.encode()[:-5]),
        (
            "heartbeat",
            _head(b"POST", b"%s/%s/heartbeat" % (nodes, NODE.encode()), t["node"], len(beat), jsn),
            beat[:-9],
        ),
        ("upload json", _head(b"POST", b"/api/v1/wasm/modules", t["dev"], len(upload), jsn), upload.encode()[:-9]),
        ("upload multipart", _head(b"POST", b"/api/v1/wasm/modules", t["dev"], len(multipart), form), multipart[:-9]),
        (
            "upload chunked",
            _head(b"POST", b"/api/v1/wasm/modules", t["dev"], None, jsn),
            b"%x\r\n%s\r\n" % (len(chunk), chunk),
        ),
        (
            "execute",
            _head(b"POST", b"/api/v1/wasm/execute", t["dev"], 100, jsn),
            b'{"module": "calc", "function": "add"',
        ),
        ("deployment", _head(b"POST", b"/api/v1/wasm/deployments", t["admin"], 100, jsn), b'{"module": "calc"'),
        ("interface", _head(b"POST", b"/api/v1/wasm/interfaces", t["admin"], 100, jsn), b'{"name": "cut"'),
        ("console sign-in (no token)", _head(b"POST", b"/ui/session", None, 100, jsn), b'{"token": "abc'),
    ]


async def test_writes_cut_mid_body_are_not_applied_and_not_logged_at_error(
    plane: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=APP_LOG)
    t = {**_tokens(plane), "dev": plane.token("developer")}
    hub, port = plane.plane.hub, _port(plane)
    before = {v.id: v for v in hub.view()}
    audit = _audit_by(plane, {NODE, "test-developer", "test-admin"})
    for i, (what, head, part) in enumerate(_cases(t)):
        await _cut(port, head, part)
        await poll(lambda i=i: len(_app_records(caplog)) > i, f"{what}: the handler to find its client gone")  # type: ignore[misc]
        record = _app_records(caplog)[i]
        assert record.levelno == logging.DEBUG and GONE in record.getMessage(), (what, record.getMessage())
    assert not _errors(caplog), _errors(caplog)
    # nothing half-applied: no node registered or changed, no heartbeat recorded, no module, no audit
    assert not hub.known("edge-cut-new")
    after = {v.id: v for v in hub.view()}
    assert after.keys() == before.keys()
    assert (after[NODE].url, after[NODE].region) == (before[NODE].url, before[NODE].region)
    assert after[NODE].applied_generation == before[NODE].applied_generation != 7
    assert plane.plane.registry.modules("cut") == []
    assert _audit_by(plane, {NODE, "test-developer", "test-admin"}) == audit
    # and the node is answered after
    answer = await exchange(port, _beat(NODE, t["node"], extra=b"Connection: close\r\n"))
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


def _audit_by(plane: Cluster, actors: set[str]) -> list[object]:
    """The audit entries written by the test's callers (the plane's own work writes others meanwhile)."""
    return [e for e in plane.plane.store.audit_log(limit=1000) if e.actor in actors]


def _server(plane: Cluster) -> web.Server:
    runner = plane.plane._runner
    assert runner is not None and isinstance(runner.server, web.Server)
    return runner.server


async def test_no_token_never_reaches_a_protected_handler_body(
    plane: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=APP_LOG)
    port, server = _port(plane), _server(plane)
    for path in (P, b"%s/%s/heartbeat" % (P, NODE.encode()), b"/api/v1/wasm/modules", b"/api/v1/wasm/execute"):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(_head(b"POST", path, None, 100, b"Content-Type: application/json\r\n") + b'{"a"')
        answer = b""
        while b"HTTP/1.1 401 " not in answer and (more := await asyncio.to_thread(sock.recv, 4096)):
            answer += more  # aiohttp says 100 Continue before the middlewares: then 401, the body unread
        _reset(sock)
        assert b"HTTP/1.1 401 " in answer, answer[:200]
    await poll(lambda: not server.connections, "the reset connections dropped")
    assert not _app_records(caplog)
    assert not _errors(caplog), _errors(caplog)


async def test_a_reader_that_stalls_then_resets_a_download_logs_no_error(
    plane: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=APP_LOG)
    t = _tokens(plane)
    port, server = _port(plane), _server(plane)
    upload = json.dumps({"name": "padded", "version": "1.0.0", "wasm": base64.b64encode(_wasm(8 << 20)).decode()})
    extra = b"Content-Type: application/json\r\nConnection: close\r\n"
    created = await exchange(
        port, _req(b"POST", b"/api/v1/wasm/modules", t["admin"], extra=extra, body=upload.encode())
    )
    assert created.startswith(b"HTTP/1.1 201 "), created[:200]
    for path in (b"/api/v1/wasm/modules/padded-v1.0.0/binary",):
        for _ in range(2):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.sendall(_req(b"GET", path, t["viewer"]))
            # the plane has written all the socket takes and waits for this reader to read on
            await poll(lambda: any(c._paused for c in server.connections), "the download paused on the drain")
            seen = len(_app_records(caplog))
            _reset(sock)
            await poll(lambda seen=seen: len(_app_records(caplog)) > seen, "the download to find its reader gone")  # type: ignore[misc]
    assert not _errors(caplog), _errors(caplog)
