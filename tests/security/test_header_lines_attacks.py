"""Outside attacks on `edge.onepiece.header_lines` as abf8f48 made it: its own rule (a name or value
that is not `str`, or holds a control character but the tab, gives None) instead of aiohttp's
private serializer. The lines it makes are written verbatim into one-piece answers: an edge's 200
execute answers (`VersionSlot.answer_head`: the version a table gives) and the control plane's
long-poll answers (the table's signature and binding). Real in-process edge applications (`served`,
`unshortcut`) and a real control plane (`plane`) on 127.0.0.1, read byte for byte over raw sockets
and by real HTTP clients (aiohttp's and the standard library's `http.client`).

What was tried, and held:
- every code point but the surrogates, in a value and in a name: `header_lines` refuses exactly
  what aiohttp's serializers (`_py_serialize_headers` and the C `_serialize_headers` the server
  uses) refuse, and otherwise makes the same bytes; names with `:`, spaces or nothing, empty and
  1 MiB values, repeated names of a `CIMultiDict` and values that are not text likewise;
- versions a table gives with Unicode line and paragraph separators (U+2028, U+2029, U+0085, with
  `X-Injected: 1` behind them), no-break and other spaces, a BOM, a fullwidth colon, `: ` inside,
  64 emoji: an edge writes them in one piece (`PlainAnswer`) with the bytes aiohttp's `web.Response`
  writes; aiohttp's client and `http.client` read one X-Hotswap-Version carrying the version
  (`http.client` as Latin-1, as it reads any header) and no injected header;
- versions with the other control characters aiohttp refuses (VT, FF, FS to US, DEL, NUL) or a lone
  surrogate are refused by `ModuleEntry` (in Python; in a JSON table PUT to a node's admin route a
  400 naming `version`, or "Invalid JSON" for an escaped surrogate, and the table before it kept); a
  fleet's versions are semver, which refuses them too;
- a node-token holder registering ids with CR LF, U+2028 or U+0085 and `X-Injected: 1`, or polling
  such ids (percent-encoded in the path): well-formed 4xx answers, no injected header; its own
  long-poll answer is written in one piece with the bytes of `web.Response`, each of Content-Type,
  the signature and the binding once, of JWT and base64url characters only.

What did not hold (`header_lines` itself; no outside path reached either, see above), both mended
since: `header_lines` now returns None for text that is not UTF-8, and writes a plain copy of the
characters it checked:
- a lone surrogate (`"1\\ud800"`) makes `header_lines` raise UnicodeEncodeError out of `.encode()`
  instead of returning None, against its docstring ("None when aiohttp would refuse them"). The old
  code raised nothing: aiohttp's C serializer (the one in use) drops the surrogate, and its Python
  one raises UnicodeEncodeError, a ValueError the old code caught. A caller would get an exception
  where it expects bytes or the fallback to `web.Response`; `VersionSlot.__init__`
  (edge/router.py:86) would raise while it builds the slot.
- the regex checks a value's characters, but the line is made by an f-string, which calls the
  value's `__format__`: a `str` subclass whose `__format__` differs from its characters passes the
  check and is written unchecked (`"x\\r\\nX-Injected: 1"` from a subclass whose characters are
  `ok`). aiohttp's serializers write the characters they checked.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.http_writer import _py_serialize_headers, _serialize_headers
from multidict import CIMultiDict
from pydantic import ValidationError

from edge.onepiece import header_lines
from edge.protocol import TABLE_BINDING_HEADER, TABLE_SIGNATURE_HEADER, VERSION_HEADER, ModuleEntry
from edge.router import Router
from edge.runtime import Runtime
from edge.standalone import DirectorySource
from reconciler.spec.fields import check_semver
from tests.e2e.cluster import Cluster
from tests.edge.conftest import module_bytes
from tests.edge.test_execute_path import served
from tests.security.test_execute_shortcut_attacks import (
    EXECUTE,
    MODULES,
    exchange,
    normal,
    request,
    split_answers,
    unshortcut,
)
from tests.security.test_one_piece_node_answer_attacks import (  # noqa: F401 - the fixture
    NODE,
    P,
    _answers,
    _both,
    _normal,
    _poll,
    _req,
    _tokens,
    plane,
)
from tests.security.test_plain_answer_attacks import serving_table, versioned

SERIALIZERS = {"python": _py_serialize_headers, "C": _serialize_headers}


def aiohttps(headers: CIMultiDict[Any], serializer: str) -> bytes | None:
    """The header lines aiohttp's `serializer` writes for `headers`; None where it refuses them."""
    try:
        serialized = SERIALIZERS[serializer]("-", headers)
    except (ValueError, TypeError):
        return None
    return bytes(serialized[3:-2])  # "-\r\n", the lines, "\r\n"


def same_as_aiohttp(headers: CIMultiDict[Any]) -> list[str]:
    """Where `header_lines` differs from aiohttp's serializers on `headers`."""
    mine = header_lines(headers)
    return [name for name in SERIALIZERS if aiohttps(headers, name) != mine]


# -- header_lines against aiohttp's own serializers -------------------------------------------------


def _singly(code: int) -> bool:
    """Code points tried one by one: the ASCII and Latin ranges, and every control, format, space and
    separator character (the rest are tried 512 at a time, in one value)."""
    return code < 0x3100 or unicodedata.category(chr(code)) in ("Cc", "Cf", "Zs", "Zl", "Zp")


def test_every_code_point_is_refused_or_written_as_aiohttps_serializers_do() -> None:
    codes = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    refused = []
    for code in filter(_singly, codes):
        ch = chr(code)
        for headers in (CIMultiDict({"V": f"a{ch}b"}), CIMultiDict({f"N{ch}": "v"})):
            assert same_as_aiohttp(headers) == [], (hex(code), headers)
            if header_lines(headers) is None:
                refused.append(code)
    assert sorted(set(refused)) == [*range(0x09), *range(0x0A, 0x20), 0x7F]
    rest = [chr(c) for c in codes if not _singly(c)]
    for i in range(0, len(rest), 512):
        value = "".join(rest[i : i + 512])
        for headers in (CIMultiDict({"V": value}), CIMultiDict({value: "v"})):
            assert same_as_aiohttp(headers) == [], hex(ord(value[0]))
            assert (
                header_lines(headers) == (f"{next(iter(headers))}: {headers.getone(next(iter(headers)))}\r\n").encode()
            )


def test_odd_names_long_values_repeats_and_non_text_match_aiohttp() -> None:
    cases: list[CIMultiDict[Any]] = [
        CIMultiDict({"A: B": "c"}),  # a colon in a name: aiohttp writes it as it is, too
        CIMultiDict({" N ": " v "}),
        CIMultiDict({"": ""}),
        CIMultiDict({"V": "x" * (1 << 20)}),
        CIMultiDict({"V": "\t"}),
        CIMultiDict([("Set-Cookie", "a=1"), ("set-cookie", "b=2"), ("V", "\u00e9")]),
        CIMultiDict({"V": "\u2028X-Injected: 1"}),
        CIMultiDict({"V": "a\r\nX-Injected: 1"}),
        CIMultiDict({"V": "a\rX-Injected: 1"}),
        CIMultiDict({"V": "a\nX-Injected: 1"}),
        CIMultiDict([("A", "ok"), ("V", "a\x00")]),  # refused whole, not up to the bad line
    ]
    for bad in (1, 1.5, None, b"v", bytearray(b"v"), ["v"]):
        cases += [CIMultiDict({"V": bad}), CIMultiDict([("A", "ok"), ("V", bad)])]
    for case in cases:
        assert same_as_aiohttp(case) == [], case
    assert header_lines(CIMultiDict({"A: B": "c", "V": "x"})) == b"A: B: c\r\nV: x\r\n"
    assert header_lines(CIMultiDict([("A", "ok"), ("V", "a\x00")])) is None
    assert header_lines({"V": b"v"}) is None  # type: ignore[dict-item]  # not text


def test_a_lone_surrogate_gives_none_not_an_exception() -> None:
    for headers in ({"V": "1\ud800"}, {"N\udfff": "v"}):
        assert header_lines(headers) is None


class _Formatted(str):
    """Text whose characters are harmless and whose `format()` is not."""

    __slots__ = ()

    def __format__(self, spec: str) -> str:
        return "x\r\nX-Injected: 1"


def test_what_is_written_is_what_was_checked() -> None:
    lines = header_lines({"V": _Formatted("ok")})
    assert lines is None or b"X-Injected" not in lines, lines
    assert lines in (None, aiohttps(CIMultiDict({"V": _Formatted("ok")}), "C"))


# -- versions a table gives, on the wire ------------------------------------------------------------

ODD = [
    "\u2028",
    "\u2029",
    "\u0085",
    "a\u2028X-Injected: 1",
    "a\u2029\u2028X-Injected: 1",
    "a\u0085X-Injected: 1",
    "\u00a0X-Injected: 1",
    "\tX-Injected: 1",
    "\ufeff1",
    "\u3000\u1680\u180e",
    "1\uff1a2",
    "X-Injected: 1",
    "\U0001f600" * 64,
]
CONTROL = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x7f", "\x00", "a\r\nX-Injected: 1"]


@pytest.fixture
async def odd_router(tmp_path: Path) -> AsyncIterator[tuple[Router, Runtime]]:
    """A router serving arith 1 and, at weight 0, arith in every `ODD` version."""
    runtime = Runtime()
    source = DirectorySource(tmp_path)
    router = Router(runtime, source)
    digest = source.add(module_bytes("arith"))
    entries = [ModuleEntry.model_validate({"module": "arith", "version": "1", "digest": digest})]
    entries += [
        ModuleEntry.model_validate({"module": "arith", "version": v, "digest": digest, "weight": 0}) for v in ODD
    ]
    async with serving_table(runtime, router, entries) as served_router:
        yield served_router


def _stdlib_get(port: int, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", EXECUTE.decode(), body=body, headers={"Content-Type": "application/json"})
        answer = connection.getresponse()
        return answer.status, answer.getheaders(), answer.read()
    finally:
        connection.close()


EXPECTED_NAMES = {"content-type", VERSION_HEADER.lower(), "content-length", "date", "server"}


async def test_odd_versions_are_written_in_one_piece_as_aiohttp_writes_them_and_read_back_whole(
    odd_router: tuple[Router, Runtime],
) -> None:
    router, runtime = odd_router
    cases = {repr(v): request(body=versioned(v)) for v in ODD}
    async with (
        served(router, runtime, signal=True) as (before, _, _),
        served(router, runtime, signal=False) as (
            port,
            _,
            kinds,
        ),
    ):
        for name, data in cases.items():
            assert normal(await exchange(port, data)) == normal(await exchange(before, data)), name
        assert kinds == ["PlainAnswer"] * len(ODD), kinds  # every answer went through `header_lines`
        async with aiohttp.ClientSession() as session:
            for version in ODD:
                async with session.post(f"http://127.0.0.1:{port}{EXECUTE.decode()}", data=versioned(version)) as got:
                    assert got.status == 200, version
                    assert {n.lower() for n in got.headers} == EXPECTED_NAMES, (version, got.headers)
                    assert got.headers.getall(VERSION_HEADER) == [version.strip(" \t")]  # OWS is not the value
                    assert (await got.json())["version"] == version
        for version in ODD:
            status, headers, body = await asyncio.to_thread(_stdlib_get, port, versioned(version))
            assert status == 200 and json.loads(body)["version"] == version, version
            assert sorted(n.lower() for n, _ in headers) == sorted(EXPECTED_NAMES), (version, headers)
            (value,) = [v for n, v in headers if n.lower() == VERSION_HEADER.lower()]
            assert value.encode("latin-1").decode() == version.strip(" \t"), (version, value)


def test_versions_no_header_can_carry_are_refused_before_a_table_holds_them() -> None:
    digest = "sha256:" + "0" * 64
    for bad in [*CONTROL, "1\ud800", "\udc80"]:
        with pytest.raises(ValidationError, match="version"):
            ModuleEntry.model_validate({"module": "m", "version": bad, "digest": digest})
    for bad in ["1.0.0\u2028", "1.0.0\r\nX: 1", "1.0.0\ud800", "1.0.0 ", "1.0.0\u0085"]:  # a fleet's: semver
        with pytest.raises(ValueError, match="semver"):
            check_semver(bad)


async def test_a_table_with_a_lone_surrogate_version_is_refused_over_the_wire(tmp_path: Path) -> None:
    (tmp_path / "arith.wat").write_text((MODULES / "arith.wat").read_text())
    digest = "sha256:" + "0" * 64
    put = b"PUT /api/v1/wasm/admin/table HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
    async with unshortcut(tmp_path) as port:
        for bad in ["1\ud800", "\udfff", *CONTROL]:
            entries = [{"module": "arith", "version": bad, "digest": digest}]
            table = json.dumps({"generation": 9, "modules": entries}).encode()  # "\\ud800": escaped, as JSON allows
            (refused,) = split_answers(await exchange(port, put % (len(table), table)))
            message = str(refused.json()["message"])  # a surrogate: "Invalid JSON" (pydantic's parser)
            assert refused.status == 400 and ("version" in message or "Invalid JSON" in message), (repr(bad), message)
            assert "x-injected" not in refused.headers
        (answer,) = split_answers(await exchange(port, request()))
        assert answer.status == 200 and answer.json()["version"] == "0.0.0"


# -- the control plane's long-poll answer -----------------------------------------------------------

IDS = ["a\r\nX-Injected: 1", "a\u2028X-Injected: 1", "a\u0085X-Injected: 1", "A" * 300]
PATH_IDS = [b"a%0D%0AX-Injected:%201", b"a%E2%80%A8X-Injected:%201", b"a%C2%85X-Injected:%201", b"a%00"]
TOKEN_CHARS = re.compile(r"[A-Za-z0-9._;-]+")


async def test_a_node_token_holder_gets_no_header_of_its_choosing(
    plane: Cluster,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t = _tokens(plane)
    port = int(plane.url.rsplit(":", 1)[1])
    for node_id in IDS:
        body = json.dumps({"id": node_id, "region": "r", "hostname": "h", "url": "http://x:9", "generation": 5})
        data = _req(
            b"POST", P, t["node"], extra=b"Content-Type: application/json\r\nConnection: close\r\n", body=body.encode()
        )
        ((status, headers, _),) = _answers(await exchange(port, data))
        assert 400 <= status < 500 and "X-Injected" not in headers, (repr(node_id), status, headers)
    for path_id in PATH_IDS:
        data = _req(b"GET", b"%s/%s/assignment?after=0" % (P, path_id), t["node"], extra=b"Connection: close\r\n")
        ((status, headers, _),) = _answers(await exchange(port, data))
        assert 400 <= status < 500 and "X-Injected" not in headers, (path_id, status, headers)
    mine, theirs = await _both(port, _poll(NODE, t["node"], extra=b"Connection: close\r\n"), monkeypatch)
    assert _normal(mine) == _normal(theirs)
    ((status, headers, _),) = _answers(mine)  # each header once (`_answers` checks)
    assert status == 200 and headers["Content-Type"] == "application/json", headers
    assert TABLE_BINDING_HEADER in headers and TABLE_SIGNATURE_HEADER in headers, headers
    for name in (TABLE_BINDING_HEADER, TABLE_SIGNATURE_HEADER):
        assert TOKEN_CHARS.fullmatch(headers[name]), (name, headers[name])
