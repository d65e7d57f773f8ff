"""The OpenAPI document stays true: every route of the running control plane is in it and every
operation in it is a route; and schemathesis, run against a live control plane with bounded
examples, finds no server error (5xx) and no answer outside the document's schemas."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from aiohttp import web

from reconciler.api.openapi import document
from tests.api.conftest import call
from tests.e2e.cluster import Cluster, poll

ST = Path(sys.executable).with_name("st")


def app_routes(app: web.Application) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method == "HEAD":
            continue
        routes.add((route.method.lower(), resource.canonical))
    return routes


def document_routes() -> set[tuple[str, str]]:
    return {(method, path) for path, item in document()["paths"].items() for method in item}


async def test_every_route_is_documented_and_every_operation_is_a_route(plane: Cluster) -> None:
    served = app_routes(plane.plane.app)
    documented = document_routes() - {("post", "/api/v1/wasm/webhook")}  # only with --webhook-secret
    assert served == documented
    answer = await call(plane.url, "GET", "/api/v1/openapi.json", plane.token("viewer"))
    assert answer.status == 200 and answer.body["openapi"].startswith("3.")
    assert answer.body == json.loads(json.dumps(document()))


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(plane: Cluster, tmp_path: Path) -> None:
    await poll(lambda: plane.plane.source.latest is not None, "the first revision")
    schema = tmp_path / "openapi.json"
    doc = document()
    del doc["paths"]["/api/v1/wasm/webhook"]  # not configured on this control plane
    del doc["paths"]["/api/v1/wasm/nodes/{id}/assignment"]  # a long poll: covered by the e2e tests
    del doc["paths"]["/ui/events"]  # a stream that stays open: covered by tests/ui/test_events.py
    schema.write_text(json.dumps(doc))
    process = await asyncio.create_subprocess_exec(
        str(ST), "run", str(schema), "--url", plane.url,
        "--header", f"Authorization: Bearer {plane.token('admin', 'fuzzer')}",
        "--checks", "not_a_server_error,response_schema_conformance",
        "--max-examples", "8", "--phases", "examples,fuzzing", "--workers", "1",
        "--generation-deterministic", "--no-color",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )  # fmt: skip
    out, _ = await process.communicate()
    text = out.decode(errors="replace")
    assert process.returncode == 0, text[-6000:]
