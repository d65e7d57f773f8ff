"""Routes of the running control plane: the node protocol, deployments (rollouts), the Git source.

    POST   /api/v1/wasm/nodes                       register (edge.nodeapi.Registration)
    GET    /api/v1/wasm/nodes                       every node: id, region, url, status, what it serves
                                                    (?region=, ?status=; ?limit=&offset=&q= for a page)
    GET    /api/v1/wasm/nodes/{id}                  one node
    DELETE /api/v1/wasm/nodes/{id}                  forget a node (its modules move elsewhere)
    POST   /api/v1/wasm/nodes/{id}/drain            drain a node (DELETE: take it back)
    GET    /api/v1/wasm/nodes/{id}/health           the spec's health shape
    POST   /api/v1/wasm/nodes/{id}/heartbeat        what the node runs and its metric deltas
    GET    /api/v1/wasm/nodes/{id}/assignment       long-poll: ?after=GEN&wait=SECONDS
    GET    /api/v1/wasm/deployments                 rollouts with strategy, step, weights, conditions
                                                    (?module=, ?active=1, ?order=desc; ?limit=&offset=&q=)
    GET    /api/v1/wasm/deployments/{id}            one rollout with its step history
    GET    /api/v1/wasm/source                      the Git source's status (Flux GitRepository-like)
    POST   /api/v1/wasm/source/accept-rewrite       follow a force-pushed branch at {"head": SHA} (admin)
    GET    /api/v1/wasm/status                      everything `hotswap status` shows
    GET    /api/v1/wasm/snapshot                    what the planner reads (for `hotswap diff`)
    GET    /health                                  liveness, no authentication

`routes()` also installs the control plane's write routes (deployments.py, interfaces.py), the
execute router (execute.py) and the OpenAPI document (openapi.py). Node protocol calls
need a node token whose subject is that node's id (or an admin token).

The handlers read from the controller's snapshot and the state store; they never plan.
"""

from __future__ import annotations

import asyncio
import json
import math
import platform
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict
from pydantic import ValidationError

from edge.nodeapi import NODES_PATH, Heartbeat, Registration
from edge.onepiece import header_lines
from edge.protocol import TABLE_BINDING_HEADER, TABLE_SIGNATURE_HEADER, module_id
from reconciler.api.auth import TokenAuthority
from reconciler.api.base import ANY_ROLE, ApiDeps, ApiError, page_of, public, read_json, require
from reconciler.api.security import one_piece
from reconciler.apply.controller import Controller
from reconciler.apply.noderows import NodeView
from reconciler.apply.nodes import HubClosedError, NodeHub
from reconciler.apply.rollouts import RolloutBook, record_json
from reconciler.gitsource.errors import RewriteNotPendingError
from reconciler.gitsource.gitwrite import GitWriter
from reconciler.gitsource.trust import TrustRoot
from reconciler.planner import Condition, RolloutRecord, latest_records
from reconciler.planner.snapshots import snapshot_json
from reconciler.store.state import StateStore

MAX_WAIT_SECONDS = 60.0
NODE_ROLES = ("admin", "node")
STATUS_NODES_A_TURN = 250  # nodes a status makes in one turn of the event loop (nodes_json)
ROUTES = web.RouteTableDef()  # each handler names its route; setup() adds them all


@dataclass(frozen=True)
class ControlDeps:
    controller: Controller  # its pass state, conditions and events; the parts below are its own too
    hub: NodeHub  # the node protocol's side: node views, heartbeats, tables
    book: RolloutBook  # the rollout records
    store: StateStore  # the audit log
    source_status: Callable[[], dict[str, Any]]
    version: str = "0.1.0"
    authority: TokenAuthority | None = None  # mints the tokens execute calls carry to nodes
    writer: GitWriter | None = None  # API writes as commits in the fleet repository
    accept_rewrite: Callable[[str], None] | None = None  # follow a force-pushed branch at this head
    adopt_roles: frozenset[str] = frozenset({"admin"})  # who may accept a rewrite (the trust root's roles.adopt)
    trust: TrustRoot | None = None  # the trust root: whom the control plane may sign API commits for


CONTROL = web.AppKey("control", ControlDeps)


def _iso(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z") if epoch else None


def node_json(view: NodeView, table_generation: int) -> dict[str, Any]:
    return {
        "id": view.id,
        "region": view.region,
        "url": view.url,
        "status": view.status,
        "generation": table_generation,
        "appliedGeneration": view.applied_generation,
        "modules": [{"module": m, "version": v, "digest": d, "weight": w} for m, v, d, w in view.running],
        "failed": view.failed,
        "lastHeartbeat": _iso(view.last_heartbeat),
        "cpuPercent": view.cpu_percent,
        "memoryMB": view.memory_mb,
        "maxModules": view.max_modules,
    }


def rollout_json(
    record: RolloutRecord,
    control: ControlDeps,
    conditions: tuple[Condition, ...],
) -> dict[str, Any]:
    """A rollout as the API shows it, with its module's `conditions` (`Controller.conditions`)."""
    body = record_json(record)
    return {
        "id": record.id,
        "module": record.module,
        "moduleId": module_id(record.module, record.target.version),
        "fromVersion": record.previous.version if record.previous else None,
        "toVersion": record.target.version,
        "strategy": record.strategy,
        "strategyType": record.strategy_type.value if record.strategy_type else None,
        "phase": record.phase.value,
        "step": record.step,
        "stepKind": record.kind.value if record.kind else None,
        "percent": record.percent,
        "region": body.get("regionIndex"),
        "reason": record.reason,
        "message": record.message,
        "createdAt": _iso(record.created_at),
        "stepStartedAt": _iso(record.step_started_at),
        "finishedAt": _iso(record.finished_at),
        "revision": control.book.revision_of(record.id),
        "weightsOnNodes": control.hub.running_weights(record.module),
        "conditions": [c.to_json() for c in conditions],
        "history": body.get("history", []),
        "abResult": body.get("abResult"),
        "held": record.held,
        "strategySpec": _strategy_spec(control.controller, record.strategy),
    }


def _strategy_spec(controller: Controller, name: str | None) -> dict[str, Any] | None:
    """The named strategy as the followed revision defines it (steps, analysis thresholds), for the
    console's progress line and analysis chart; None for an at-once rollout or a strategy gone."""
    latest = controller.source.latest
    fleet = latest.fleet if latest is not None else None
    strategy = fleet.strategies.get(name) if fleet is not None and name is not None else None
    return strategy.spec.model_dump(mode="json", by_alias=True, exclude_none=True) if strategy is not None else None


def control_of(request: web.Request) -> ControlDeps:
    return request.app[CONTROL]


async def _body(request: web.Request) -> Any:
    return await read_json(request)


def _validation(exc: ValidationError) -> ApiError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return ApiError(400, "bad_request", f"{where}: {first['msg']}", where)


def _node_caller(request: web.Request, node_id: str) -> None:
    """A node's token speaks for that node only (its subject is the node id); an admin's for any."""
    who = require(request, *NODE_ROLES)
    if "admin" not in who.roles and who.subject != node_id:
        raise ApiError(403, "forbidden", f"a token for node {who.subject!r} cannot act for node {node_id!r}")


@ROUTES.post(NODES_PATH)
async def register(request: web.Request) -> web.Response:
    require(request, *NODE_ROLES)
    await control_of(request).hub.turns.share()  # a fleet's nodes come in waves (reconciler.apply.turns)
    try:
        registration = Registration.model_validate(await _body(request))
    except ValidationError as exc:
        raise _validation(exc) from None
    _node_caller(request, registration.id)
    hub = control_of(request).hub
    created = not hub.known(registration.id)
    answer = await hub.register(registration)
    return web.json_response(answer.model_dump(mode="json", by_alias=True), status=201 if created else 200)


_JSON_HEAD = b"Content-Type: application/json; charset=utf-8\r\n"


@ROUTES.post(NODES_PATH + "/{id}/heartbeat")
async def heartbeat(request: web.Request) -> web.StreamResponse:
    _node_caller(request, request.match_info["id"])
    await control_of(request).hub.turns.share()  # a fleet's nodes come in waves (reconciler.apply.turns)
    try:
        beat = Heartbeat.model_validate(await _body(request))
    except ValidationError as exc:
        raise _validation(exc) from None
    answer = await control_of(request).hub.heartbeat(request.match_info["id"], beat)
    if answer is None:
        raise ApiError(404, "not_found", f"node {request.match_info['id']!r} is not registered; register again")
    data = answer.model_dump(mode="json", by_alias=True)
    plain = one_piece(request, json.dumps(data).encode(), _JSON_HEAD)  # the bytes json_response writes
    return plain if plain is not None else web.json_response(data)


def _number(request: web.Request, name: str, default: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name}: {raw!r} is not a number", name) from None
    if not math.isfinite(value):  # nan and inf would pass the checks below and break int() and min()
        raise ApiError(400, "bad_request", f"{name}: {raw!r} is not a finite number", name)
    if value < 0:
        raise ApiError(400, "bad_request", f"{name}: must not be negative", name)
    return value


@ROUTES.get(NODES_PATH + "/{id}/assignment")
async def assignment(request: web.Request) -> web.StreamResponse:
    node_id = request.match_info["id"]
    _node_caller(request, node_id)
    after = int(_number(request, "after", 0))
    wait = min(_number(request, "wait", 0), MAX_WAIT_SECONDS)
    try:
        table = await control_of(request).hub.wait_assignment(node_id, after, wait)
    except KeyError:
        raise ApiError(404, "not_found", f"node {node_id!r} is not registered") from None
    except HubClosedError:  # the node retries after a pause, on whichever replica answers next
        raise ApiError(
            503, "stopping", "this control plane is stopping", headers={"Retry-After": "1", "Connection": "close"}
        ) from None
    if table is None:
        return web.Response(status=204)
    hub = control_of(request).hub
    await hub.turns.share()
    # The node may have been deleted (or deleted and registered again), or given a newer table, while
    # its answer waited its turn: answer what it holds now, or 404 as to a poll parked when it was deleted
    current = hub.table(node_id) if hub.known(node_id) else None
    if current is None or current.generation < table.generation:
        raise ApiError(404, "not_found", f"node {node_id!r} is not registered")
    table = current
    body, signature = hub.answer(node_id, table)  # shared bytes, encoded once
    binding = hub.binding(node_id, table)  # one signature for every table published with it
    headers = {TABLE_SIGNATURE_HEADER: signature} if signature else {}
    if binding:
        headers[TABLE_BINDING_HEADER] = binding
    plain = one_piece(request, body, header_lines(CIMultiDict({**headers, "Content-Type": "application/json"})))
    return plain if plain is not None else web.Response(body=body, content_type="application/json", headers=headers)


def _find_node(request: web.Request) -> tuple[NodeView, int]:
    hub = control_of(request).hub
    node_id = request.match_info["id"]
    views = hub.views_of([node_id])  # this node's view, not a walk of the fleet
    if not views:
        raise ApiError(404, "not_found", f"node {node_id!r} is not registered")
    table = hub.table(node_id)
    return views[0], table.generation if table else 0


@ROUTES.get(NODES_PATH)
async def list_nodes(request: web.Request) -> web.Response:
    require(request, *ANY_ROLE, "node")
    hub = control_of(request).hub
    region = request.query.get("region")
    status = request.query.get("status")
    page = page_of(request)
    views = [
        v
        for v in hub.view()
        if (region is None or v.region == region)
        and (status is None or v.status.casefold() == status.casefold())
        and page.matches(v.id, v.region, *(f"{m}@{ver}" for m, ver, _, _ in v.running))
    ]
    nodes = [node_json(v, (t.generation if (t := hub.table(v.id)) else 0)) for v in views]
    return web.json_response(page.window("nodes", nodes))


@ROUTES.get(NODES_PATH + "/{id}")
async def get_node(request: web.Request) -> web.Response:
    require(request, *ANY_ROLE)
    view, generation = _find_node(request)
    return web.json_response(node_json(view, generation))


@ROUTES.get(NODES_PATH + "/{id}/health")
async def node_health(request: web.Request) -> web.Response:
    require(request, *ANY_ROLE)
    view, _ = _find_node(request)
    return web.json_response(
        {
            "status": view.status,
            "modulesDeployed": len(view.running),
            "cpuUsagePercent": view.cpu_percent,
            "memoryUsageMB": view.memory_mb,
            "lastHeartbeat": _iso(view.last_heartbeat),
            "wasmRuntimeVersion": f"wasmtime-{_wasmtime_version()}",
        }
    )


def _wasmtime_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wasmtime")
    except PackageNotFoundError:  # pragma: no cover - wasmtime is a dependency
        return "unknown"


@ROUTES.delete(NODES_PATH + "/{id}")
async def delete_node(request: web.Request) -> web.Response:
    require(request, "admin", "operator")
    node_id = request.match_info["id"]
    if not await control_of(request).hub.delete(node_id):
        raise ApiError(404, "not_found", f"node {node_id!r} is not registered")
    return web.Response(status=204)


@ROUTES.post(NODES_PATH + "/{id}/drain")
@ROUTES.delete(NODES_PATH + "/{id}/drain")
async def drain_node(request: web.Request) -> web.Response:
    """POST drains a node (its modules are placed elsewhere, it gets an empty table); DELETE undrains."""
    require(request, "admin", "operator")
    node_id = request.match_info["id"]
    hub = control_of(request).hub
    if not await hub.set_draining(node_id, request.method == "POST"):
        raise ApiError(404, "not_found", f"node {node_id!r} is not registered")
    view, generation = _find_node(request)
    return web.json_response(node_json(view, generation), status=202)


@ROUTES.get("/api/v1/wasm/deployments")
async def list_deployments(request: web.Request) -> web.Response:
    require(request, *ANY_ROLE)
    control = control_of(request)
    controller = control.controller
    module = request.query.get("module")
    active = request.query.get("active", "").casefold() in {"1", "true"}
    newest_first = request.query.get("order", "asc") == "desc"
    page = page_of(request)
    records = [
        r
        for r in control.book.records()
        if (module is None or r.module == module)
        and (not active or r.active)
        and page.matches(r.id, r.module, r.target.version, r.previous.version if r.previous else None)
    ]
    records.sort(key=lambda r: (r.created_at, r.seq))
    if newest_first:
        records.reverse()  # exactly the ascending order backwards, ties included
    window = page.window("deployments", records)  # the JSON of the page only
    conditions = await controller.conditions()
    window["deployments"] = [rollout_json(r, control, conditions.get(r.module, ())) for r in window["deployments"]]
    return web.json_response(window)


def _latest_for_module_id(book: RolloutBook, ident: str) -> RolloutRecord | None:
    """The newest rollout to `name-vX.Y.Z` (the id POST /deployments answers), if one started."""
    name, sep, version = ident.rpartition("-v")
    if not sep:
        return None
    found = [r for r in book.records() if r.module == name and r.target.version == version]
    return max(found, key=lambda r: (r.created_at, r.seq), default=None)


@ROUTES.get("/api/v1/wasm/deployments/{id}")
async def get_deployment(request: web.Request) -> web.Response:
    require(request, *ANY_ROLE)
    control = control_of(request)
    controller = control.controller
    ident = request.match_info["id"]
    record = control.book.get(ident) or _latest_for_module_id(control.book, ident)
    if record is None:
        raise ApiError(
            404, "not_found", f"deployment {ident!r} does not exist (yet: a requested one starts once merged)"
        )
    body = rollout_json(record, control, await controller.conditions_of(record.module))
    steps = await asyncio.to_thread(control.book.history, record.id, 100)
    body["steps"] = [
        {
            "step": s.step,
            "event": s.outcome,
            "at": datetime.fromtimestamp(s.at, UTC).isoformat(),
            "message": f"{s.reason}: {s.message}",
            "analysis": {"requests": s.requests, "errorRate": s.error_rate, "p99Ms": s.p99_ms, "region": s.region},
        }
        for s in steps
    ]
    return web.json_response(body)


@ROUTES.get("/api/v1/wasm/source")
async def source(request: web.Request) -> web.Response:
    require(request, *ANY_ROLE)
    return web.json_response(control_of(request).source_status())


@ROUTES.post("/api/v1/wasm/source/accept-rewrite")
async def accept_rewrite(request: web.Request) -> web.Response:
    """Someone who may adopt (admin by default) looked at the force-push the signing policy holds:
    follow the branch at `head`, which must be the head held (409 naming the held one otherwise)."""
    control = control_of(request)
    who = require(request, *sorted(control.adopt_roles))
    body = await _body(request)
    head = body.get("head") if isinstance(body, dict) else None
    if not isinstance(head, str) or not re.fullmatch(r"[0-9a-f]{40}", head):
        raise ApiError(400, "bad_request", "head: the full 40-hex SHA of the rewritten branch's head", "head")
    if control.accept_rewrite is None:
        raise ApiError(409, "unsupported", "this control plane's source cannot follow a rewrite")
    try:
        await asyncio.to_thread(control.accept_rewrite, head)  # waits for a sync in progress
    except RewriteNotPendingError as exc:
        raise ApiError(409, "not_pending", str(exc), "head") from None
    await asyncio.to_thread(control.store.append_audit, who.subject, "source.acceptRewrite", head, {"head": head})
    return web.json_response(control.source_status(), status=202)


def status_json(
    control: ControlDeps, conditions: Mapping[str, tuple[Condition, ...]], nodes: list[dict[str, Any]]
) -> dict[str, Any]:
    """Everything `hotswap status` shows, with every module's `conditions` (`Controller.conditions`)
    and the `nodes` as `nodes_json` made them."""
    controller = control.controller
    state = controller.state
    latest = latest_records(control.book.records())
    modules = []
    for name in sorted(set(conditions) | set(latest)):
        record = latest.get(name)
        of_module = conditions.get(name, ())
        modules.append(
            {
                "module": name,
                "rollout": rollout_json(record, control, of_module) if record else None,
                "conditions": [c.to_json() for c in of_module],
            }
        )
    stalled = controller.stalled_condition()
    revision = controller.source.latest
    fleet = revision.fleet if revision is not None else None
    return {
        "revision": state.revision,
        # deprecated interfaces and other warnings of the revision followed (path:line: field: message)
        "warnings": [str(p) for p in fleet.warnings if p.severity == "warning"] if fleet is not None else [],
        "appliedRevision": state.applied_revision,
        "replica": controller.replica or None,  # several replicas on one PostgreSQL: which one answers
        "leader": controller.leader,  # whether it plans and publishes (reconciler.apply.leader)
        "lastPass": {
            "at": _iso(state.at),
            "durationMs": round(state.duration_ms, 2),
            "passes": state.passes,
            "error": state.error,
        },
        "stalled": stalled.to_json() if stalled else None,
        "source": control.source_status(),
        "modules": modules,
        "nodes": nodes,
        "events": [e.to_json() for e in controller.events[-30:]],
    }


def _node_json(hub: NodeHub, view: NodeView) -> dict[str, Any]:
    return node_json(view, (t.generation if (t := hub.table(view.id)) else 0))


async def nodes_json(hub: NodeHub) -> list[dict[str, Any]]:
    """Every node as the status shows it, STATUS_NODES_A_TURN of them a turn of the event loop: at 1,000
    nodes, made in one piece and written with the standard library's encoder, a status held the loop
    for 45 ms (bench/scale.py's turn sampler)."""
    views = hub.view()
    made: list[dict[str, Any]] = []
    for start in range(0, len(views), STATUS_NODES_A_TURN):
        if start:
            await asyncio.sleep(0)
        made += [_node_json(hub, v) for v in views[start : start + STATUS_NODES_A_TURN]]
    return made


@ROUTES.get("/api/v1/wasm/status")
async def status(request: web.Request) -> web.Response:
    require(request, *ANY_ROLE)
    control = control_of(request)
    conditions = await control.controller.conditions()
    body = status_json(control, conditions, await nodes_json(control.hub))
    # orjson: a tenth of json.dumps' time, for a status of a thousand nodes
    return web.Response(body=orjson.dumps(body), content_type="application/json", charset="utf-8")


@ROUTES.get("/api/v1/wasm/snapshot")
async def snapshot(request: web.Request) -> web.Response:
    """What the next pass would plan from, less the desired fleet (`hotswap diff` brings its own)."""
    require(request, *ANY_ROLE)
    control = control_of(request)
    controller = control.controller
    revision = controller.source.latest
    approvals = revision.approvals if revision is not None else ()
    if revision is not None and revision.fleet is not None:
        taken = controller.snapshot(revision.fleet, approvals, controller.clock())
        nodes, records, metrics, now = taken.nodes, taken.records, taken.metrics, taken.now
    else:
        nodes, records, metrics, now = (), control.book.records(), (), controller.clock()
    return web.json_response(snapshot_json(nodes, records, approvals, metrics, now, controller.state.revision))


@ROUTES.get("/health")
@public
async def health(request: web.Request) -> web.Response:
    control = control_of(request)
    return web.json_response({"status": "ok", "version": control.version, "python": platform.python_version()})


def routes(control: ControlDeps) -> Callable[[web.Application, ApiDeps], None]:
    """A route file's `setup` bound to the running control plane."""

    def setup(app: web.Application, deps: ApiDeps) -> None:
        app[CONTROL] = control
        app.router.add_routes(ROUTES)
        from reconciler.api import deployments, execute, interfaces
        from reconciler.api.openapi import setup as openapi

        deployments.setup(app)
        execute.setup(app)
        interfaces.setup(app)
        openapi(app)

    return setup
