"""Console sessions: a cookie that stands for an API token, its CSRF check, and one-time login links.

Where it sits: the web console (reconciler/ui) signs a person in at `POST /ui/session` with an API
token; the control plane (reconciler/server.py) wraps its bearer authenticator in `with_sessions`,
so every API route and `/ui/events` also accepts the cookie. Bearer wins when both are sent.

The cookie's value is a JWT minted by the plane's `TokenAuthority` (so every replica sharing the
keys accepts it) for the API audience, with the person's API roles and a `jti` of
`SESSION_JTI_PREFIX + csrf`: the marker says "only from the cookie" (the bearer authenticator
refuses it, reconciler.api.security) and the rest is the CSRF secret the page echoes in
`X-CSRF-Token` on every write. The cookie is HttpOnly and SameSite=Strict; a cookie write must also
come from the plane's own origin when the browser names one.

Login links (`hotswap up` prints one) are codes of 32 random bytes; only their SHA-256 is kept, in
memory, and each opens one session once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from reconciler.api.auth import API_ROLES, TokenAuthority, TokenError
from reconciler.api.base import ApiError, Authenticator, Principal
from reconciler.api.security import SESSION_JTI_PREFIX, unauthorized
from reconciler.errors import ReconcilerError

SESSION_COOKIE = "hotswap_session"
CSRF_HEADER = "X-CSRF-Token"
MAX_SESSION_SECONDS = 12 * 3600.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_LINKS = 1000  # outstanding login links; the oldest go first
MAX_REVOKED = 10_000


@dataclass(frozen=True)
class Session:
    """One signed-in person: who, with which API roles, the CSRF secret, and when it ends."""

    subject: str
    roles: frozenset[str]
    csrf: str
    expires: float
    jti: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "roles": sorted(self.roles), "csrf": self.csrf, "expiresAt": int(self.expires)}


class SessionError(ReconcilerError):
    """A cookie or token that opens no session; the message says why (for the 401)."""


@dataclass
class Sessions:
    """Opens sessions from API tokens or login links and reads them back from the cookie."""

    authority: TokenAuthority
    secure: bool = False  # the plane serves HTTPS: the cookie is Secure
    clock: Callable[[], float] = time.time
    _revoked: dict[str, float] = field(default_factory=dict)  # jti -> expiry, signed out on this replica

    def open(self, subject: str, roles: Iterable[str], expires: float) -> tuple[Session, str]:
        """A new session for `subject` until `expires` (at most 12 h from now) and its cookie value."""
        api_roles = sorted(set(roles) & set(API_ROLES))
        if not api_roles:
            raise SessionError("the token holds no API role (admin, developer, operator, viewer)")
        now = self.clock()
        until = min(expires, now + MAX_SESSION_SECONDS)
        if until <= now:
            raise SessionError("the token has expired")
        csrf = secrets.token_urlsafe(24)
        jti = SESSION_JTI_PREFIX + csrf
        value = self.authority.mint(subject, api_roles, ttl_seconds=until - now, now=now, jti=jti)
        return Session(subject, frozenset(api_roles), csrf, float(int(now + (until - now))), jti), value

    def sign_in(self, token: str) -> tuple[Session, str]:
        """A session for the bearer of an API token (not a session token, not a node's)."""
        try:
            claims = self.authority.verify(token)
        except TokenError as exc:
            raise SessionError(str(exc)) from None
        if str(claims.raw.get("jti", "")).startswith(SESSION_JTI_PREFIX):
            raise SessionError("a session cookie is not an API token; sign in with an API token")
        return self.open(claims.subject, claims.roles, claims.expires)

    def read(self, value: str) -> Session:
        """The session a cookie value stands for; SessionError when it is not one (any more)."""
        try:
            claims = self.authority.verify(value)
        except TokenError as exc:
            raise SessionError(str(exc)) from None
        jti = str(claims.raw.get("jti", ""))
        if not jti.startswith(SESSION_JTI_PREFIX):
            raise SessionError("the cookie does not hold a console session")
        if jti in self._revoked:
            raise SessionError("this session was signed out")
        if claims.expires <= self.clock():  # the authority allows clock leeway; a session ends on time
            raise SessionError("the session has expired; sign in again")
        roles = claims.roles & set(API_ROLES)
        return Session(claims.subject, roles, jti.removeprefix(SESSION_JTI_PREFIX), claims.expires, jti)

    def revoke(self, session: Session) -> None:
        now = self.clock()
        for jti in [j for j, until in self._revoked.items() if until <= now]:
            del self._revoked[jti]
        if len(self._revoked) < MAX_REVOKED:
            self._revoked[session.jti] = session.expires

    def cookie(self, response: web.StreamResponse, value: str, session: Session) -> None:
        """Set the session cookie on `response`."""
        max_age = max(0, int(session.expires - self.clock()))
        response.set_cookie(
            SESSION_COOKIE, value, max_age=max_age, path="/", httponly=True, samesite="Strict", secure=self.secure
        )

    def clear(self, response: web.StreamResponse) -> None:
        response.set_cookie(
            SESSION_COOKIE, "", max_age=0, path="/", httponly=True, samesite="Strict", secure=self.secure
        )

    def from_request(self, request: web.Request) -> Session:
        value = request.cookies.get(SESSION_COOKIE)
        if not value:
            raise SessionError("no console session; sign in with an API token (hotswap token --role ROLE)")
        return self.read(value)


def own_origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}".lower()


def from_elsewhere(request: web.Request) -> bool:
    """Whether the browser says the request comes from another origin: an `Origin` that is not this
    one (`null` included), or `Sec-Fetch-Site` cross-site or same-site (a sibling port of 127.0.0.1)."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() != own_origin(request):
        return True
    return request.headers.get("Sec-Fetch-Site", "").lower() in ("cross-site", "same-site")


def check_write(request: web.Request, session: Session) -> None:
    """A cookie-authenticated write carries the session's CSRF secret and comes from this origin."""
    if request.method in SAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise ApiError(403, "csrf", f"a write with the session cookie needs the session's {CSRF_HEADER} header")
    if from_elsewhere(request):
        raise ApiError(403, "csrf", f"a write with the session cookie must come from {own_origin(request)}")


def with_sessions(bearer: Authenticator, sessions: Sessions) -> Authenticator:
    """`bearer`, or the session cookie when the request has no Authorization header."""

    async def authenticate(request: web.Request) -> Principal:
        if "Authorization" in request.headers or SESSION_COOKIE not in request.cookies:
            return await bearer(request)
        try:
            session = sessions.from_request(request)
        except SessionError as exc:
            raise unauthorized(str(exc), invalid=True) from None
        check_write(request, session)
        return Principal(session.subject, session.roles)

    return authenticate


@dataclass(frozen=True)
class _Link:
    subject: str
    roles: tuple[str, ...]
    expires: float


@dataclass
class LoginLinks:
    """One-time codes that open a session: only each code's SHA-256 is kept, and only until used."""

    clock: Callable[[], float] = time.time
    _links: dict[str, _Link] = field(default_factory=dict)

    @staticmethod
    def _key(code: str) -> str:
        return hashlib.sha256(code.encode()).hexdigest()

    def create(self, subject: str, roles: Iterable[str], ttl: float) -> str:
        now = self.clock()
        for key in [k for k, link in self._links.items() if link.expires <= now]:
            del self._links[key]
        while len(self._links) >= MAX_LINKS:
            del self._links[next(iter(self._links))]
        code = secrets.token_urlsafe(32)
        self._links[self._key(code)] = _Link(subject, tuple(sorted(set(roles))), now + ttl)
        return code

    def consume(self, code: str) -> _Link | None:
        """The link's grant, once; None when the code is unknown, used or expired."""
        link = self._links.pop(self._key(code), None)
        if link is None or link.expires <= self.clock():
            return None
        return link
