"""Fixtures and helpers for the web console's server side: a real control plane (tests.api.conftest's
`plane`, or `plane_with_nodes` with two edge nodes), a browser-like client that signs in and keeps the
session cookie, and a reader of the live stream that waits on messages with a deadline.

Browser tests can reuse them: `console(cluster, role)` signs in with an API token and yields a
`Console` (an aiohttp session holding the cookie, and the CSRF secret); `cluster.plane.login_link()`
gives a one-time sign-in URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from reconciler.ui.sessions import CSRF_HEADER, SESSION_COOKIE
from tests.api.conftest import Answer, plane
from tests.e2e.cluster import Cluster, start_cluster, stop_cluster

__all__ = ["Answer", "Console", "Stream", "console", "plane", "plane_with_nodes", "raw_get"]

TWO_NODES = [("edge-us-east-1", "us-east"), ("edge-eu-central-1", "eu-central")]
DEADLINE = 30.0


@pytest.fixture
async def plane_with_nodes(tmp_path: Path) -> AsyncIterator[Cluster]:
    """The control plane on a copy of fleet-example with two edge nodes that run their tables."""
    cluster = await start_cluster(tmp_path, TWO_NODES)
    try:
        await cluster.wait_ready(len(TWO_NODES))
        yield cluster
    finally:
        await stop_cluster(cluster)


@dataclass
class Console:
    """A browser's view of the plane: the session cookie in `http`'s jar, the CSRF secret from sign-in."""

    url: str
    http: aiohttp.ClientSession
    session: dict[str, Any]

    @property
    def csrf(self) -> str:
        return str(self.session["csrf"])

    @property
    def cookie(self) -> str:
        for morsel in self.http.cookie_jar:
            if morsel.key == SESSION_COOKIE:
                return morsel.value
        raise AssertionError("no session cookie")

    async def call(self, method: str, path: str, *, csrf: bool = True, **kwargs: Any) -> Answer:
        headers = dict(kwargs.pop("headers", {}))
        if csrf and method not in ("GET", "HEAD"):
            headers.setdefault(CSRF_HEADER, self.csrf)
        async with self.http.request(method, self.url + path, headers=headers, **kwargs) as r:
            raw = await r.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            return Answer(r.status, body, dict(r.headers))


def browser() -> aiohttp.ClientSession:
    """A client whose cookie jar takes cookies from 127.0.0.1 (aiohttp refuses IP hosts by default)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


@contextlib.asynccontextmanager
async def console(cluster: Cluster, role: str = "admin", subject: str | None = None) -> AsyncIterator[Console]:
    """Signed in with a token for `role`: the cookie and the CSRF secret, as the console page holds them."""
    async with browser() as http:
        token = cluster.token(role, subject or f"ui-{role}")
        async with http.post(cluster.url + "/ui/session", json={"token": token}) as r:
            assert r.status == 200, await r.text()
            session = await r.json()
        yield Console(cluster.url, http, session)


class Stream:
    """An open `GET /ui/events`: `next(kind)` reads messages until one of that kind, with a deadline."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.seen: list[dict[str, Any]] = []
        self.comments: list[str] = []

    async def message(self, timeout: float = DEADLINE) -> dict[str, Any] | None:
        """The next `data:` message; None when the stream ended."""
        data: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                line = await self.response.content.readline()
                if not line:
                    return None
                text = line.decode().rstrip("\n")
                if text.startswith("data: "):
                    data.append(text[6:])
                elif text.startswith(":"):
                    self.comments.append(text)
                elif text == "" and data:
                    message: dict[str, Any] = json.loads("\n".join(data))
                    self.seen.append(message)
                    return message

    async def next(self, kind: str, timeout: float = DEADLINE, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind!r} message within {timeout:.0f}s; seen {self.seen[-10:]}")
            message = await self.message(left)
            if message is None:
                raise AssertionError(f"the stream ended before a {kind!r} message; seen {self.seen[-10:]}")
            if message.get("kind") == kind and all(_get(message, k) == v for k, v in match.items()):
                return message


def _get(message: dict[str, Any], dotted: str) -> Any:
    value: Any = message
    for part in dotted.split("__"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


async def raw_get(url: str, target: str) -> tuple[int, bytes]:
    """GET with the request target sent exactly as written (clients normalise `..` away)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), DEADLINE)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]
