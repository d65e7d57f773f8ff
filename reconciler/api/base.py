"""What every route file of the control-plane API shares: the dependencies object, the principal
seam, role checks, and one error shape.

A route file (`reconciler/api/modules.py` is the model) offers `setup(app, deps)` that adds its routes;
`reconciler/api/app.py` lists the route files. Handlers reach the dependencies with `deps(request)`
and the caller with `principal(request)`, raise `ApiError` for a client's mistake, and let store
errors propagate: the error middleware turns both into `{"error": code, "message": text}` with the
right status, and anything unexpected into a 500 that keeps the server up.

Authentication is a seam: `ApiDeps.authenticate` maps a request to a `Principal` (or raises
`ApiError(401, ...)`). The running control plane plugs in bearer JWTs (reconciler.api.security over
reconciler.api.auth); the default, kept for tests of a single route file, lets everyone in as an admin.
A handler decorated `@public` (`/health`) is never authenticated and sees the ANONYMOUS principal
(no roles). `ApiDeps.limiter`, when set, holds each user's request budget per endpoint class.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from aiohttp import web

from edge.protocol import loads, may_nest_deeper, nests_deeper
from reconciler.apply.registry import Registry
from reconciler.errors import ReconcilerError

ROLES = frozenset({"admin", "developer", "operator", "viewer"})
ANY_ROLE = ROLES


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str]


Authenticator = Callable[[web.Request], Awaitable[Principal]]


class Limiter(Protocol):
    async def admit(self, subject: str, bucket: str) -> float | None:
        """None when `subject` may make one more `bucket` request now; else seconds to wait. Awaited:
        a limiter shared by replicas asks the store."""


InUse = Callable[[], Collection[str] | Awaitable[Collection[str]]]


ANONYMOUS = Principal("anonymous", frozenset())
_PUBLIC_ATTRIBUTE = "__hotswap_public__"

_H = TypeVar("_H", bound=Callable[..., Any])


def public(handler: _H) -> _H:
    """Mark a handler as open to everyone (`/health`): it gets the ANONYMOUS principal and the
    authenticator is not consulted."""
    setattr(handler, _PUBLIC_ATTRIBUTE, True)
    return handler


def is_public(handler: object) -> bool:
    return bool(getattr(handler, _PUBLIC_ATTRIBUTE, False))


async def open_door(request: web.Request) -> Principal:
    """The authenticator used until the API issue brings tokens: everyone is a local admin."""
    return Principal("anonymous", frozenset({"admin"}))


def nothing_in_use() -> Collection[str]:
    return frozenset()


@dataclass(frozen=True)
class ApiDeps:
    """Everything the API's handlers need, built once by whoever starts the server.

    Add a field (with a default, so existing callers keep working) when a route file needs more.
    """

    registry: Registry
    modules_in_use: InUse = nothing_in_use  # module ids desired state or a rollout uses
    authenticate: Authenticator = open_door
    limiter: Limiter | None = None  # per-user, per-endpoint request budgets (reconciler.api.security)
    registered: Callable[[], None] = lambda: None  # told of every new module version (the controller's poke)


DEPS = web.AppKey("deps", ApiDeps)
PRINCIPAL = web.RequestKey("principal", Principal)


class ApiError(ReconcilerError):
    """A request the API refuses: `status` (4xx), a short `error` code, and a message for the caller."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


def bad_request(field: str, message: str) -> ApiError:
    """A 400 naming the part of the request at fault: `field: message`."""
    return ApiError(400, "bad_request", f"{field}: {message}", field)


def rate_limited(wait: float, what: str) -> ApiError:
    """A 429 for a caller that must wait `wait` seconds: `what`, then the whole seconds to wait, in
    the message and in Retry-After."""
    seconds = max(1, math.ceil(wait))
    return ApiError(429, "rate_limited", f"{what}; retry in {seconds}s", headers={"Retry-After": str(seconds)})


def deps(request: web.Request) -> ApiDeps:
    return request.app[DEPS]


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def require(request: web.Request, *roles: str) -> Principal:
    """The caller, if it holds one of `roles`; else 403 naming them."""
    who = principal(request)
    if who.roles.isdisjoint(roles):
        raise ApiError(403, "forbidden", f"{request.method} {request.path} needs one of the roles {', '.join(roles)}")
    return who


async def modules_in_use(request: web.Request) -> Collection[str]:
    found = deps(request).modules_in_use()
    return await found if inspect.isawaitable(found) else found


def error_body(error: str, message: str, **more: Any) -> dict[str, Any]:
    return {"error": error, "message": message, **more}


JSON_BODY_BYTES = 1 << 20  # any JSON body but a module upload


MAX_JSON_DEPTH = 64  # arrays and objects inside each other; WIT values and fleet specs need far fewer


async def read_body(request: web.Request, limit: int, what: str = "the request body") -> bytes:
    """The whole body however it arrives (one segment or many, chunked or not), at most `limit`
    bytes: 413 as soon as it is known to be larger, before the rest is read."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "payload_too_large", f"{what} ({request.content_length} bytes) is over {limit}")
    received = bytearray()
    async for chunk in request.content.iter_any():
        received += chunk
        if len(received) > limit:
            raise ApiError(413, "payload_too_large", f"{what} is larger than {limit} bytes")
    return bytes(received)


def parse_json(data: bytes | str, where: str = "body") -> Any:
    """JSON text as Python values; 400 naming `where` when it is not JSON or nests deeper than
    MAX_JSON_DEPTH (a body nested thousands deep would otherwise exhaust the stack later)."""
    try:
        value = loads(data) if isinstance(data, bytes) else json.loads(data)
    except RecursionError:
        raise bad_request(where, f"nested more than {MAX_JSON_DEPTH} levels deep") from None
    except ValueError as exc:
        raise bad_request(where, f"not valid JSON ({exc})") from None
    if may_nest_deeper(data, MAX_JSON_DEPTH) and nests_deeper(value, MAX_JSON_DEPTH):
        raise bad_request(where, f"nested more than {MAX_JSON_DEPTH} levels deep")
    return value


async def read_json(request: web.Request, limit: int = JSON_BODY_BYTES) -> Any:
    """The request's whole JSON body, at most `limit` bytes (413 beyond), 400 when it is not JSON."""
    return parse_json(await read_body(request, limit))


async def read_object(request: web.Request, limit: int = JSON_BODY_BYTES) -> dict[str, Any]:
    body = await read_json(request, limit)
    if not isinstance(body, dict):
        raise bad_request("body", "must be a JSON object")
    return body


MAX_PAGE = 1000


@dataclass(frozen=True)
class Page:
    """`?limit=&offset=&q=` of a list route: a window of the (filtered) list; None limit: the whole list."""

    limit: int | None
    offset: int
    q: str | None

    def matches(self, *texts: object) -> bool:
        """Whether `q` (case-insensitive) is in one of `texts`, or there is no `q`."""
        if not self.q:
            return True
        needle = self.q.casefold()
        return any(needle in str(t).casefold() for t in texts if t is not None)

    def window(self, key: str, items: list[Any]) -> dict[str, Any]:
        """`{key: items}`, and with a limit the window only, the `total` before it and the `offset`."""
        if self.limit is None:
            return {key: items}
        return {key: items[self.offset : self.offset + self.limit], "total": len(items), "offset": self.offset}


def query_whole(request: web.Request, name: str, low: int, high: int) -> int | None:
    """The query parameter `name` as a whole number from `low` to `high`; None when it is not given."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(name, f"{raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise bad_request(name, f"must be between {low} and {high}")
    return value


def page_of(request: web.Request) -> Page:
    limit = query_whole(request, "limit", 1, MAX_PAGE)
    offset = query_whole(request, "offset", 0, 2**62) or 0
    q = request.query.get("q") or None
    if q is not None and len(q) > 200:
        raise bad_request("q", "at most 200 characters")
    return Page(limit, offset, q)
