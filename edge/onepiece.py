"""HTTP answers written to the connection in one piece, for the hottest routes.

aiohttp's `web.Response` copies its headers into a new `CIMultiDict`, and its `prepare` and
`write_eof` run four coroutines that fill, check and serialise that map on every answer: ~16 µs of
an edge execute call's ~63 (bench/RESULTS.md, issue 20). An `OnePieceAnswer` writes the same bytes
(status line, the header lines made beforehand, Content-Length, Date, Server, Connection as aiohttp
decides it, more lines made beforehand, the body) in one `write_eof` of aiohttp's own stream writer.
aiohttp's server takes it as it takes a response: it awaits `prepare` and `write_eof`, then reads
`keep_alive`; a middleware passes it on as it is.

Used by the edge's execute route (`edge.execute.PlainAnswer`) and the control plane's node protocol
(`reconciler.api.control`), each only where no `on_response_prepare` receiver would need a real
response to change: what such a receiver adds (the control plane's hardening headers) is in the
lines made beforehand, and an application with any other receiver gets `web.Response` as before.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from aiohttp import HttpVersion10, HttpVersion11, web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE

__all__ = ["OnePieceAnswer", "header_lines"]

_SERVER = f"Server: {SERVER_SOFTWARE}\r\n".encode()
_KEEP_ALIVE = b"Connection: keep-alive\r\n"
_CLOSE = b"Connection: close\r\n"
# What aiohttp's header serializer refuses in a name or a value (a header injection): every control
# character but the tab. Its serializer is private (`aiohttp.http_writer`), so the rule is kept here.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def header_lines(headers: Mapping[str, str]) -> bytes | None:
    """The `Name: value` lines of `headers`, each ended by CRLF, as aiohttp writes a response's
    headers; None when aiohttp would refuse them (a control character, or a name or value that is
    not text) or when they are not UTF-8 (a lone surrogate)."""
    lines: list[str] = []
    for given_name, given_value in headers.items():
        if not (isinstance(given_name, str) and isinstance(given_value, str)):
            return None
        # A plain copy of the characters: what is checked is what is written, whatever a subclass of
        # str (an `istr` name, say) does in its own methods.
        name, value = str.__str__(given_name), str.__str__(given_value)
        if _FORBIDDEN.search(name) or _FORBIDDEN.search(value):
            return None
        lines.append(name + ": " + value + "\r\n")
    try:
        return "".join(lines).encode()
    except UnicodeEncodeError:
        return None


class OnePieceAnswer:
    """A 200 answer of `body`, with the header lines `before` (ahead of Content-Length, where a
    response's own headers go) and `after` (behind Server and Connection, where an `on_response_prepare`
    receiver's go)."""

    __slots__ = ("after", "before", "body", "keep_alive")
    status = 200

    def __init__(self, body: bytes, before: bytes, after: bytes = b"") -> None:
        self.body = body
        self.before = before
        self.after = after
        self.keep_alive = True

    @property
    def body_length(self) -> int:
        return len(self.body)

    async def prepare(self, request: web.BaseRequest) -> None:
        version = request.version
        keep_alive = self.keep_alive = request.keep_alive
        if keep_alive:
            connection = _KEEP_ALIVE if version == HttpVersion10 else b""
        else:
            connection = _CLOSE if version == HttpVersion11 else b""
        body = self.body
        head = b"HTTP/%d.%d 200 OK\r\n%sContent-Length: %d\r\nDate: %s\r\n%s%s%s\r\n" % (
            version.major,
            version.minor,
            self.before,
            len(body),
            rfc822_formatted_time().encode(),
            _SERVER,
            connection,
            self.after,
        )
        await request.writer.write_eof(head if request.method == "HEAD" else head + body)  # HEAD: no body

    async def write_eof(self) -> None:
        """Written whole by `prepare`."""
