"""`POST /api/v1/wasm/webhook`: a forge says "the repository changed"; the Git source looks again.

Where it sits: the control-plane app mounts the handler this factory makes
(`app.router.add_post(WEBHOOK_PATH, webhook_handler(secret, source.trigger, branch=...))`). The
request only wakes the Git source: it carries a key, not state, and the next sync reads Git itself,
so a forged or replayed payload can at most cause one extra fetch, and only with the secret.

Authentication is HMAC-SHA256 of the raw body with a shared secret, in GitHub's header
`X-Hub-Signature-256: sha256=<hex>` or the generic `X-Hotswap-Signature: sha256=<hex>` (the bare hex
is accepted too). No or wrong signature: 401. After that the payload is read for a branch (GitHub's
`ref: refs/heads/main`, or a generic `{"ref": ...}` / `{"branch": ...}`): a push to another branch,
or GitHub's `ping` event, answers 202/200 without triggering; anything else triggers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable

from aiohttp import web

__all__ = ["MAX_BODY", "SIGNATURE_HEADERS", "WEBHOOK_PATH", "sign", "webhook_handler"]

WEBHOOK_PATH = "/api/v1/wasm/webhook"
SIGNATURE_HEADERS = ("X-Hub-Signature-256", "X-Hotswap-Signature")
MAX_BODY = 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def sign(secret: bytes | str, body: bytes) -> str:
    """The header value a sender puts on `body`: `sha256=<hex HMAC-SHA256>`."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def _error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


def _branch_of(payload: object) -> str | None:
    if not isinstance(payload, dict):
        return None
    ref = payload.get("ref")
    if isinstance(ref, str) and ref:
        return ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else ref
    branch = payload.get("branch")
    return branch if isinstance(branch, str) and branch else None


def webhook_handler(secret: bytes | str, trigger: Callable[[], None], *, branch: str | None = None) -> Handler:
    """An aiohttp handler that checks the HMAC and calls `trigger()` for pushes to `branch`."""
    key = secret.encode() if isinstance(secret, str) else secret
    if not key:
        raise ValueError("the webhook secret must not be empty")

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _error(413, "too_large", f"the webhook body is limited to {MAX_BODY} bytes")
        received = bytearray()  # the whole body, however many segments it came in
        async for chunk in request.content.iter_any():
            received += chunk
            if len(received) > MAX_BODY:
                return _error(413, "too_large", f"the webhook body is limited to {MAX_BODY} bytes")
        body = bytes(received)
        given = next((request.headers[h] for h in SIGNATURE_HEADERS if h in request.headers), None)
        if given is None:
            return _error(401, "unauthorized", f"missing signature header ({' or '.join(SIGNATURE_HEADERS)})")
        expected = sign(key, body)
        candidate = given.strip()
        if not candidate.startswith("sha256="):
            candidate = "sha256=" + candidate
        if not hmac.compare_digest(candidate.lower().encode(), expected.encode()):
            return _error(401, "unauthorized", "the signature does not match the body (HMAC-SHA256, shared secret)")
        if request.headers.get("X-GitHub-Event") == "ping":
            return web.json_response({"triggered": False, "message": "pong"})
        payload: object = None
        if body.strip():
            try:
                payload = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                return _error(400, "bad_request", "the webhook body is not JSON")
        pushed = _branch_of(payload)
        if branch is not None and pushed is not None and pushed != branch:
            return web.json_response(
                {"triggered": False, "message": f"push to {pushed!r}; tracking {branch!r}"}, status=202
            )
        trigger()
        return web.json_response({"triggered": True}, status=202)

    return handle
