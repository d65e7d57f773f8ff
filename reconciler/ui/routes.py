"""The web console's routes on the control plane: its static files, sign-in, and the live stream.

    GET    /ui                       303 to /ui/
    GET    /ui/                      index.html (public)
    GET    /ui/{name}                a file under reconciler/ui/static (public; .html .js .css .svg
                                     .png .txt .map only, never outside the folder)
    POST   /ui/session               {"token"} -> session JSON + the session cookie (public, rate-limited)
    GET    /ui/session               the session JSON from the cookie (401 without one)
    DELETE /ui/session               sign out: the cookie is cleared (a live session needs X-CSRF-Token)
    GET    /ui/login/{code}          a one-time login link: the cookie, then 303 to /ui/ (401 page when
                                     used or expired)
    GET    /ui/events                text/event-stream of changes (any role; cookie or bearer)

Where it sits: the control plane (reconciler/server.py) calls `setup(app, UiDeps)` after the API's
route files; sessions and their CSRF rules are reconciler/ui/sessions.py, the stream's sources
reconciler/ui/events.py. Every /ui response carries the console's Content-Security-Policy.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from reconciler.api.base import ANY_ROLE, ApiError, public, rate_limited, read_object, require
from reconciler.api.security import RateLimiter, RateLimits, leaves_node_answers
from reconciler.ui.events import KEEPALIVE_SECONDS, Broadcaster, StreamsFullError, encode
from reconciler.ui.sessions import LoginLinks, Session, SessionError, Sessions, check_write, from_elsewhere, own_origin

STATIC = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".map": "application/json; charset=utf-8",
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SIGN_IN_BODY_BYTES = 16 * 1024
SIGN_INS_PER_MINUTE = 30  # per client address: sign-ins and login links together
MAX_NAME = 256
EXPIRED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hotswap: sign-in link</title></head>
<body><main><h1>This sign-in link cannot be used</h1>
<p>It was used already or has expired. Each link opens one session, once.</p>
<p>Get a token with <code>hotswap token --role viewer</code> (or the admin token <code>hotswap up</code>
printed) and paste it on the <a href="/ui/">sign-in page</a>.</p></main></body></html>
"""


@dataclass
class UiDeps:
    """What the console's routes need from the running control plane."""

    sessions: Sessions
    links: LoginLinks
    broadcaster: Broadcaster
    static: Path = STATIC
    limiter: RateLimiter = field(
        default_factory=lambda: RateLimiter(RateLimits(other=SIGN_INS_PER_MINUTE, window_seconds=60.0))
    )


UI = web.AppKey("ui", UiDeps)


def ui_of(request: web.Request) -> UiDeps:
    return request.app[UI]


# -- static files ---------------------------------------------------------------------------------


def static_path(root: Path, name: str) -> Path | None:
    """The file `name` names under `root`, or None when it is not a console file one may read."""
    if not name or len(name) > MAX_NAME or "\\" in name or "\0" in name or name.startswith("/"):
        return None
    parts = name.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return None
    path = root.joinpath(*parts)
    if path.suffix not in CONTENT_TYPES:
        return None
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not resolved.is_relative_to(root.resolve()) or not resolved.is_file():
        return None  # a symlink out of the folder, or a folder
    return resolved


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


async def _serve(request: web.Request, name: str) -> web.Response:
    path = static_path(ui_of(request).static, name)
    data = await asyncio.to_thread(_read, path) if path is not None else None
    if path is None or data is None:
        raise ApiError(404, "not_found", f"{request.path} is not a file of the console")
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache", "Content-Type": CONTENT_TYPES[path.suffix]}
    if etag in [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]:
        return web.Response(status=304, headers=headers)
    return web.Response(body=data, headers=headers)


async def index(request: web.Request) -> web.Response:
    return await _serve(request, "index.html")


async def static_file(request: web.Request) -> web.Response:
    return await _serve(request, request.match_info["name"])


async def to_index(request: web.Request) -> web.Response:
    raise web.HTTPSeeOther("/ui/")


# -- sessions -------------------------------------------------------------------------------------


def _limit(request: web.Request) -> None:
    """Sign-in attempts (tokens and link codes) per client address."""
    wait = ui_of(request).limiter.take(request.remote or "unknown", "other")
    if wait is not None:
        raise rate_limited(wait, "too many sign-in attempts")


def _session_response(ui: UiDeps, session: Session, value: str) -> web.Response:
    response = web.json_response(session.to_json())
    ui.sessions.cookie(response, value, session)
    return response


async def sign_in(request: web.Request) -> web.Response:
    if from_elsewhere(request):  # another site's form would set its token's session in this browser
        raise ApiError(403, "csrf", f"sign in from the console's own page ({own_origin(request)}/ui/)")
    _limit(request)
    body = await read_object(request, SIGN_IN_BODY_BYTES)
    token = body.get("token")
    if not isinstance(token, str) or not token.strip():
        raise ApiError(400, "bad_request", 'token: send {"token": "<API token>"} (hotswap token --role ROLE)', "token")
    ui = ui_of(request)
    try:
        session, value = ui.sessions.sign_in(token.strip())
    except SessionError as exc:
        raise ApiError(401, "unauthorized", str(exc)) from None
    return _session_response(ui, session, value)


async def current(request: web.Request) -> web.Response:
    try:
        session = ui_of(request).sessions.from_request(request)
    except SessionError as exc:
        raise ApiError(401, "unauthorized", str(exc)) from None
    return web.json_response(session.to_json())


async def sign_out(request: web.Request) -> web.Response:
    """Clear the cookie; a live session is signed out only with its CSRF header (no cross-site logout)."""
    sessions = ui_of(request).sessions
    try:
        session: Session | None = sessions.from_request(request)
    except SessionError:
        session = None
    if session is not None:
        check_write(request, session)
        sessions.revoke(session)
    response = web.Response(status=204)
    sessions.clear(response)
    return response


async def login(request: web.Request) -> web.Response:
    _limit(request)
    ui = ui_of(request)
    link = ui.links.consume(request.match_info["code"])
    if link is None:
        return web.Response(status=401, text=EXPIRED_PAGE, content_type="text/html", charset="utf-8")
    session, value = ui.sessions.open(link.subject, link.roles, math.inf)
    response = web.HTTPSeeOther("/ui/")
    ui.sessions.cookie(response, value, session)
    raise response


# -- the live stream ------------------------------------------------------------------------------


async def events(request: web.Request) -> web.StreamResponse:
    who = require(request, *ANY_ROLE)
    broadcaster = ui_of(request).broadcaster
    try:
        subscriber = broadcaster.subscribe(who.subject)
    except StreamsFullError as exc:
        raise ApiError(429, "too_many_streams", str(exc), headers={"Retry-After": "5"}) from None
    try:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        hello = {"kind": "hello", "subject": who.subject, "roles": sorted(who.roles)}
        await response.write(b"retry: 1000\n" + encode(hello))
        while True:
            try:
                data = await subscriber.next(KEEPALIVE_SECONDS)
            except EOFError:
                break
            await response.write(data if data is not None else b": keepalive\n\n")
        return response
    finally:
        broadcaster.unsubscribe(subscriber)


# -- wiring ---------------------------------------------------------------------------------------


@leaves_node_answers  # /ui paths only
async def console_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The console's own Content-Security-Policy on every /ui answer (the API's forbids everything)."""
    if request.path == "/ui" or request.path.startswith("/ui/"):
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"


def setup(app: web.Application, ui: UiDeps) -> None:
    """Add the console's routes to the control plane's app (the catch-all file route last)."""
    app[UI] = ui
    app.on_response_prepare.append(console_headers)
    app.router.add_get("/ui", public(to_index))
    app.router.add_get("/ui/", public(index))
    app.router.add_post("/ui/session", public(sign_in))
    app.router.add_get("/ui/session", public(current))
    app.router.add_delete("/ui/session", public(sign_out))
    app.router.add_get("/ui/login/{code}", public(login))
    app.router.add_get("/ui/events", events)
    app.router.add_get("/ui/{name:.+}", public(static_file))
