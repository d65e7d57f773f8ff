"""The node protocol's 200s (a heartbeat's answer, a table on the long-poll) are written in one piece
(`edge.onepiece`, `reconciler.api.security.one_piece`): the same bytes as `web.Response` and the
`security_headers` receiver wrote, hardening headers included, for HTTP/1.0 and 1.1, kept alive or
closed; and an `on_response_prepare` receiver they do not account for gets `web.Response` back."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp import web

from edge.nodeapi import NODES_PATH
from edge.onepiece import OnePieceAnswer
from edge.protocol import TABLE_SIGNATURE_HEADER
from reconciler.api import control, security
from reconciler.api.security import SECURITY_HEADERS, one_piece, security_headers
from reconciler.ui.routes import console_headers
from tests.api.conftest import call
from tests.e2e.cluster import Cluster
from tests.edge.test_execute_path import exchange

NODE = "edge-one-piece"


def _normal(raw: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", raw)


def _requests(token: str, version: bytes, last: bytes) -> bytes:
    """A heartbeat and two long-polls answered at once (after=0), the last one with `last` headers."""
    head = f"Authorization: Bearer {token}\r\nHost: x\r\n".encode()
    if version == b"1.0":
        head += b"Connection: keep-alive\r\n"
    beat = b'{"generation": 0}'
    path = NODES_PATH.encode() + b"/" + NODE.encode()
    heartbeat = b"POST %s/heartbeat HTTP/%s\r\n%sContent-Length: %d\r\n\r\n%s" % (path, version, head, len(beat), beat)
    poll = b"GET %s/assignment?after=0 HTTP/%s\r\n" % (path, version)
    return heartbeat + poll + head + b"\r\n" + poll + head.replace(b"Connection: keep-alive\r\n", b"") + last + b"\r\n"


async def test_node_protocol_answers_in_one_piece_are_the_bytes_web_response_wrote(
    plane: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = plane
    if True:
        token = cluster.token("admin")
        registration = {
            "id": NODE,
            "region": "no-modules-here",
            "hostname": "h",
            "url": "http://127.0.0.1:9",
            "generation": 5,
        }
        assert (await call(cluster.url, "POST", NODES_PATH, token, json=registration)).status == 201
        port = int(cluster.url.rsplit(":", 1)[1])
        written: list[str] = []
        real = control.one_piece

        def counted(request: web.Request, body: bytes, head: bytes | None) -> Any:
            answer = real(request, body, head)
            written.append(type(answer).__name__)
            return answer

        monkeypatch.setattr(control, "one_piece", counted)
        cases = {
            "1.1, kept alive, then closing": _requests(token, b"1.1", b"Connection: close\r\n"),
            "1.0, kept alive, then plain 1.0": _requests(token, b"1.0", b""),
        }
        for name, data in cases.items():
            generation = cluster.plane.hub.table(NODE).generation  # type: ignore[union-attr]
            mine = await exchange(port, data)
            with monkeypatch.context() as patched:  # no receiver accounted for: every answer a web.Response
                patched.setattr(security, "NODE_ANSWER_RECEIVERS", set())
                theirs = await exchange(port, data)
            assert cluster.plane.hub.table(NODE).generation == generation, "a table was published meanwhile"  # type: ignore[union-attr]
            assert mine.count(b" 200 OK\r\n") == 3, (name, mine[-800:])
            assert _normal(mine) == _normal(theirs), name
            assert mine.count(f"\r\n{TABLE_SIGNATURE_HEADER}: ".encode()) == 2, name  # the tables' own headers
            for header, value in SECURITY_HEADERS.items():
                assert f"\r\n{header}: {value}\r\n".encode() in mine, (name, header)
        assert written == ["OnePieceAnswer"] * 3 + ["NoneType"] * 3 + ["OnePieceAnswer"] * 3 + ["NoneType"] * 3, written


class _Request:
    """What `one_piece` reads of a request: its method, its application's prepare receivers."""

    def __init__(self, *receivers: object, method: str = "POST") -> None:
        self.app = type("App", (), {"on_response_prepare": list(receivers)})()
        self.method = method


async def _other(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["X-Other"] = "1"


def test_a_receiver_one_piece_does_not_account_for_gets_web_response() -> None:
    def answer(*receivers: object, head: bytes | None = b"A: 1\r\n") -> object:
        return one_piece(_Request(*receivers), b"{}", head)  # type: ignore[arg-type]

    assert isinstance(answer(security_headers), OnePieceAnswer)
    assert isinstance(answer(security_headers, console_headers), OnePieceAnswer)  # /ui paths only
    assert answer(security_headers, _other) is None
    assert answer(security_headers, head=None) is None  # header lines aiohttp refuses
    head = one_piece(_Request(security_headers, method="HEAD"), b"{}", b"A: 1\r\n")  # type: ignore[arg-type]
    assert isinstance(head, OnePieceAnswer)  # it writes no body: test_head_on_the_long_poll_writes_no_body
