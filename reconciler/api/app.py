"""The control plane's HTTP application: one aiohttp app, built from one `ApiDeps` and a list of route
files.

`hotswap serve` (and the tests) call `create_app(deps)` and run it. Each entry of `ROUTE_FILES` is a
route file's `setup(app, deps)`; adding an endpoint group means writing `reconciler/api/<group>.py`
with a `setup` and appending it here. Three middlewares wrap every handler: `errors` (one JSON error
shape, no request can take the server down), `authenticate` (the principal seam, see base.py) and
`rate_limit` (per-user budgets, see security.py); every response carries HSTS and hardening headers.
Request bodies are capped at MAX_BODY_BYTES (module uploads check their own, smaller, limits).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler

from reconciler.api import modules as module_routes
from reconciler.api.base import ANONYMOUS, DEPS, PRINCIPAL, ApiDeps, ApiError, deps, error_body, is_public
from reconciler.api.security import rate_limit, security_headers
from reconciler.store.errors import (
    BlobCorruptedError,
    ConflictError,
    InvalidModuleError,
    ModuleInUseError,
    NotFoundError,
    StoreError,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024

RouteSetup = Callable[[web.Application, ApiDeps], None]
ROUTE_FILES: tuple[RouteSetup, ...] = (module_routes.setup,)


def _json_error(status: int, error: str, message: str, **more: object) -> web.Response:
    return web.json_response(error_body(error, message, **more), status=status)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes `{"error", "message"}` with a fitting status; nothing escapes."""
    try:
        return await handler(request)
    except ApiError as exc:
        more = {"field": exc.field} if exc.field is not None else {}
        response = _json_error(exc.status, exc.error, exc.message, **more)
        response.headers.update(exc.headers)
        if exc.headers.get("Connection", "").lower() == "close":
            response.force_close()  # aiohttp decides keep-alive itself: say it, not only the header
        return response
    except InvalidModuleError as exc:
        return _json_error(400, "invalid_module", exc.message, field=exc.field)
    except NotFoundError as exc:
        return _json_error(404, "not_found", exc.message)
    except ModuleInUseError as exc:
        return _json_error(409, "in_use", exc.message)
    except ConflictError as exc:
        return _json_error(409, "conflict", exc.message)
    except BlobCorruptedError as exc:
        log.error("refused to serve a corrupted binary: %s", exc.message)
        return _json_error(500, "corrupted", exc.message)
    except StoreError as exc:
        log.exception("store failure on %s %s", request.method, request.path)
        return _json_error(503, "store_unavailable", exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _json_error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
        if "Allow" in exc.headers:  # a 405 says which methods the path takes (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception as exc:
        if isinstance(exc, ConnectionError) and (request.transport is None or request.transport.is_closing()):
            # The client's connection ended before its body was read (a heartbeat that waited its turn)
            # or while its answer was written (a download it stopped reading, then reset): no one to
            # answer and nothing failed here; at ERROR, any client could write a traceback a request.
            log.debug("%s %s: the client's connection ended before it was answered", request.method, request.path)
            return _json_error(400, "client_gone", "the connection ended before the request was answered")
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _json_error(500, "internal", "internal error; the control plane's log has the details")


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The caller's principal for every handler, except those marked `@public`."""
    if is_public(handler):
        request[PRINCIPAL] = ANONYMOUS
    else:
        request[PRINCIPAL] = await deps(request).authenticate(request)
    return await handler(request)


def create_app(api_deps: ApiDeps, routes: Sequence[RouteSetup] = ROUTE_FILES) -> web.Application:
    """The API application over `api_deps`, with the route files given (all of them by default)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[errors, authenticate, rate_limit])
    app[DEPS] = api_deps
    app.on_response_prepare.append(security_headers)
    for setup in routes:
        setup(app, api_deps)
    return app
