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

ERROR: Schema = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}},
}
OBJECT: Schema = {"type": "object"}
NAME: Schema = {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"}
SEMVER: Schema = {"type": "string", "pattern": r"^\d+\.\d+\.\d+"}
CONDITION: Schema = {
    "type": "object",
    "required": ["type", "status", "reason", "message"],
    "properties": {k: {"type": "string"} for k in ("type", "status", "reason", "message")},
}
MODULE: Schema = {
    "type": "object",
    "required": ["id", "name", "version", "digest", "size"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "version": {"type": "string"},
        "digest": {"type": "string"},
        "size": {"type": "integer"},
        "compressedSize": {"type": "integer"},
    },
}
NODE: Schema = {
    "type": "object",
    "required": ["id", "region", "url", "status", "modules"],
    "properties": {
        "id": {"type": "string"},
        "region": {"type": "string"},
        "url": {"type": "string"},
        "status": {"type": "string"},
        "modules": {"type": "array", "items": OBJECT},
    },
}
DEPLOYMENT: Schema = {
    "type": "object",
    "required": ["id", "module", "toVersion", "phase", "conditions"],
    "properties": {
        "id": {"type": "string"},
        "module": {"type": "string"},
        "toVersion": {"type": "string"},
        "fromVersion": {"type": ["string", "null"]},
        "phase": {"type": "string"},
        "conditions": {"type": "array", "items": CONDITION},
    },
}
WRITE: Schema = {
    "type": "object",
    "required": ["commit", "branch", "review"],
    "properties": {"commit": {"type": "string"}, "branch": {"type": "string"}, "review": {"type": "boolean"}},
}
INTERFACE: Schema = {
    "type": "object",
    "required": ["id", "name", "package", "wasi", "status"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "package": {"type": "string"},
        "wasi": {"type": "string"},
        "status": {"type": "string"},
        "interfaces": {"type": "object"},
    },
}
AUDIT: Schema = {
    "type": "object",
    "required": ["seq", "at", "actor", "action", "subject", "detail"],
    "properties": {
        "seq": {"type": "integer"},
        "at": {"type": "string"},
        "actor": {"type": "string"},
        "action": {"type": "string"},
        "subject": {"type": "string"},
        "detail": {"type": "object"},
    },
}
ID_PARAM: Schema = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}


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


def _list(key: str, item: Schema) -> Schema:
    return {"type": "object", "required": [key], "properties": {key: {"type": "array", "items": item}}}


READ = ("admin", "developer", "operator", "viewer")
NODE_ROLES = ("admin", "node")


def document() -> Schema:
    """The OpenAPI 3.1 document of every route the control plane serves."""
    from reconciler.api.consoledoc import console_paths, page_params  # it builds on this module's helpers

    id_only = [ID_PARAM]
    upload_body: Schema = {
        "type": "object",
        "required": ["name", "version", "wasm"],
        "additionalProperties": False,
        "properties": {
            "name": NAME,
            "version": SEMVER,
            "wasm": {"type": "string", "contentEncoding": "base64"},
            "build": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"commit": {"type": "string"}, "timestamp": {"type": "string"}},
            },
        },
    }
    paths: dict[str, dict[str, Schema]] = {
        "/health": {"get": _op("liveness", None, {"200": _json(OBJECT, "alive")})},
        OPENAPI_PATH: {"get": _op("this document", (*READ, "node"), {"200": _json(OBJECT, "OpenAPI 3.1")})},
        "/api/v1/wasm/modules": {
            "post": _op(
                "register a module binary (JSON with base64, or multipart)",
                ("developer", "admin"),
                {"200": _json(MODULE, "already registered"), "201": _json(MODULE, "registered")},
                body=upload_body,
            ),
            "get": _op(
                "list modules",
                (*READ, "node"),
                {"200": _json(_list("modules", MODULE), "modules")},
                params=[
                    {"name": "name", "in": "query", "required": False, "schema": {"type": "string"}},
                    *page_params(),
                ],
            ),
        },
        "/api/v1/wasm/modules/{id}": {
            "get": _op("one module", (*READ, "node"), {"200": _json(MODULE, "the module")}, params=id_only),
            "delete": _op("delete a module version", ("admin",), {"204": {"description": "deleted"}}, params=id_only),
        },
        "/api/v1/wasm/modules/{id}/binary": {
            "get": _op(
                "the module's bytes",
                (*READ, "node"),
                {"200": {"description": "wasm", "content": {"application/wasm": {}}}, "304": {"description": "same"}},
                params=id_only,
            )
        },
        "/api/v1/wasm/blobs/{digest}": {
            "get": _op(
                "a binary by digest",
                (*READ, "node"),
                {
                    "200": {"description": "wasm", "content": {"application/wasm": {}}},
                    "304": {"description": "same"},
                    "307": {"description": "to a presigned S3 URL of the brotli object (a node that asked)"},
                },
                params=[
                    {"name": "digest", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "X-Hotswap-Blob-Direct", "in": "header", "required": False, "schema": {"enum": ["br"]}},
                ],
            )
        },
        "/api/v1/wasm/nodes": {
            "post": _op(
                "register an edge node",
                NODE_ROLES,
                {"200": _json(OBJECT, "known node"), "201": _json(OBJECT, "registered")},
                body={
                    "type": "object",
                    "required": ["id", "region"],
                    "properties": {"id": NAME, "region": NAME, "url": {"type": "string"}},
                },
            ),
            "get": _op(
                "every node",
                (*READ, "node"),
                {"200": _json(_list("nodes", NODE), "nodes")},
                params=[
                    {"name": "region", "in": "query", "required": False, "schema": {"type": "string"}},
                    {"name": "status", "in": "query", "required": False, "schema": {"type": "string"}},
                    *page_params(),
                ],
            ),
        },
        "/api/v1/wasm/nodes/{id}": {
            "get": _op("one node", READ, {"200": _json(NODE, "the node")}, params=id_only),
            "delete": _op("forget a node", ("admin", "operator"), {"204": {"description": "gone"}}, params=id_only),
        },
        "/api/v1/wasm/nodes/{id}/drain": {
            "post": _op(
                "drain a node: its modules move elsewhere",
                ("admin", "operator"),
                {"202": _json(OBJECT, "the node")},
                params=id_only,
            ),
            "delete": _op(
                "take a drained node back", ("admin", "operator"), {"202": _json(OBJECT, "the node")}, params=id_only
            ),
        },
        "/api/v1/wasm/nodes/{id}/health": {
            "get": _op("a node's health", READ, {"200": _json(OBJECT, "health")}, params=id_only)
        },
        "/api/v1/wasm/nodes/{id}/heartbeat": {
            "post": _op("a node's heartbeat", NODE_ROLES, {"200": _json(OBJECT, "answer")}, body=OBJECT, params=id_only)
        },
        "/api/v1/wasm/nodes/{id}/assignment": {
            "get": _op(
                "long-poll a node's module table",
                NODE_ROLES,
                {"200": _json(OBJECT, "a newer table"), "204": {"description": "nothing newer"}},
                params=[
                    ID_PARAM,
                    {"name": "after", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
                    {"name": "wait", "in": "query", "required": False, "schema": {"type": "number", "minimum": 0}},
                ],
            )
        },
        "/api/v1/wasm/deployments": {
            "get": _op(
                "rollouts",
                READ,
                {"200": _json(_list("deployments", DEPLOYMENT), "rollouts")},
                params=[
                    {"name": "module", "in": "query", "required": False, "schema": {"type": "string"}},
                    {"name": "active", "in": "query", "required": False, "schema": {"type": "string"}},
                    {"name": "order", "in": "query", "required": False, "schema": {"enum": ["asc", "desc"]}},
                    *page_params(),
                ],
            ),
            "post": _op(
                "request a deployment: a signed commit in the fleet repository",
                ("developer", "admin"),
                {"202": _json(WRITE, "committed")},
                body={
                    "type": "object",
                    "required": ["module", "version"],
                    "additionalProperties": False,
                    "properties": {
                        "module": NAME,
                        "version": SEMVER,
                        "strategy": NAME,
                        "regions": {"type": "array", "items": NAME, "minItems": 1},
                    },
                },
            ),
        },
        "/api/v1/wasm/deployments/{id}": {
            "get": _op("one rollout with its steps", READ, {"200": _json(DEPLOYMENT, "the rollout")}, params=id_only)
        },
        "/api/v1/wasm/deployments/{id}/execute": {
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
        "/api/v1/wasm/deployments/{id}/rollback": {
            "post": _op(
                "roll an active rollout back now",
                ("operator", "admin"),
                {"202": _json(DEPLOYMENT, "rollback requested")},
                params=id_only,
            )
        },
        "/api/v1/wasm/deployments/{id}/pause": {
            "post": _op(
                "hold an active rollout at its step",
                ("operator", "admin"),
                {"202": _json(DEPLOYMENT, "pause requested")},
                params=id_only,
            )
        },
        "/api/v1/wasm/deployments/{id}/resume": {
            "post": _op(
                "let a held rollout go on",
                ("operator", "admin"),
                {"202": _json(DEPLOYMENT, "resume requested")},
                params=id_only,
            )
        },
        "/api/v1/wasm/execute": {
            "post": _op(
                "run a function on a healthy node that serves the module",
                ("developer", "admin"),
                {"200": _json(OBJECT, "the result")},
                body={
                    "type": "object",
                    "required": ["module", "function"],
                    "properties": {
                        "module": NAME,
                        "function": {"type": "string"},
                        "args": {},
                        "version": {"type": "string"},
                    },
                },
            )
        },
        "/api/v1/wasm/source/accept-rewrite": {
            "post": _op(
                "follow a force-pushed branch at the given head (a rewrite the signing policy holds)",
                ("admin",),
                {"202": _json(OBJECT, "the source's status")},
                body={
                    "type": "object",
                    "required": ["head"],
                    "properties": {"head": {"type": "string", "pattern": "^[0-9a-f]{40}$"}},
                },
            )
        },
        "/api/v1/wasm/source": {"get": _op("the Git source's status", READ, {"200": _json(OBJECT, "status")})},
        "/api/v1/wasm/status": {"get": _op("everything `hotswap status` shows", READ, {"200": _json(OBJECT, "")})},
        "/api/v1/wasm/notifications": {
            "get": _op("notification receivers, recent deliveries, scaling signals", READ, {"200": _json(OBJECT, "")})
        },
        "/api/v1/wasm/snapshot": {"get": _op("what the planner reads", READ, {"200": _json(OBJECT, "snapshot")})},
        "/metrics": {
            "get": _op(
                "every metric the spec names, in Prometheus text",
                READ,
                {"200": {"description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            )
        },
        "/api/v1/wasm/audit": {
            "get": _op(
                "the audit log, oldest first: registry changes, deployment steps, approvals, rollbacks",
                READ,
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["entries", "next"],
                            "properties": {
                                "entries": {"type": "array", "items": AUDIT},
                                "next": {"type": "integer", "description": "pass as `after` for the next page"},
                            },
                        },
                        "audit lines",
                    )
                },
                params=[
                    {"name": "subject", "in": "query", "required": False, "schema": {"type": "string"}},
                    {"name": "action", "in": "query", "required": False, "schema": {"type": "string"}},
                    {"name": "q", "in": "query", "required": False, "schema": {"type": "string"}},
                    {"name": "after", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                ],
            )
        },
        "/api/v1/wasm/interfaces": {
            "get": _op("the fleet's interfaces", READ, {"200": _json(_list("interfaces", INTERFACE), "")}),
            "post": _op(
                "propose an interface (a signed commit)",
                ("developer", "admin"),
                {"202": _json(WRITE, "committed")},
                body={
                    "type": "object",
                    "required": ["name", "wit"],
                    "additionalProperties": False,
                    "properties": {
                        "name": NAME,
                        "wit": {"type": "string", "minLength": 1},
                        "wasi": {"enum": ["preview1", "preview2"]},
                    },
                },
            ),
        },
        "/api/v1/wasm/interfaces/{id}": {
            "get": _op("one interface with its WIT", READ, {"200": _json(INTERFACE, "")}, params=id_only)
        },
        "/api/v1/wasm/interfaces/{id}/approve": {
            "post": _op("approve an interface package", ("admin",), {"202": _json(WRITE, "approved")}, params=id_only)
        },
        "/api/v1/wasm/interfaces/{id}/validate": {
            "post": _op(
                "check a module against an interface",
                READ,
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["compatible", "problems"],
                            "properties": {
                                "compatible": {"type": "boolean"},
                                "problems": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                        "the verdict",
                    )
                },
                body={
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "module": {"type": "string"},
                        "wasm": {"type": "string", "contentEncoding": "base64"},
                        "interface": {"type": "string"},
                    },
                },
                params=id_only,
            )
        },
        "/api/v1/wasm/webhook": {
            "post": _op("a forge's push notification (HMAC-SHA256, when configured)", None, {"202": _json(OBJECT, "")})
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
