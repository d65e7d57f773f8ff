"""The API's guards: bearer-token authentication, per-user rate limits, security headers, TLS.

Where it sits: `create_app` (reconciler/api/app.py) installs `rate_limit` after `authenticate` and
`security_headers` on every response; the control plane (reconciler/server.py) plugs
`bearer(authority)` into `ApiDeps.authenticate` and a `RateLimiter` into `ApiDeps.limiter`, and
serves over TLS with `tls_context(cert, key)` when given a certificate.

Rate limits are token buckets per (user, endpoint class), refilled continuously: `limit` requests
per `window_seconds`, at most `limit` at once. The classes and the spec's production defaults:

    registration   POST /api/v1/wasm/modules                                  10 / min / user
    deployment     POST /api/v1/wasm/deployments, .../{id}/execute,           20 / min / user
                   .../{id}/rollback, POST /interfaces, .../{id}/approve
    execution      POST /api/v1/wasm/execute                                1000 / min / user
    other          everything else                                    unlimited unless set

A refused request gets 429 with `Retry-After` (whole seconds until one request fits again).

Replicas on one PostgreSQL share one budget: `limiter_for(store, limits)` gives them a
`SharedRateLimiter`, whose buckets are rows of the state store taken from in one statement (one
round trip per limited request, reconciler.store.ratelimits); with SQLite (one process) it gives the
in-memory `RateLimiter`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict

from edge.onepiece import OnePieceAnswer, header_lines
from reconciler.api.auth import TokenAuthority, TokenError
from reconciler.api.base import ApiError, Authenticator, Principal, deps, principal, rate_limited
from reconciler.store.ratelimits import SharedBuckets
from reconciler.store.state import StateStore

BUCKETS: Mapping[tuple[str, str], str] = {
    ("POST", "/api/v1/wasm/modules"): "registration",
    ("POST", "/api/v1/wasm/deployments"): "deployment",
    ("POST", "/api/v1/wasm/deployments/{id}/execute"): "deployment",
    ("POST", "/api/v1/wasm/deployments/{id}/rollback"): "deployment",
    ("POST", "/api/v1/wasm/interfaces"): "deployment",
    ("POST", "/api/v1/wasm/interfaces/{id}/approve"): "deployment",
    ("POST", "/api/v1/wasm/execute"): "execution",
}
PrepareReceiver = Callable[[web.Request, web.StreamResponse], Awaitable[None]]
SECURITY_HEADERS: Mapping[str, str] = {
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
}
TOKEN_CACHE_SIZE = 4096
# The `jti` of a web console session (reconciler.ui.sessions): such a token is accepted only from the
# session cookie, where writes need the CSRF header; as a bearer token it would skip that check.
SESSION_JTI_PREFIX = "hotswap-ui-session."


@dataclass(frozen=True)
class RateLimits:
    """Requests per `window_seconds` per user for each endpoint class; None means no limit."""

    registration: int | None = 10
    deployment: int | None = 20
    execution: int | None = 1000
    other: int | None = None
    window_seconds: float = 60.0

    def limit(self, bucket: str) -> int | None:
        value = getattr(self, bucket, None)
        return value if isinstance(value, int) else None

    def scaled(self, factor: int) -> RateLimits:
        """Every limit times `factor` (`hotswap up` raises them for development)."""

        def times(value: int | None) -> int | None:
            return None if value is None else value * factor

        return replace(
            self,
            registration=times(self.registration),
            deployment=times(self.deployment),
            execution=times(self.execution),
            other=times(self.other),
        )

    def with_overrides(self, overrides: Mapping[str, int | None]) -> RateLimits:
        """These limits with some classes set (`--rate-limit deployment=50`); ValueError on an unknown class."""
        for name in overrides:
            if name not in ("registration", "deployment", "execution", "other"):
                raise ValueError(f"unknown rate limit {name!r} (registration, deployment, execution, other)")
        return replace(self, **overrides)  # type: ignore[arg-type]


def parse_rate_limit(text: str) -> tuple[str, int | None]:
    """`deployment=50` or `other=off` -> ("deployment", 50) / ("other", None)."""
    name, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"{text!r}: expected CLASS=N, e.g. deployment=50")
    if value.strip().lower() in ("off", "none", "unlimited"):
        return name.strip(), None
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{text!r}: {value!r} is not a whole number") from None
    if number < 1:
        raise ValueError(f"{text!r}: a limit must be at least 1 (or `off`)")
    return name.strip(), number


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """Token buckets per (subject, class); `clock` is injected so tests need no sleeping."""

    limits: RateLimits = field(default_factory=RateLimits)
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[tuple[str, str], _Bucket] = field(default_factory=dict)

    async def admit(self, subject: str, bucket: str) -> float | None:
        return self.take(subject, bucket)

    def take(self, subject: str, bucket: str) -> float | None:
        limit = self.limits.limit(bucket)
        if limit is None:
            return None
        rate = limit / self.limits.window_seconds
        now = self.clock()
        key = (subject, bucket)
        found = self._buckets.get(key)
        tokens = float(limit) if found is None else min(float(limit), found.tokens + (now - found.at) * rate)
        if len(self._buckets) > 100_000:
            self._forget_full(now)
        if tokens >= 1.0:
            self._buckets[key] = _Bucket(tokens - 1.0, now)
            return None
        self._buckets[key] = _Bucket(tokens, now)
        return (1.0 - tokens) / rate

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled (they hold nothing a fresh bucket would not)."""
        for key, bucket in list(self._buckets.items()):
            limit = self.limits.limit(key[1]) or 0
            if bucket.tokens + (now - bucket.at) * limit / self.limits.window_seconds >= limit:
                del self._buckets[key]


@dataclass
class SharedRateLimiter:
    """Token buckets in the state store, so every replica spends one budget. The clock is wall time
    (replicas compare it); `admit` asks the store from a worker thread."""

    buckets: SharedBuckets
    limits: RateLimits = field(default_factory=RateLimits)
    clock: Callable[[], float] = time.time

    async def admit(self, subject: str, bucket: str) -> float | None:
        """None when `subject` may make one more `bucket` request now; else seconds to wait."""
        limit = self.limits.limit(bucket)
        if limit is None:
            return None
        return await asyncio.to_thread(self._take, subject, bucket, limit)

    def take(self, subject: str, bucket: str) -> float | None:
        """As `admit`, blocking (for callers outside an event loop)."""
        limit = self.limits.limit(bucket)
        return None if limit is None else self._take(subject, bucket, limit)

    def _take(self, subject: str, bucket: str, limit: int) -> float | None:
        rate = limit / self.limits.window_seconds
        taken = self.buckets.take(subject, bucket, limit, rate, self.clock())
        return None if taken.granted else (1.0 - taken.tokens) / rate


def limiter_for(store: StateStore, limits: RateLimits) -> RateLimiter | SharedRateLimiter:
    """One budget for all replicas on PostgreSQL; the in-memory buckets otherwise."""
    if store.dialect.name == "postgresql":
        return SharedRateLimiter(SharedBuckets(store), limits)
    return RateLimiter(limits)


def bucket_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else request.path
    return BUCKETS.get((request.method, path), "other")


@web.middleware
async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """429 with Retry-After once the caller has spent its budget for this endpoint class."""
    limiter = deps(request).limiter
    who = principal(request)
    if limiter is not None and who.roles:
        bucket = bucket_of(request)
        wait = await limiter.admit(who.subject, bucket)
        if wait is not None:
            raise rate_limited(wait, f"{who.subject} has made too many {bucket} requests")
    return await handler(request)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """HSTS and the usual hardening headers on every answer (an `on_response_prepare` signal)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")


# What `security_headers` adds to an answer of the node protocol, as the lines an answer written in one
# piece ends its head with (`edge.onepiece`); and the `on_response_prepare` receivers such an answer
# accounts for: that one, and those that leave the node protocol's answers alone (`leaves_node_answers`).
HARDENING_LINES = header_lines(CIMultiDict({**SECURITY_HEADERS, "Cache-Control": "no-store"}))
NODE_ANSWER_RECEIVERS: set[object] = {security_headers}


def leaves_node_answers(receiver: PrepareReceiver) -> PrepareReceiver:
    """Mark an `on_response_prepare` receiver that changes no answer of the node protocol (it acts on
    other paths only), so that those answers may still be written in one piece."""
    NODE_ANSWER_RECEIVERS.add(receiver)
    return receiver


def one_piece(request: web.Request, body: bytes, head: bytes | None) -> web.StreamResponse | None:
    """A node-protocol 200 of `body` written in one piece (`edge.onepiece`) after the header lines
    `head`, the hardening lines last, as `web.Response` and `security_headers` write it (a HEAD's
    without the body); None where it cannot be (lines aiohttp refuses, or a prepare receiver it does
    not account for)."""
    if head is None or HARDENING_LINES is None:
        return None
    if not all(receiver in NODE_ANSWER_RECEIVERS for receiver in request.app.on_response_prepare):
        return None
    return cast(web.StreamResponse, OnePieceAnswer(body, head, HARDENING_LINES))  # aiohttp takes it alike


def unauthorized(message: str, *, invalid: bool) -> ApiError:
    challenge = 'Bearer realm="hotswap"'
    if invalid:
        quoted = message.replace('"', "'")
        challenge += f', error="invalid_token", error_description="{quoted}"'
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


def bearer(authority: TokenAuthority, clock: Callable[[], float] = time.time) -> Authenticator:
    """The authenticator of a running control plane: `Authorization: Bearer <JWT>` on every call."""
    verified: dict[str, tuple[Principal, float]] = {}

    async def authenticate(request: web.Request) -> Principal:
        header = request.headers.get("Authorization")
        if header is None:
            raise unauthorized(
                f"{request.method} {request.path} needs `Authorization: Bearer <token>` "
                "(a development token: hotswap token --role ROLE)",
                invalid=False,
            )
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("the Authorization header must be `Bearer <token>`", invalid=True)
        cached = verified.get(token)
        if cached is not None and cached[1] > clock():
            return cached[0]
        try:
            claims = authority.verify(token)
        except TokenError as exc:
            raise unauthorized(str(exc), invalid=True) from None
        if str(claims.raw.get("jti", "")).startswith(SESSION_JTI_PREFIX):
            raise unauthorized("a console session is not a bearer token", invalid=True)
        who = Principal(claims.subject, claims.roles)
        if len(verified) >= TOKEN_CACHE_SIZE:
            verified.clear()
        verified[token] = (who, claims.expires)
        return who

    return authenticate


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context for HTTPS: the certificate chain and key given, TLS 1.3 only."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert, key)
    return context
