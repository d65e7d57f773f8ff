"""The control plane's OpenAPI 3 document, served at `GET /api/v1/openapi.json`.

Where it sits: among the route files of reconciler/api; `reconciler.api.control.routes` installs
the route. A test (tests/api/test_openapi.py) keeps it true: every route of the running app is in
the document and every operation of the document is a route, and schemathesis runs the document
against a live control plane (no 5xx, no response outside its schema).

Security: every operation needs a bearer JWT (`hotswap token --role ROLE`) except `/health` and the
webhook (HMAC-signed); each operation's description names the roles it allows.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from reconciler.api.base import ANY_ROLE, require

OPENAPI_PATH = "/api/v1/openapi.json"
JSON = "application/json"

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
BOOLEAN: Schema = {"type": "boolean"}
OBJECT: Schema = {"type": "object"}
NULLABLE_TEXT: Schema = {"type": ["string", "null"]}
NAME: Schema = {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"}
SEMVER: Schema = {"type": "string", "pattern": r"^\d+\.\d+\.\d+"}
BASE64: Schema = {"type": "string", "contentEncoding": "base64"}


def _fields(names: str, schema: Schema = STRING) -> dict[str, Schema]:
    """`{name: schema}` for each of the space-separated `names` (the properties of one type)."""
    return {name: dict(schema) for name in names.split()}


def _object(properties: dict[str, Schema], required: str = "", *, closed: bool = False) -> Schema:
    """An object with `properties`, of which the space-separated `required` must be there; `closed`: no others."""
    schema: Schema = {"type": "object"}
    if required:
        schema["required"] = required.split()
    if closed:
        schema["additionalProperties"] = False
    schema["properties"] = properties
    return schema


def _array(items: Schema, **bounds: int) -> Schema:
    return {"type": "array", "items": items, **bounds}


ERROR = _object(_fields("error message field"), "error message")
CONDITION = _object(_fields("type status reason message"), "type status reason message")
MODULE = _object(
    {**_fields("id name version digest"), **_fields("size compressedSize", INTEGER)}, "id name version digest size"
)
NODE = _object({**_fields("id region url status"), "modules": _array(OBJECT)}, "id region url status modules")
DEPLOYMENT = _object(
    {**_fields("id module toVersion"), "fromVersion": NULLABLE_TEXT, "phase": STRING, "conditions": _array(CONDITION)},
    "id module toVersion phase conditions",
)
WRITE = _object({**_fields("commit branch"), "review": BOOLEAN}, "commit branch review")
INTERFACE = _object({**_fields("id name package wasi status"), "interfaces": OBJECT}, "id name package wasi status")
AUDIT = _object(
    {"seq": INTEGER, **_fields("at actor action subject"), "detail": OBJECT}, "seq at actor action subject detail"
)


def _param(name: str, where: str, schema: Schema, *, required: bool = False) -> Schema:
    return {"name": name, "in": where, "required": required, "schema": schema}


def _path(name: str, schema: Schema = STRING) -> Schema:
    return _param(name, "path", schema, required=True)


def _query(name: str, schema: Schema = STRING) -> Schema:
    return _param(name, "query", schema)


def _queries(names: str) -> list[Schema]:
    """Optional text filters, one for each of the space-separated `names`."""
    return [_query(name) for name in names.split()]


ID_PARAM = _path("id", {"type": "string", "minLength": 1})
SAME: Schema = {"description": "same"}  # 304: the caller's If-None-Match still holds
WASM: Schema = {"description": "wasm", "content": {"application/wasm": {}}}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _op(
    summary: str,
    roles: tuple[str, ...] | None,
    responses: dict[str, Schema],
    *,
    body: Schema | None = None,
    params: list[Schema] | None = None,
) -> Schema:
    """One operation: `roles` may call it (None: no token needed); every error answers with ERROR."""
    op: Schema = {"summary": summary, "responses": {**responses, "default": _json(ERROR, "an error")}}
    if roles is None:
        op["security"] = []
    else:
        op["description"] = f"Roles: {', '.join(roles)}."
    if body is not None:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
    if params:
        op["parameters"] = params
    return op


def _answer(
    summary: str,
    roles: tuple[str, ...] | None,
    schema: Schema,
    description: str = "",
    *,
    status: str = "200",
    body: Schema | None = None,
    params: list[Schema] | None = None,
) -> Schema:
    """An operation with one JSON answer (`status`) besides its errors."""
    return _op(summary, roles, {status: _json(schema, description)}, body=body, params=params)


def _list(key: str, item: Schema) -> Schema:
    return _object({key: _array(item)}, key)


def page_params() -> list[Schema]:
    """`?limit=&offset=&q=` of a list route: with a limit, the answer adds `total` and `offset`."""
    return [
        _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
        _query("offset", {"type": "integer", "minimum": 0}),
        _query("q", {"type": "string", "maxLength": 200}),
    ]


def _paged(
    summary: str, roles: tuple[str, ...], key: str, item: Schema, description: str, filters: list[Schema]
) -> Schema:
    """A list route: `{key: [item]}` narrowed by `filters` and by `page_params()`."""
    return _answer(summary, roles, _list(key, item), description, params=[*filters, *page_params()])


READ = ("admin", "developer", "operator", "viewer")
READ_OR_NODE = (*READ, "node")
NODE_ROLES = ("admin", "node")
WRITERS = ("developer", "admin")
OPERATORS = ("operator", "admin")
DEPLOYMENTS = "/api/v1/wasm/deployments"


def _rollout_moves() -> dict[str, dict[str, Schema]]:
    """`POST /deployments/{id}/rollback|pause|resume`: each answers with the rollout it moved."""
    moves = {
        "rollback": "roll an active rollout back now",
        "pause": "hold an active rollout at its step",
        "resume": "let a held rollout go on",
    }
    return {
        f"{DEPLOYMENTS}/{{id}}/{move}": {
            "post": _answer(summary, OPERATORS, DEPLOYMENT, f"{move} requested", status="202", params=[ID_PARAM])
        }
        for move, summary in moves.items()
    }


def document() -> Schema:
    """The OpenAPI 3.1 document of every route the control plane serves."""
    from reconciler.api.consoledoc import console_paths  # it builds on this module's helpers

    id_only = [ID_PARAM]
    upload_body = _object(
        {
            "name": NAME,
            "version": SEMVER,
            "wasm": BASE64,
            "build": _object(_fields("commit timestamp"), closed=True),
        },
        "name version wasm",
        closed=True,
    )
    paths: dict[str, dict[str, Schema]] = {
        "/health": {"get": _answer("liveness", None, OBJECT, "alive")},
        OPENAPI_PATH: {"get": _answer("this document", READ_OR_NODE, OBJECT, "OpenAPI 3.1")},
        "/api/v1/wasm/modules": {
            "post": _op(
                "register a module binary (JSON with base64, or multipart)",
                WRITERS,
                {"200": _json(MODULE, "already registered"), "201": _json(MODULE, "registered")},
                body=upload_body,
            ),
            "get": _paged("list modules", READ_OR_NODE, "modules", MODULE, "modules", _queries("name")),
        },
        "/api/v1/wasm/modules/{id}": {
            "get": _answer("one module", READ_OR_NODE, MODULE, "the module", params=id_only),
            "delete": _op("delete a module version", ("admin",), {"204": {"description": "deleted"}}, params=id_only),
        },
        "/api/v1/wasm/modules/{id}/binary": {
            "get": _op("the module's bytes", READ_OR_NODE, {"200": WASM, "304": SAME}, params=id_only)
        },
        "/api/v1/wasm/blobs/{digest}": {
            "get": _op(
                "a binary by digest",
                READ_OR_NODE,
                {
                    "200": WASM,
                    "304": SAME,
                    "307": {"description": "to a presigned S3 URL of the brotli object (a node that asked)"},
                },
                params=[_path("digest"), _param("X-Hotswap-Blob-Direct", "header", {"enum": ["br"]})],
            )
        },
        "/api/v1/wasm/nodes": {
            "post": _op(
                "register an edge node",
                NODE_ROLES,
                {"200": _json(OBJECT, "known node"), "201": _json(OBJECT, "registered")},
                body=_object({"id": NAME, "region": NAME, "url": STRING}, "id region"),
            ),
            "get": _paged("every node", READ_OR_NODE, "nodes", NODE, "nodes", _queries("region status")),
        },
        "/api/v1/wasm/nodes/{id}": {
            "get": _answer("one node", READ, NODE, "the node", params=id_only),
            "delete": _op("forget a node", ("admin", "operator"), {"204": {"description": "gone"}}, params=id_only),
        },
        "/api/v1/wasm/nodes/{id}/drain": {
            verb: _answer(summary, ("admin", "operator"), OBJECT, "the node", status="202", params=id_only)
            for verb, summary in (
                ("post", "drain a node: its modules move elsewhere"),
                ("delete", "take a drained node back"),
            )
        },
        "/api/v1/wasm/nodes/{id}/health": {"get": _answer("a node's health", READ, OBJECT, "health", params=id_only)},
        "/api/v1/wasm/nodes/{id}/heartbeat": {
            "post": _answer("a node's heartbeat", NODE_ROLES, OBJECT, "answer", body=OBJECT, params=id_only)
        },
        "/api/v1/wasm/nodes/{id}/assignment": {
            "get": _op(
                "long-poll a node's module table",
                NODE_ROLES,
                {"200": _json(OBJECT, "a newer table"), "204": {"description": "nothing newer"}},
                params=[
                    ID_PARAM,
                    _query("after", {"type": "integer", "minimum": 0}),
                    _query("wait", {"type": "number", "minimum": 0}),
                ],
            )
        },
        DEPLOYMENTS: {
            "get": _paged(
                "rollouts",
                READ,
                "deployments",
                DEPLOYMENT,
                "rollouts",
                [*_queries("module active"), _query("order", {"enum": ["asc", "desc"]})],
            ),
            "post": _answer(
                "request a deployment: a signed commit in the fleet repository",
                WRITERS,
                WRITE,
                "committed",
                status="202",
                body=_object(
                    {"module": NAME, "version": SEMVER, "strategy": NAME, "regions": _array(NAME, minItems=1)},
                    "module version",
                    closed=True,
                ),
            ),
        },
        f"{DEPLOYMENTS}/{{id}}": {
            "get": _answer("one rollout with its steps", READ, DEPLOYMENT, "the rollout", params=id_only)
        },
        f"{DEPLOYMENTS}/{{id}}/execute": {
            "post": _op(
                "approve a deployment for the caller (admin only in production)",
                ("admin", "developer"),
                {
                    "202": _json(WRITE, "approval committed, signed by the control plane for the caller's principal"),
                    "409": _json(
                        ERROR,
                        "nothing committed: the control plane or the caller is not in the trust file, the version "
                        "is not waiting for approval, or the caller already approved it",
                    ),
                },
                params=id_only,
            )
        },
        **_rollout_moves(),
        "/api/v1/wasm/execute": {
            "post": _answer(
                "run a function on a healthy node that serves the module",
                WRITERS,
                OBJECT,
                "the result",
                body=_object({"module": NAME, "function": STRING, "args": {}, "version": STRING}, "module function"),
            )
        },
        "/api/v1/wasm/source/accept-rewrite": {
            "post": _answer(
                "follow a force-pushed branch at the given head (a rewrite the signing policy holds)",
                ("admin",),
                OBJECT,
                "the source's status",
                status="202",
                body=_object({"head": {"type": "string", "pattern": "^[0-9a-f]{40}$"}}, "head"),
            )
        },
        "/api/v1/wasm/source": {"get": _answer("the Git source's status", READ, OBJECT, "status")},
        "/api/v1/wasm/status": {"get": _answer("everything `hotswap status` shows", READ, OBJECT)},
        "/api/v1/wasm/notifications": {
            "get": _answer("notification receivers, recent deliveries, scaling signals", READ, OBJECT)
        },
        "/api/v1/wasm/snapshot": {"get": _answer("what the planner reads", READ, OBJECT, "snapshot")},
        "/metrics": {
            "get": _op(
                "every metric the spec names, in Prometheus text",
                READ,
                {"200": {"description": "Prometheus text", "content": {"text/plain": {"schema": STRING}}}},
            )
        },
        "/api/v1/wasm/audit": {
            "get": _answer(
                "the audit log, oldest first: registry changes, deployment steps, approvals, rollbacks",
                READ,
                _object(
                    {
                        "entries": _array(AUDIT),
                        "next": {"type": "integer", "description": "pass as `after` for the next page"},
                    },
                    "entries next",
                ),
                "audit lines",
                params=[
                    *_queries("subject action q"),
                    _query("after", {"type": "integer", "minimum": 0}),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                ],
            )
        },
        "/api/v1/wasm/interfaces": {
            "get": _answer("the fleet's interfaces", READ, _list("interfaces", INTERFACE)),
            "post": _answer(
                "propose an interface (a signed commit)",
                WRITERS,
                WRITE,
                "committed",
                status="202",
                body=_object(
                    {
                        "name": NAME,
                        "wit": {"type": "string", "minLength": 1},
                        "wasi": {"enum": ["preview1", "preview2"]},
                    },
                    "name wit",
                    closed=True,
                ),
            ),
        },
        "/api/v1/wasm/interfaces/{id}": {"get": _answer("one interface with its WIT", READ, INTERFACE, params=id_only)},
        "/api/v1/wasm/interfaces/{id}/approve": {
            "post": _answer("approve an interface package", ("admin",), WRITE, "approved", status="202", params=id_only)
        },
        "/api/v1/wasm/interfaces/{id}/validate": {
            "post": _answer(
                "check a module against an interface",
                READ,
                _object({"compatible": BOOLEAN, "problems": _array(STRING)}, "compatible problems"),
                "the verdict",
                body=_object({"module": STRING, "wasm": BASE64, "interface": STRING}, closed=True),
                params=id_only,
            )
        },
        "/api/v1/wasm/webhook": {
            "post": _answer("a forge's push notification (HMAC-SHA256, when configured)", None, OBJECT, status="202")
        },
    }
    paths.update(console_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hotswap control plane",
            "version": "1.0.0",
            "description": "GitOps orchestrator for WebAssembly modules on edge nodes. Writes that change desired "
            "state become signed commits in the fleet repository.",
        },
        "servers": [{"url": "/"}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }


async def openapi(request: web.Request) -> web.Response:
    require(request, *ANY_ROLE, "node")
    return web.json_response(document())


def setup(app: web.Application) -> None:
    app.router.add_get(OPENAPI_PATH, openapi)
