"""The OpenAPI description of the web console's routes and of the API route it added (diff).

Where it sits: `reconciler.api.openapi.document()` merges `console_paths()` into its paths, so the
document stays true to the running app (tests/api/test_openapi.py). It builds its schemas with the
helpers of reconciler/api/openapi.py. Kept apart so reconciler/api/openapi.py stays one screenful per group;
beside the API (not in reconciler/ui) so the API's document never imports the console.
"""

from __future__ import annotations

from reconciler.api.openapi import (
    BOOLEAN,
    INTEGER,
    NULLABLE_TEXT,
    OBJECT,
    READ,
    SAME,
    STRING,
    Schema,
    _answer,
    _array,
    _fields,
    _object,
    _op,
    _path,
    _query,
)

SESSION = _object(
    {
        "subject": STRING,
        "roles": _array(STRING),
        "csrf": {"type": "string", "description": "send as X-CSRF-Token on every write made with the cookie"},
        "expiresAt": {"type": "integer", "description": "unix seconds"},
    },
    "subject roles csrf expiresAt",
)
ACTION = _object(
    {**_fields("kind module"), **_fields("version from to strategy", NULLABLE_TEXT), "text": STRING}, "kind module text"
)
DIFF = _object(
    {
        **_fields("ref sha author message"),
        "verified": BOOLEAN,
        **_fields("reason signer", NULLABLE_TEXT),
        "actions": _array(ACTION),
        "tables": _array(OBJECT),
        "lines": _array(STRING),
        "changes": INTEGER,
    },
    "ref sha author message verified reason actions tables lines changes",
)


def _html(description: str) -> Schema:
    return {"description": description, "content": {"text/html": {}}}


def console_paths() -> dict[str, dict[str, Schema]]:
    return {
        "/api/v1/wasm/diff": {
            "get": _answer(
                "what applying a Git ref would change (nothing is applied)",
                READ,
                DIFF,
                "the planned changes",
                params=[_query("ref", {"type": "string", "maxLength": 200})],
            )
        },
        "/ui": {"get": _op("the web console", None, {"303": {"description": "to /ui/"}, "200": _html("index")})},
        "/ui/": {"get": _op("the web console's page", None, {"200": _html("index.html"), "304": SAME})},
        "/ui/{name}": {
            "get": _op(
                "a file of the web console (.html .js .css .svg .png .txt .map)",
                None,
                {"200": {"description": "the file", "content": {"*/*": {}}}, "304": SAME},
                params=[_path("name")],
            )
        },
        "/ui/session": {
            "post": _answer(
                "sign in with an API token: the session cookie (HttpOnly, SameSite=Strict) and its CSRF secret",
                None,
                SESSION,
                "signed in",
                body=_object({"token": STRING}, "token"),
            ),
            "get": _answer("the session of the cookie sent", None, SESSION, "signed in"),
            "delete": _op(
                "sign out (a live session needs X-CSRF-Token)", None, {"204": {"description": "cookie cleared"}}
            ),
        },
        "/ui/login/{code}": {
            "get": _op(
                "a one-time sign-in link (hotswap up prints one)",
                None,
                {"303": {"description": "signed in: to /ui/"}, "200": _html("the console"), "401": _html("used")},
                params=[_path("code")],
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


__all__ = ["console_paths"]
