"""`POST /api/v1/wasm/execute` on the control plane: route a call to a healthy node that holds the module.

Where it sits: a convenience in front of the edge nodes (clients near a node call the node itself).
The handler picks the healthy nodes that serve the module (the version asked for, when one is),
starting at a rotating offset so calls spread, and forwards the body as is with a token the control
plane mints for that one node and call: `aud` is `hotswap-node/<id>`, it lives a minute, its `jti` is
the call's id, and it holds only the caller's execute roles. The caller's own API token never leaves
the control plane, so a node (or whatever answers at its URL) learns nothing it could replay against
the API or another node. A node is a candidate only for what the control plane assigned to it AND it
reports running: a report is a claim, and a node that claims a module it was not given gets no calls.
When a node cannot be reached, or answers that it does not hold the module (it was just moved), the
next node is tried; a module's own failure (a 5xx with
`error` trap/timeout/memory/cpu) is the answer, not a reason to retry. The node's answer comes back
with its status, body and `X-Hotswap-Version`, plus `X-Hotswap-Node`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import aiohttp
from aiohttp import web

from edge.protocol import MAX_ANSWER_BYTES
from reconciler.api.auth import node_audience
from reconciler.api.base import ApiError, bad_request, read_json, require
from reconciler.api.control import CONTROL, ControlDeps

EXECUTORS = ("developer", "admin")
EXECUTE_PATH = "/api/v1/wasm/execute"
EXECUTE_BODY_BYTES = 8 << 20
# The most of a node's answer read (a node answers at most MAX_ANSWER_BYTES): a node cannot make the
# control plane hold more.
ANSWER_BYTES = MAX_ANSWER_BYTES + (64 << 10)
NODE_TIMEOUT_SECONDS = 330.0  # the longest module timeout (300 s) and some
FORWARDED = ("Content-Type", "X-Hotswap-Version", "traceparent", "tracestate", "X-Hotswap-User")
TOKEN_SECONDS = 60.0  # a forwarded call's token: one node, one call, a minute


def setup(app: web.Application) -> None:
    app.router.add_post(EXECUTE_PATH, execute)
    app[_COUNTER] = _Rotor()
    app[_POOL] = _Pool()

    async def close_session(app: web.Application) -> None:
        await app[_POOL].close()

    app.on_cleanup.append(close_session)


class _Pool:
    """One HTTP client for all forwarded calls, opened on first use (the app is frozen by then)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=NODE_TIMEOUT_SECONDS, sock_connect=2)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class _Rotor:
    """Where the next call starts in the list of candidate nodes."""

    def __init__(self) -> None:
        self.calls = 0

    def next(self) -> int:
        self.calls += 1
        return self.calls


_COUNTER = web.AppKey("execute_counter", _Rotor)
_POOL = web.AppKey("execute_pool", _Pool)


def _token(control: ControlDeps, node_id: str, call: str, subject: str, roles: frozenset[str]) -> str | None:
    """A token for one node and one call, holding the caller's execute roles; None without an authority
    (then the node gets no token at all: the caller's own is never passed on)."""
    if control.authority is None:
        return None
    return control.authority.mint(
        subject, sorted(roles & set(EXECUTORS)), ttl_seconds=TOKEN_SECONDS, audience=node_audience(node_id), jti=call
    )


def _serves(entries: Any, module: str, version: str | None) -> bool:
    return any(
        m == module and (version is None or v == version) and (w > 0 or version is not None) for m, v, w in entries
    )


def candidates(control: ControlDeps, module: str, version: str | None) -> list[tuple[str, str]]:
    """(node id, url) of healthy nodes that were assigned the module (that version, when given) and
    report serving it: a node's report alone never draws calls."""
    hub = control.hub
    found = []
    for view in hub.view():
        if view.status != "Healthy" or not view.url:
            continue
        table = hub.table(view.id)
        if table is None or not _serves(((e.module, e.version, e.weight) for e in table.modules), module, version):
            continue
        if _serves(((m, v, w) for m, v, _, w in view.running), module, version):
            found.append((view.id, view.url))
    return found


async def execute(request: web.Request) -> web.StreamResponse:
    who = require(request, *EXECUTORS)
    control: ControlDeps = request.app[CONTROL]
    body = await read_json(request, EXECUTE_BODY_BYTES)
    if not isinstance(body, dict):
        raise bad_request("body", 'must be a JSON object {"module", "function", "args", "version"?}')
    module = body.get("module")
    if not isinstance(module, str) or not module:
        raise bad_request("module", "is required (a string)")
    version = request.headers.get("X-Hotswap-Version") or body.get("version")
    if version is not None and not isinstance(version, str):
        raise bad_request("version", "must be a string")
    nodes = candidates(control, module, version)
    if not nodes:
        what = f"{module}@{version}" if version else module
        revision = control.controller.source.latest
        if revision is None or revision.fleet is None or module not in revision.fleet.modules:
            raise ApiError(404, "not_found", f"module {module!r} is not in the fleet; no node serves it")
        raise ApiError(503, "no_node", f"no healthy node serves {what} now", headers={"Retry-After": "1"})
    start = request.app[_COUNTER].next() % len(nodes)
    ordered = nodes[start:] + nodes[:start]
    call = uuid.uuid4().hex
    headers = {name: request.headers[name] for name in FORWARDED if name in request.headers}
    headers["Content-Type"] = "application/json"
    data = json.dumps(body).encode()
    failures: list[str] = []
    last: web.Response | None = None
    session = request.app[_POOL].session()
    for node_id, url in ordered:
        token = _token(control, node_id, call, who.subject, who.roles)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            async with session.post(f"{url.rstrip('/')}{EXECUTE_PATH}", data=data, headers=headers) as answer:
                payload = await _bounded(answer)
                status = answer.status
                version_header = answer.headers.get("X-Hotswap-Version")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            failures.append(f"{node_id}: {type(exc).__name__}")
            continue
        if payload is None:  # the call ran: running it again on another node would repeat its effects
            raise ApiError(502, "answer_too_large", f"{node_id} answered more than {ANSWER_BYTES} bytes; not relayed")
        out = {"X-Hotswap-Node": node_id}
        if version_header:
            out["X-Hotswap-Version"] = version_header
        last = web.Response(status=status, body=payload, content_type="application/json", headers=out)
        if status in (404, 503) and _moved(payload):
            failures.append(f"{node_id}: {status}")
            continue
        return last
    if last is not None:
        return last  # every node said the same: that is the answer
    raise ApiError(502, "nodes_unreachable", f"every node serving {module} failed: {'; '.join(failures)}")


async def _bounded(answer: aiohttp.ClientResponse) -> bytes | None:
    """The node's answer, or None when it is over ANSWER_BYTES (the rest is never read)."""
    if answer.content_length is not None and answer.content_length > ANSWER_BYTES:
        return None
    received = bytearray()
    async for chunk in answer.content.iter_any():
        received += chunk
        if len(received) > ANSWER_BYTES:
            return None
    return bytes(received)


def _moved(payload: bytes) -> bool:
    """The node no longer holds the module (or is shutting down): another node may."""
    try:
        data: Any = json.loads(payload)
    except ValueError:
        return True
    return isinstance(data, dict) and data.get("error") in ("unknown_module", "not_found", "unavailable", None)
