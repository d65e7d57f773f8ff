"""The OpenAPI description of the web console's routes and of the API routes it added (diff, pages).

Where it sits: `reconciler.api.openapi.document()` merges `console_paths()` into its paths and
`page_params()` into the list routes, so the document stays true to the running app
(tests/api/test_openapi.py). Kept apart so reconciler/api/openapi.py stays one screenful per group;
beside the API (not in reconciler/ui) so the API's document never imports the console.
"""

from __future__ import annotations

from reconciler.api.openapi import JSON, OBJECT, READ, Schema, _json, _op

SESSION: Schema = {
    "type": "object",
    "required": ["subject", "roles", "csrf", "expiresAt"],
    "properties": {
        "subject": {"type": "string"},
        "roles": {"type": "array", "items": {"type": "string"}},
        "csrf": {"type": "string", "description": "send as X-CSRF-Token on every write made with the cookie"},
        "expiresAt": {"type": "integer", "description": "unix seconds"},
    },
}
NULLABLE_TEXT: Schema = {"type": ["string", "null"]}
DIFF: Schema = {
    "type": "object",
    "required": ["ref", "sha", "author", "message", "verified", "reason", "actions", "tables", "lines", "changes"],
    "properties": {
        "ref": {"type": "string"},
        "sha": {"type": "string"},
        "author": {"type": "string"},
        "message": {"type": "string"},
        "verified": {"type": "boolean"},
        "reason": NULLABLE_TEXT,
        "signer": NULLABLE_TEXT,
        "actions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["kind", "module", "text"],
                "properties": {
                    "kind": {"type": "string"},
                    "module": {"type": "string"},
                    "version": NULLABLE_TEXT,
                    "from": NULLABLE_TEXT,
                    "to": NULLABLE_TEXT,
                    "strategy": NULLABLE_TEXT,
                    "text": {"type": "string"},
                },
            },
        },
        "tables": {"type": "array", "items": OBJECT},
        "lines": {"type": "array", "items": {"type": "string"}},
        "changes": {"type": "integer"},
    },
}


def _query(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def page_params() -> list[Schema]:
    """`?limit=&offset=&q=` of a list route: with a limit, the answer adds `total` and `offset`."""
    return [
        _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
        _query("offset", {"type": "integer", "minimum": 0}),
        _query("q", {"type": "string", "maxLength": 200}),
    ]


def _html(description: str) -> Schema:
    return {"description": description, "content": {"text/html": {}}}


def console_paths() -> dict[str, dict[str, Schema]]:
    name = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    code = [{"name": "code", "in": "path", "required": True, "schema": {"type": "string"}}]
    token_body: Schema = {"type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}}
    return {
        "/api/v1/wasm/diff": {
            "get": _op(
                "what applying a Git ref would change (nothing is applied)",
                READ,
                {"200": _json(DIFF, "the planned changes")},
                params=[_query("ref", {"type": "string", "maxLength": 200})],
            )
        },
        "/ui": {"get": _op("the web console", None, {"303": {"description": "to /ui/"}, "200": _html("index")})},
        "/ui/": {
            "get": _op("the web console's page", None, {"200": _html("index.html"), "304": {"description": "same"}})
        },
        "/ui/{name}": {
            "get": _op(
                "a file of the web console (.html .js .css .svg .png .txt .map)",
                None,
                {"200": {"description": "the file", "content": {"*/*": {}}}, "304": {"description": "same"}},
                params=name,
            )
        },
        "/ui/session": {
            "post": _op(
                "sign in with an API token: the session cookie (HttpOnly, SameSite=Strict) and its CSRF secret",
                None,
                {"200": _json(SESSION, "signed in")},
                body=token_body,
            ),
            "get": _op("the session of the cookie sent", None, {"200": _json(SESSION, "signed in")}),
            "delete": _op(
                "sign out (a live session needs X-CSRF-Token)", None, {"204": {"description": "cookie cleared"}}
            ),
        },
        "/ui/login/{code}": {
            "get": _op(
                "a one-time sign-in link (hotswap up prints one)",
                None,
                {"303": {"description": "signed in: to /ui/"}, "200": _html("the console"), "401": _html("used")},
                params=code,
            )
        },
        "/ui/events": {
            "get": _op(
                "the console's live stream (server-sent events: hello, event, pass, nodes); cookie or bearer",
                READ,
                {"200": {"description": "text/event-stream", "content": {"text/event-stream": {}}}},
            )
        },
    }


__all__ = ["JSON", "console_paths", "page_params"]
