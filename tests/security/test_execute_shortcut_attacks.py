"""Outside attacks on the edge node's execute shortcut (925a099, `edge.server.take_execute_shortcut`):
the server hands a request whose raw target is exactly `/api/v1/wasm/execute`, with method POST and
no `Expect` header, to the execute handler past the application's router, with one shared, frozen
match info; a 200 is written as one `edge.execute.PlainAnswer`. Real `hotswap edge` processes on
127.0.0.1, spoken to byte for byte over raw sockets.

The oracle for "answered exactly as before": the same application (`edge.server.build_app` over
the same folder, the same key) served in the test's process WITHOUT the shortcut, which is the
parent commit's dispatch (the application's `_handle`: the router, the expect handler), with
every answer an aiohttp `web.Response` (an `on_response_prepare` receiver that changes nothing). Each raw
request goes to both and the answers must agree byte for byte, but for the Date, Content-Length,
durationMs and uptimeSeconds values.

What was tried, and held:
- targets the router sends to execute that the shortcut does not take, and the other way round:
  absolute-form (any host), `//`, `#fragment`, an empty `?`, `%65`, `%2F`, trailing dot and slash,
  dot segments, case, lowercase `post` (a 400 from the parser), HEAD, OPTIONS, GET, PUT, method
  override headers, HTTP/1.0 and the bogus HTTP/2.0 request line, Upgrade headers;
- `Expect` (100-continue in any case, empty, unknown: 417), chunked bodies (with a trailer),
  Content-Length with Transfer-Encoding, a deflate bomb and plain bodies over the 4 MiB limit (413
  as JSON), empty and malformed bodies, a body cut short by a half-close;
- a keyed node: no token, a token in the query, a cookie, Proxy-Authorization, a chunked trailer,
  the URL's userinfo, after a folded line, duplicated Authorization headers, wrong scheme case,
  wrong audience, expired, alg none, a viewer (403); a valid token earlier on the same keep-alive
  connection authorises nothing later on it; a body carrying a second request is not smuggled;
- pipelined requests mixing the shortcut and the router on one connection answer in order, and
  are the same bytes as before; a slow (partial) body and clients that disconnect mid-request, or
  during a call that runs into its timeout, hold up no one; concurrent clients get their own
  answers; a node with `--workers 2` names its worker on every answer, shortcut or not; a sampled
  `traceparent` through the shortcut still makes the call's span, under the caller's trace.

No weakness was found in the shortcut.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from edge.auth import Authenticator
from edge.ipc import WORKER_HEADER
from edge.router import Router
from edge.runtime import Runtime
from edge.server import Node, NodeConfig, build_app
from edge.standalone import DirectorySource
from reconciler.api.auth import AuthOptions, TokenAuthority, load_or_create_signing_key
from tests.edge.standalone import StandaloneNode, start_standalone
from tests.observability.otlp import OtlpReceiver

EDGE = "hotswap-edge"
EXECUTE = b"/api/v1/wasm/execute"
MODULES = Path(__file__).resolve().parents[1] / "edge" / "modules"
MIB = 1 << 20


def add(a: int, b: int) -> bytes:
    return json.dumps({"module": "arith", "function": "add", "args": [a, b]}).encode()


ADD = add(1, 2)
SPIN = b'{"module": "limits", "function": "spin", "args": []}'


# -- raw HTTP -------------------------------------------------------------------------------------


def request(
    method: bytes = b"POST",
    target: bytes = EXECUTE,
    body: bytes = ADD,
    headers: bytes = b"",
    *,
    close: bool = True,
    length: bool = True,
) -> bytes:
    """One request, byte for byte: `headers` are whole `Name: value\\r\\n` lines."""
    head = method + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers
    if close:
        head += b"Connection: close\r\n"
    if length:
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


def chunked(body: bytes, trailer: bytes = b"") -> bytes:
    half = len(body) // 2
    return b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n%s\r\n" % (half, body[:half], len(body) - half, body[half:], trailer)


async def exchange(port: int, data: bytes, *, half_close: bool = False) -> bytes:
    """Everything the server writes back on one connection until it closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        if half_close:
            writer.write_eof()
        return await asyncio.wait_for(reader.read(-1), 30)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lowercased names
    body: bytes

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict), value
        return value


async def read_answer(reader: asyncio.StreamReader, *, head: bool = False) -> Answer:
    """One response off a keep-alive connection (aiohttp's answers carry a Content-Length)."""
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if status == 100 or head:
        return Answer(status, headers, b"")
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 30)
    return Answer(status, headers, body)


def split_answers(raw: bytes) -> list[Answer]:
    """The responses in what a closed connection returned, in order (interim 100s left out)."""
    answers = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        size = 0 if status == 100 else int(headers.get("content-length", len(rest)))
        if rest.startswith(b"HTTP/1."):  # the answer to a HEAD: its Content-Length, no body
            size = 0
        if status != 100:
            answers.append(Answer(status, headers, rest[:size]))
        raw = rest[size:]
    return answers


def normal(raw: bytes) -> bytes:
    """An answer without what differs between two runs of the same request."""
    raw = re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", raw)
    raw = re.sub(rb"\r\nContent-Length: \d+", b"\r\nContent-Length: -", raw)
    raw = re.sub(rb"b'Content-Length: \d+'", b"b'Content-Length: -'", raw)
    return re.sub(rb'"(durationMs|uptimeSeconds)": ?-?[0-9.eE+-]+', rb'"\1": -', raw)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# -- the nodes ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """arith, limits (spin) and echo, each version 0.0.0."""
    base = tmp_path_factory.mktemp("modules")
    for name in ("arith", "limits", "echo"):
        (base / f"{name}.wat").write_text((MODULES / f"{name}.wat").read_text())
    return base


@pytest.fixture(scope="module")
def plain(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneNode]:
    """A node without a key; calls stop after 1 s."""
    node = start_standalone(folder, tmp_path_factory.mktemp("plain-cache"), "--timeout-s", "1")
    yield node
    node.stop()


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> TokenAuthority:
    key = load_or_create_signing_key(tmp_path_factory.mktemp("auth") / "signing-key.pem")
    return TokenAuthority(AuthOptions(), key)


@pytest.fixture(scope="module")
def keyed(
    folder: Path, authority: TokenAuthority, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StandaloneNode]:
    """A node with `--key`: execute calls need a token it verifies."""
    base = tmp_path_factory.mktemp("keyed")
    (base / "public.pem").write_text(authority.public_key_pem)
    node = start_standalone(folder, base / "cache", "--key", str(base / "public.pem"))
    yield node
    node.stop()


async def _as_it_is(request: web.Request, response: web.StreamResponse) -> None:
    """A receiver of `on_response_prepare` that changes nothing."""


@contextlib.asynccontextmanager
async def unshortcut(folder: Path, auth: Authenticator | None = None) -> AsyncIterator[int]:
    """The standalone node's application over `folder` as served before 925a099: everything through
    the application's router (no `take_execute_shortcut`), and every answer written by aiohttp's
    `web.Response` (no `edge.execute.PlainAnswer`). Its port."""
    runtime = Runtime()
    source = DirectorySource(folder)
    router = Router(runtime, source)
    report = await router.apply_table(source.scan().entries, 1)
    assert report.failed == {}, report.failed
    app = build_app(Node(runtime, router, NodeConfig(admin=True), auth))
    app.on_response_prepare.append(_as_it_is)  # every answer an aiohttp `web.Response`: no `PlainAnswer`
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()
        runtime.close()


async def differences(node: int, before: int, cases: dict[str, bytes], half_close: bool = False) -> dict[str, object]:
    """The cases the node answers otherwise than the application without the shortcut; and every
    case's answers (normalised) from the node, by name, for the caller's own checks."""
    found: dict[str, object] = {}
    for name, data in cases.items():
        now = normal(await exchange(node, data, half_close=half_close))
        then = normal(await exchange(before, data, half_close=half_close))
        if now != then:
            found[name] = (now[:400], then[:400])
    return found


async def answers(port: int, cases: dict[str, bytes]) -> dict[str, list[Answer]]:
    return {name: split_answers(await exchange(port, data)) for name, data in cases.items()}


def statuses(got: dict[str, list[Answer]]) -> dict[str, list[int]]:
    return {name: [a.status for a in found] for name, found in got.items()}


# -- routing: what reaches the execute handler ------------------------------------------------------


def _keep(data: bytes) -> bytes:
    return data.replace(b"Connection: close\r\n", b"")


BOMB = zlib.compress(b" " * (5 * MIB), 9)  # ~5 KB on the wire, 5 MiB once inflated

ROUTING: dict[str, bytes] = {
    "plain": request(),
    "absolute-form": request(target=b"http://127.0.0.1" + EXECUTE),
    "absolute-form-other-host": request(target=b"http://evil.example:1" + EXECUTE),
    "absolute-form-userinfo": request(target=b"http://u:p@127.0.0.1" + EXECUTE),
    "double-slash": request(target=b"/" + EXECUTE),
    "fragment": request(target=EXECUTE + b"#x"),
    "empty-query": request(target=EXECUTE + b"?"),
    "query": request(target=EXECUTE + b"?module=limits&function=spin"),
    "escape": request(target=b"/api/v1/wasm/%65xecute"),
    "escape-capital-e": request(target=b"/api/v1/wasm/%45xecute"),
    "escaped-slash": request(target=b"/api/v1/wasm%2Fexecute"),
    "escaped-all": request(target=b"%2Fapi%2Fv1%2Fwasm%2Fexecute"),
    "trailing-dot": request(target=EXECUTE + b"."),
    "trailing-slash": request(target=EXECUTE + b"/"),
    "trailing-semicolon": request(target=EXECUTE + b";"),
    "dot-segment": request(target=b"/api/v1/wasm/./execute"),
    "dot-dot-segment": request(target=b"/api/v1/x/../wasm/execute"),
    "upper-case-path": request(target=b"/API/V1/WASM/EXECUTE"),
    "lower-case-method": request(method=b"post"),
    "mixed-case-method": request(method=b"Post"),
    "HEAD": request(method=b"HEAD", body=b""),
    "OPTIONS": request(method=b"OPTIONS", body=b""),
    "GET": request(method=b"GET", body=b""),
    "PUT": request(method=b"PUT"),
    "PATCH": request(method=b"PATCH"),
    "GET-override-POST": request(method=b"GET", body=b"", headers=b"X-HTTP-Method-Override: POST\r\n"),
    "POST-override-GET": request(headers=b"X-HTTP-Method-Override: GET\r\nX-HTTP-Method: GET\r\n"),
    "http-1.0": b"POST /api/v1/wasm/execute HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(ADD), ADD),
    "http-2.0-line": b"POST /api/v1/wasm/execute HTTP/2.0\r\nContent-Length: %d\r\n\r\n%s" % (len(ADD), ADD),
    "no-host": b"POST /api/v1/wasm/execute HTTP/1.1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
    % (len(ADD), ADD),
    "tab-in-target": request(target=EXECUTE + b"\tx"),
    "star": request(target=b"*"),
    "upgrade-websocket": request(headers=b"Connection: Upgrade\r\nUpgrade: websocket\r\n"),
    "upgrade-h2c": request(headers=b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"),
    # Expect: anything but an absent header goes to the application's expect handler
    "expect-100": request(headers=b"Expect: 100-continue\r\n"),
    "expect-100-case": request(headers=b"eXpEcT: 100-CONTINUE\r\n"),
    "expect-empty": request(headers=b"Expect:\r\n"),
    "expect-blank": request(headers=b"Expect:  \r\n"),
    "expect-odd": request(headers=b"Expect: 200-ok\r\n"),
    "expect-twice": request(headers=b"Expect: 100-continue\r\nExpect: x\r\n"),
    "expect-100-http-1.0": b"POST /api/v1/wasm/execute HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n%s"
    % (len(ADD), ADD),
    "expect-100-too-large": request(body=b"x" * (5 * MIB), headers=b"Expect: 100-continue\r\n"),
    # bodies
    "chunked": request(body=chunked(ADD), headers=b"Transfer-Encoding: chunked\r\n", length=False),
    "chunked-too-large": request(
        body=chunked(b" " * (5 * MIB)), headers=b"Transfer-Encoding: chunked\r\n", length=False
    ),
    "chunked-with-length": request(body=chunked(ADD), headers=b"Transfer-Encoding: chunked\r\n"),
    "chunked-gzip-te": request(body=chunked(ADD), headers=b"Transfer-Encoding: gzip, chunked\r\n", length=False),
    "chunk-extension": request(
        body=b"%x;ext=1\r\n%s\r\n0\r\n\r\n" % (len(ADD), ADD), headers=b"Transfer-Encoding: chunked\r\n", length=False
    ),
    "length-plus-sign": request(body=ADD, headers=b"Content-Length: +%d\r\n" % len(ADD), length=False),
    "length-leading-zero": request(body=ADD, headers=b"Content-Length: 0%d\r\n" % len(ADD), length=False),
    "length-twice": request(body=ADD, headers=b"Content-Length: %d\r\n" % len(ADD)),
    "length-twice-differing": request(body=ADD, headers=b"Content-Length: 1\r\n"),
    "http-1.0-keep-alive": b"POST /api/v1/wasm/execute HTTP/1.0\r\nConnection: keep-alive\r\n"
    + b"Content-Length: %d\r\n\r\n%s" % (len(ADD), ADD)
    + b"GET /health HTTP/1.0\r\n\r\n",
    "too-large": request(body=b"x" * (5 * MIB)),
    "at-the-limit": request(body=b" " * (4 * MIB - len(ADD)) + ADD),
    "deflate": request(body=zlib.compress(ADD), headers=b"Content-Encoding: deflate\r\n"),
    "deflate-bomb": request(body=BOMB, headers=b"Content-Encoding: deflate\r\n"),
    "empty": request(body=b""),
    "no-length": request(body=b"", length=False),
    "malformed": request(body=b"{"),
    "not-an-object": request(body=b"[1, 2]"),
    "deep": request(body=b"[" * 100_000),
    "unknown-module": request(body=b'{"module": "nope", "function": "add", "args": []}'),
    "traceparent": request(headers=b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"),
    "traceparent-garbage": request(headers=b"traceparent: " + b"\xff" * 55 + b"\r\n"),
    "traceparent-long": request(headers=b"traceparent: " + b"0" * 8000 + b"\r\n"),
    # several on one connection: the shortcut, the router and the expect handler, in turn
    "pipelined": b"".join(
        [
            _keep(request(body=add(1, 1))),
            _keep(request(method=b"GET", target=b"/health", body=b"")),
            _keep(request(body=add(2, 2), headers=b"Expect: 100-continue\r\n")),
            _keep(request(target=EXECUTE + b"?", body=add(3, 3))),
            _keep(request(body=b"{")),
            _keep(request(method=b"HEAD", target=b"/health", body=b"")),
            _keep(request(target=b"/nowhere")),
            _keep(request(body=b'{"module": "nope", "function": "f"}')),
            _keep(request(method=b"GET", body=b"")),
            request(body=add(4, 4)),
        ]
    ),
    "pipelined-after-too-large": _keep(request(body=b"x" * (5 * MIB))) + request(body=add(5, 5)),
    "pipelined-after-parse-error": _keep(request(method=b"post")) + request(body=add(6, 6)),
}


async def test_every_raw_request_is_answered_as_the_router_answered_it(plain: StandaloneNode, folder: Path) -> None:
    async with unshortcut(folder) as before:
        assert await differences(port_of(plain.url), before, ROUTING) == {}
    got = statuses(await answers(port_of(plain.url), ROUTING))
    # and the answers are the ones the routes should give (so the comparison is not of two wrongs)
    for name in ("plain", "absolute-form", "absolute-form-other-host", "fragment", "empty-query", "escape"):
        assert got[name] == [200], (name, got[name])
    for name in ("double-slash", "escaped-slash", "trailing-dot", "trailing-slash", "upper-case-path"):
        assert got[name] == [404], (name, got[name])
    for name in ("HEAD", "OPTIONS", "GET", "PUT", "PATCH", "GET-override-POST"):
        assert got[name] == [405], (name, got[name])
    assert got["lower-case-method"] == got["mixed-case-method"] == [400]  # the parser refuses them
    assert got["expect-100"] == got["expect-100-case"] == got["expect-empty"] == [200]
    assert got["expect-odd"] == [417]
    assert got["chunked"] == got["deflate"] == got["traceparent"] == got["traceparent-garbage"] == [200]
    for name in ("too-large", "chunked-too-large", "deflate-bomb", "expect-100-too-large"):
        assert got[name] == [413], (name, got[name])
    assert got["pipelined"] == [200, 200, 200, 200, 400, 200, 404, 404, 405, 200]
    assert got["pipelined-after-too-large"][0] == 413


async def test_too_large_bodies_through_the_shortcut_are_json_413(plain: StandaloneNode) -> None:
    port = port_of(plain.url)
    for data in (ROUTING["too-large"], ROUTING["chunked-too-large"], ROUTING["deflate-bomb"]):
        (answer,) = split_answers(await exchange(port, data))
        assert answer.status == 413 and answer.headers["content-type"].startswith("application/json")
        assert answer.json()["error"] == "too_large", answer.body
    (at_limit,) = split_answers(await exchange(port, ROUTING["at-the-limit"]))
    assert at_limit.status == 200 and at_limit.json()["result"] == 3  # 4 MiB exactly is still taken


async def test_pipelined_answers_come_back_in_order_and_belong_to_their_request(plain: StandaloneNode) -> None:
    got = split_answers(await exchange(port_of(plain.url), ROUTING["pipelined"]))
    results = [a.json().get("result") for a in got if a.body and a.headers.get("x-hotswap-version")]
    assert results == [2, 4, 6, 8]  # add(1, 1), add(2, 2) with Expect, add(3, 3) with `?`, add(4, 4)
    assert got[1].json()["status"] == "ok" and got[4].json()["error"] == "bad_request"
    assert [a.json()["error"] for a in got[6:9]] == ["not_found", "not_found", "method_not_allowed"]


async def test_a_body_cut_short_is_answered_as_before(plain: StandaloneNode, folder: Path) -> None:
    cut = {
        "cut-body": b"POST /api/v1/wasm/execute HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + ADD,
        "cut-chunk": request(body=b"40\r\n" + ADD, headers=b"Transfer-Encoding: chunked\r\n", length=False),
        "cut-headers": b"POST /api/v1/wasm/execute HTTP/1.1\r\nHost: x\r\nContent-Len",
    }
    async with unshortcut(folder) as before:
        assert await differences(port_of(plain.url), before, cut, half_close=True) == {}
    status, answer = plain.execute("arith", "add", [2, 3])
    assert status == 200 and answer["result"] == 5, answer


# -- authentication: a node with a key --------------------------------------------------------------


def _auth_cases(authority: TokenAuthority) -> dict[str, bytes]:
    good = authority.mint("dev", ["developer"], audience=EDGE)
    viewer = authority.mint("v", ["viewer"], audience=EDGE)
    api = authority.mint("dev", ["admin"], audience="hotswap-api")
    expired = authority.mint("dev", ["developer"], audience=EDGE, now=1_000_000, ttl_seconds=60)
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=")
    claims = json.loads(base64.urlsafe_b64decode(good.split(".")[1] + "=="))
    unsigned = header + b"." + base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=") + b"."

    def bearer(token: str | bytes) -> bytes:
        return b"Authorization: Bearer " + (token.encode() if isinstance(token, str) else token) + b"\r\n"

    g = good.encode()
    return {
        "none": request(),
        "good": request(headers=bearer(good)),
        "good-extra-space": request(headers=b"Authorization: Bearer  " + g + b" \r\n"),
        "lower-scheme": request(headers=b"authorization: bearer " + g + b"\r\n"),
        "no-scheme": request(headers=b"Authorization: " + g + b"\r\n"),
        "basic": request(headers=b"Authorization: Basic " + base64.b64encode(b"dev:" + g) + b"\r\n"),
        "query": request(target=EXECUTE + b"?access_token=" + g),
        "query-authorization": request(target=EXECUTE + b"?Authorization=Bearer%20" + g),
        "cookie": request(headers=b"Cookie: token=" + g + b"; Authorization=Bearer " + g + b"\r\n"),
        "proxy-authorization": request(headers=b"Proxy-Authorization: Bearer " + g + b"\r\n"),
        "x-authorization": request(headers=b"X-Authorization: Bearer " + g + b"\r\n"),
        "userinfo": request(target=b"http://Bearer:" + g + b"@127.0.0.1" + EXECUTE),
        "trailer": request(
            body=chunked(ADD, b"Authorization: Bearer " + g + b"\r\n"),
            headers=b"Transfer-Encoding: chunked\r\nTrailer: Authorization\r\n",
            length=False,
        ),
        "folded": request(headers=b"X-Pad: a\r\n Authorization: Bearer " + g + b"\r\n"),
        "empty-then-good": request(headers=b"Authorization: \r\n" + bearer(good)),
        "bad-then-good": request(headers=bearer("x.y.z") + bearer(good)),
        "good-then-bad": request(headers=bearer(good) + bearer("x.y.z")),
        "viewer": request(headers=bearer(viewer)),
        "api-audience": request(headers=bearer(api)),
        "expired": request(headers=bearer(expired)),
        "alg-none": request(headers=bearer(unsigned)),
        "signature-stripped": request(headers=bearer(good.rsplit(".", 1)[0] + ".")),
        "none-expect-100": request(headers=b"Expect: 100-continue\r\n"),
        "none-too-large": request(body=b"x" * (5 * MIB)),
        "none-escape": request(target=b"/api/v1/wasm/%65xecute"),
        "none-absolute": request(target=b"http://127.0.0.1" + EXECUTE),
        "none-override": request(headers=b"X-HTTP-Method-Override: GET\r\n"),
        "none-traceparent": request(
            headers=b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
        ),
        # a token earlier on the connection authorises nothing after it
        "good-then-none": _keep(request(headers=bearer(good))) + _keep(request()) + request(headers=bearer(good)),
        "none-then-good": _keep(request()) + request(headers=bearer(good)),
        "expect-good-then-none": _keep(request(headers=b"Expect: 100-continue\r\n" + bearer(good))) + request(),
        # an unauthorised request whose body is a whole (authorised) request is not read as one
        "smuggled": request(body=request(headers=bearer(good)), close=False)
        + request(method=b"GET", target=b"/health", body=b""),
    }


async def test_a_keyed_node_refuses_through_the_shortcut_exactly_as_before(
    keyed: StandaloneNode, authority: TokenAuthority, folder: Path
) -> None:
    cases = _auth_cases(authority)
    async with unshortcut(folder, Authenticator(authority.public_key_pem)) as before:
        assert await differences(port_of(keyed.url), before, cases) == {}
    got = statuses(await answers(port_of(keyed.url), cases))
    for name in ("good", "good-extra-space", "good-then-bad"):
        assert got[name] == [200], (name, got[name])
    refused = {name for name, found in got.items() if found == [401]}
    assert refused == {
        "none", "lower-scheme", "no-scheme", "basic", "query", "query-authorization", "cookie",
        "proxy-authorization", "x-authorization", "userinfo", "trailer", "empty-then-good",
        "bad-then-good", "api-audience", "expired", "alg-none", "signature-stripped", "none-expect-100",
        "none-too-large", "none-escape", "none-absolute", "none-override", "none-traceparent",
    }  # fmt: skip
    assert got["viewer"] == [403]
    assert got["folded"] == [400]  # obs-fold: the parser refuses the request outright
    assert got["good-then-none"] == [200, 401, 200]
    assert got["none-then-good"] == [401, 200]
    assert got["expect-good-then-none"] == [200, 401]
    assert got["smuggled"] == [401, 200]  # two requests sent, two answered: the body stayed a body


async def test_refusals_through_the_shortcut_are_json_and_read_no_body(keyed: StandaloneNode) -> None:
    """A 401 is answered before the body is read: the node does not wait for a body it never gets."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(keyed.url))
    try:
        writer.write(b"POST /api/v1/wasm/execute HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n{")
        answer = await read_answer(reader)
        assert answer.status == 401 and answer.json()["error"] == "unauthorized", answer
        assert answer.headers["content-type"].startswith("application/json")
        assert b"Traceback" not in answer.body
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert keyed.request("GET", "/health", None)[0] == 200


# -- Expect: 100-continue, slow and vanishing clients ---------------------------------------------


async def test_expect_100_continue_waits_for_the_go_ahead_before_the_body(plain: StandaloneNode) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(plain.url))
    try:
        body = add(40, 2)
        writer.write(request(body=body, close=False, headers=b"Expect: 100-continue\r\n")[: -len(body)])
        interim = await read_answer(reader)
        assert interim.status == 100  # the application's expect handler answered, not the shortcut
        writer.write(body)
        answer = await read_answer(reader)
        assert answer.status == 200 and answer.json()["result"] == 42
        writer.write(request(body=add(1, 0), close=False))  # the same connection, now the shortcut
        again = await read_answer(reader)
        assert again.status == 200 and again.json()["result"] == 1 and "x-hotswap-version" in again.headers
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a RST, as a client that vanishes does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def test_a_slow_body_and_vanishing_clients_hold_up_no_one(plain: StandaloneNode) -> None:
    port = port_of(plain.url)
    body = add(20, 22)
    slow_reader, slow = await asyncio.open_connection("127.0.0.1", port)
    try:
        slow.write(request(body=body)[:-10])  # the headers and most of the body
        await slow.drain()
        # clients that go away: mid-body, mid-headers, and with a call that runs into its timeout
        for data in (request(body=body)[:-5], request()[:30], request(body=SPIN), request(body=SPIN)):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(data)
            await writer.drain()
            _abort(writer)
        # meanwhile everyone else is served, through the shortcut and past it
        for data in (request(body=add(1, 2)), request(target=EXECUTE + b"?", body=add(3, 4))):
            (answer,) = split_answers(await exchange(port, data))
            assert answer.status == 200 and answer.json()["result"] in (3, 7), answer
        (health,) = split_answers(await exchange(port, request(method=b"GET", target=b"/health", body=b"")))
        assert health.status == 200
        # the slow client's request was waiting, not dropped
        slow.write(body[-10:])
        answer = await read_answer(slow_reader)
        assert answer.status == 200 and answer.json()["result"] == 42
    finally:
        slow.close()
        with contextlib.suppress(ConnectionError):
            await slow.wait_closed()
    # a call that runs into its timeout is still stopped (the epoch ticker ticks) and answered
    (spun,) = split_answers(await exchange(port, request(body=SPIN)))
    assert spun.status == 504 and spun.json()["error"] == "timeout", spun.body


async def test_concurrent_clients_each_get_their_own_answer(plain: StandaloneNode) -> None:
    port = port_of(plain.url)

    async def client(i: int) -> list[int]:
        data = (
            _keep(request(body=add(i, 1000)))
            + _keep(request(target=EXECUTE + b"?", body=add(i, 2000)))
            + _keep(request(body=add(i, 3000), headers=b"Expect: 100-continue\r\n"))
            + request(body=add(i, 4000))
        )
        got = split_answers(await exchange(port, data))
        assert [a.status for a in got] == [200] * 4, [a.body for a in got]
        return [int(str(a.json()["result"])) - i for a in got]

    results = await asyncio.gather(*(client(i) for i in range(64)))
    assert results == [[1000, 2000, 3000, 4000]] * 64


# -- a node with worker processes ------------------------------------------------------------------


@pytest.fixture
def workers(folder: Path, tmp_path: Path) -> Iterator[str]:
    node = start_standalone(folder, tmp_path / "cache", "--workers", "2")
    try:
        yield node.url
    finally:
        node.stop()


async def test_every_answer_of_a_worker_names_it_through_the_shortcut_or_not(workers: str) -> None:
    port = port_of(workers)
    seen: dict[str, int] = {}
    for i in range(200):  # new connections until the kernel has given some to each worker
        (answer,) = split_answers(await exchange(port, request(body=add(i, 1))))
        assert answer.status == 200 and answer.json()["result"] == i + 1, answer
        seen[answer.headers[WORKER_HEADER.lower()]] = seen.get(answer.headers[WORKER_HEADER.lower()], 0) + 1
        if len(seen) == 2 and i >= 10:
            break
    assert set(seen) == {"0", "1"}, seen
    # on one connection, one worker answers everything: shortcut, router, expect handler, failures
    data = b"".join(
        [
            _keep(request(body=add(1, 1))),
            _keep(request(body=b"{")),
            _keep(request(body=b'{"module": "nope", "function": "f"}')),
            _keep(request(body=add(2, 2), headers=b"Expect: 100-continue\r\n")),
            _keep(request(target=EXECUTE + b"?", body=add(3, 3))),
            _keep(request(method=b"GET", body=b"")),
            _keep(request(method=b"GET", target=b"/health", body=b"")),
            request(body=b"x" * (5 * MIB)),
        ]
    )
    for _ in range(4):
        got = split_answers(await exchange(port, data))
        assert [a.status for a in got] == [200, 400, 404, 200, 200, 405, 200, 413], [a.body for a in got]
        named = {a.headers.get(WORKER_HEADER.lower()) for a in got}
        assert len(named) == 1 and named <= {"0", "1"}, named
        assert got[-1].json()["error"] == "too_large"


# -- tracing --------------------------------------------------------------------------------------


async def test_a_sampled_traceparent_through_the_shortcut_makes_the_calls_span(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = OtlpReceiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", await receiver.start())
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    try:
        node = await asyncio.to_thread(start_standalone, folder, tmp_path / "cache", "--trace-ratio", "0")
        try:
            port = port_of(node.url)
            trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
            sent = {
                "sampled": request(body=add(1, 2), headers=f"traceparent: 00-{trace}-{parent}-01\r\n".encode()),
                "routed": request(
                    target=EXECUTE + b"?", body=add(2, 2), headers=f"traceparent: 00-{trace}-{'1' * 16}-01\r\n".encode()
                ),
                "failed": request(
                    body=b'{"module": "nope", "function": "f"}',
                    headers=f"traceparent: 00-{trace}-{'2' * 16}-01\r\n".encode(),
                ),
                "unsampled": request(body=add(3, 3), headers=f"traceparent: 00-{'5' * 32}-{parent}-00\r\n".encode()),
                "untraced": request(body=add(4, 4)),
            }
            got = statuses(await answers(port, sent))
            assert got == {"sampled": [200], "routed": [200], "failed": [404], "unsampled": [200], "untraced": [200]}
        finally:
            await asyncio.to_thread(node.stop)  # the node's last spans go out as it stops
    finally:
        await receiver.stop()
    spans = receiver.named("wasm.function.invoke")
    assert sorted((s.trace_id, s.parent_span_id) for s in spans) == [
        (trace, parent),
        (trace, "1" * 16),
        (trace, "2" * 16),
    ]  # one span per sampled call, under the caller's trace; none for the others
    by_parent = {s.parent_span_id: s for s in spans}
    assert by_parent[parent].attributes["wasm.function.name"] == "add"
    assert by_parent[parent].attributes["http.response.status_code"] == 200
    assert by_parent[parent].attributes["wasm.module.version"] == "0.0.0"
    assert by_parent["2" * 16].error  # the failure left the handler inside the span
