"""A minimal HTTP/1.1 keep-alive client for bench/scale.py's simulated agents, on 127.0.0.1 only.

bench/scale.py runs thousands of agents in one process against control planes on the same machine;
with aiohttp's client most of that process's CPU went to the client's own machinery per request.
Here a `Wire` is one kept-alive TCP connection (an `asyncio.Protocol`) that carries one request at
a time: the request is bytes the caller composed (request line, Host, `Authorization: Bearer`, and
Content-Type/Content-Length for a body), the answer is read as little as the node protocol needs:
the status, the header lines, and a body of exactly Content-Length bytes (204 and 304 have none).
An answer with `Connection: close` (or an HTTP/1.0 one without keep-alive) ends the connection and
the next request opens another; a chunked answer is refused with `WireError`.

Every failure is an exception: `WireError` for a connection that could not open, closed before its
answer ended or carried an answer this client does not read, `TimeoutError` for an answer later
than the request's timeout (connect included). After a failure or a cancellation the connection is
dropped, and the next request opens a new one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson

MAX_HEAD = 64 * 1024  # a longer answer head is not one of the control plane's
NO_BODY = frozenset({204, 304})  # answers that never carry a body, with or without Content-Length


class WireError(Exception):
    """A call without a whole answer: the connection failed or closed, or the answer was unreadable."""


@dataclass(slots=True)
class Answer:
    """One HTTP answer: its status, header fields (names lower-cased) and body."""

    status: int
    headers: dict[str, str]
    body: bytes
    keep_alive: bool  # whether the connection may carry the next request

    def json(self) -> Any:
        return orjson.loads(self.body)

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _Connection(asyncio.Protocol):
    """One TCP connection's side of the exchange: bytes in, at most one answer awaited at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Answer] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timeout = 0.0
        # The answer being read, once its head is whole: body_at is where its body starts in the buffer.
        self.body_at = -1
        self.status = 0
        self.headers: dict[str, str] = {}
        self.length = 0
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.open = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        cause = f": {exc!r}" if exc is not None else ""
        self._fail(WireError(f"the connection closed before the answer ended{cause}"))

    def send(self, request: bytes, deadline: float) -> asyncio.Future[Answer]:
        """Write one request; the future is its answer, or fails at `deadline` (the loop's clock)."""
        assert self.transport is not None and self.waiter is None, "one request at a time"
        self.waiter = waiter = self.loop.create_future()
        self.timeout = deadline - self.loop.time()
        self.timer = self.loop.call_at(deadline, self._expire)
        self.transport.write(request)
        return waiter

    def abort(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.open = False
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # bytes nobody asked for: the exchange is out of step
            self.abort()
            return
        self.buffer += data
        try:
            answer = self._answer()
        except WireError as exc:
            self._fail(exc)
            self.abort()
            return
        if answer is None:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result(answer)
        if self.buffer:  # more than the answer: nothing this client can read follows
            answer.keep_alive = False

    def _answer(self) -> Answer | None:
        """The answer, once the buffer holds all of it; None while more is to come."""
        buffer = self.buffer
        if self.body_at < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    raise WireError(f"an answer head over {MAX_HEAD} bytes")
                return None
            self._head(bytes(buffer[:end]).decode("latin-1"))
            self.body_at = end + 4
        end = self.body_at + self.length
        if len(buffer) < end:
            return None
        body = bytes(buffer[self.body_at : end])
        del buffer[:end]
        self.body_at = -1
        return Answer(self.status, self.headers, body, self.keep_alive)

    def _head(self, head: str) -> None:
        status_line, *lines = head.split("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise WireError(f"not an HTTP/1.x status line: {status_line!r}")
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon:
                raise WireError(f"a malformed header line: {line!r}")
            headers[name.strip().lower()] = value.strip()
        status = int(rest[:3])
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise WireError(f"a chunked answer ({status}): this client reads Content-Length bodies only")
        length = headers.get("content-length")
        if status in NO_BODY:
            length = "0"
        elif length is None or not length.isdigit():
            raise WireError(f"an answer {status} without a Content-Length this client reads: {length!r}")
        connection = headers.get("connection", "").lower()
        self.status, self.headers, self.length = status, headers, int(length)
        self.keep_alive = connection != "close" and (version != "HTTP/1.0" or connection == "keep-alive")

    def _expire(self) -> None:
        self.timer = None
        self._fail(TimeoutError(f"no whole answer within {self.timeout:.0f} s"))
        self.abort()

    def _fail(self, exc: BaseException) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class Wire:
    """One agent loop's kept-alive HTTP/1.1 connection to a server on 127.0.0.1: one request at a
    time, the same `Authorization: Bearer` on each, a new connection whenever the last one ended."""

    def __init__(self, port: int, token: str, timeout: float) -> None:
        self.port = port
        self.timeout = timeout  # per request: connecting, writing and the whole answer
        self.fields = f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n".encode()
        self.connection: _Connection | None = None
        self.connections = 0  # opened so far

    async def get(self, target: str) -> Answer:
        """GET `target` (a path with its query, already encoded)."""
        return await self.request(b"GET %s HTTP/1.1\r\n%s\r\n" % (target.encode(), self.fields))

    async def post_json(self, target: str, body: Any) -> Answer:
        """POST `body` as JSON to `target`."""
        data = orjson.dumps(body)
        head = b"POST %s HTTP/1.1\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        return await self.request(head % (target.encode(), self.fields, len(data)) + data)

    async def request(self, request: bytes) -> Answer:
        """Send one whole request (head and body) and read its answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        connection = self.connection
        try:
            if connection is None or not connection.open:
                connection = await self._connect(loop, deadline)
            answer = await connection.send(request, deadline)
        except BaseException:  # failed, timed out or cancelled: the connection's state is unknown
            self.close()
            raise
        if not answer.keep_alive:
            self.close()
        return answer

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        self.close()
        try:
            async with asyncio.timeout_at(deadline):
                _, connection = await loop.create_connection(lambda: _Connection(loop), "127.0.0.1", self.port)
        except OSError as exc:
            raise WireError(f"cannot connect to 127.0.0.1:{self.port}: {exc!r}") from exc
        self.connection = connection
        self.connections += 1
        return connection

    def close(self) -> None:
        """Drop the connection, if one is open; the next request opens another."""
        if self.connection is not None:
            self.connection.abort()
            self.connection = None
