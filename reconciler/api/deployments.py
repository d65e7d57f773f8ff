"""Deployment writes: requests and approvals become commits in the fleet repository; rollback acts at once.

    POST /api/v1/wasm/deployments                {module, version, strategy?, regions?} -> a signed commit
                                                 that sets the Module's version (on a review branch, or
                                                 on the tracked branch under `apiCommitsToBranch`)
    POST /api/v1/wasm/deployments/{id}/execute   an approval by the caller: a signed empty commit on the
                                                 tracked branch with `Hotswap-Approve: module@version` and
                                                 `Hotswap-Approved-By: <the caller's principal>`; 409 when
                                                 the version waits for no approval, the caller already
                                                 approved it, or the commit would not count (the control
                                                 plane's key or the caller not in the trust file)
    POST /api/v1/wasm/deployments/{id}/rollback  an operator's emergency rollback of an active rollout,
                                                 written to the rollout book, audit-logged, applied by
                                                 the next pass (poked at once)
    POST /api/v1/wasm/deployments/{id}/pause     an operator holds an active rollout at its step
    POST /api/v1/wasm/deployments/{id}/resume    and lets it go on

Where it sits: beside the read routes of reconciler/api/control.py, over the same `ControlDeps`.
Writes go through reconciler.gitsource.gitwrite (in a worker thread); the Git source is then asked to fetch
at once, so the commit's effect shows within a fetch. `{id}` is a rollout id (`greeter-r3`), a
module id (`greeter-v1.2.0`, what POST /deployments answers) or, for rollback, a module name.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from edge.protocol import module_id
from reconciler.api.base import ApiError, bad_request, deps, read_object, require
from reconciler.api.control import ControlDeps, control_of, rollout_json
from reconciler.apply.rollouts import StaleBookError
from reconciler.gitsource.acting import Acting, ActingError, acting_for, may
from reconciler.gitsource.gitwrite import (
    DocumentNotFoundError,
    GitWriteError,
    GitWriter,
    WriteResult,
    edit_document,
    find_document,
    flow_map,
)
from reconciler.planner import Condition, ConditionType, Phase, latest_records
from reconciler.spec.approvals import API_APPROVED_BY_TRAILER, APPROVE_TRAILER, REQUESTED_BY_TRAILER
from reconciler.spec.fields import NAME_PATTERN, SEMVER_RE
from reconciler.spec.fleet import DesiredFleet
from reconciler.store.errors import NotFoundError

REQUESTERS = ("developer", "admin")
ROLLBACKERS = ("operator", "admin")
REQUESTED_BY = REQUESTED_BY_TRAILER
DEPLOY_FIELDS = frozenset({"module", "version", "strategy", "regions"})
MODULE_ID = re.compile(r"^(?P<module>[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)-v(?P<version>\d+\.\d+\.\d+\S*)$")
ROUTES = web.RouteTableDef()  # each handler names its route; setup() adds them all


def setup(app: web.Application) -> None:
    app.router.add_routes(ROUTES)


def current_fleet(control: ControlDeps) -> DesiredFleet:
    revision = control.controller.source.latest
    if revision is None or revision.fleet is None:
        raise ApiError(503, "no_revision", "the control plane has no valid fleet revision yet; see GET /source")
    return revision.fleet


def writer_of(control: ControlDeps) -> GitWriter:
    if control.writer is None:
        raise ApiError(501, "not_configured", "this control plane does not write to its fleet repository")
    return control.writer


def trigger_fetch(control: ControlDeps) -> None:
    trigger = getattr(control.controller.source, "trigger", None)
    if callable(trigger):
        trigger()


def _string(body: dict[str, Any], key: str, pattern: str | None = None) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise bad_request(key, "is required (a string)")
    if pattern is not None and not re.match(pattern, value):
        raise bad_request(key, f"{value!r} is not valid")
    return value


async def write(control: ControlDeps, call: Any, *args: Any, **kwargs: Any) -> WriteResult:
    try:
        result: WriteResult = await asyncio.to_thread(call, *args, **kwargs)
    except DocumentNotFoundError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except GitWriteError as exc:
        raise ApiError(409, "git_write_failed", str(exc)) from None
    trigger_fetch(control)
    return result


# -- POST /deployments -------------------------------------------------------------------------------


def _deploy_edit(
    module: str, version: str, digest: str | None, strategy: str | None, regions: list[str] | None, hint: str | None
) -> Any:
    def change(doc: CommentedMap) -> None:
        spec = doc["spec"]
        old_version, old_source = str(spec["version"]), spec.get("source")
        if old_version != version:
            extras = spec.get("versions")
            found = None
            if isinstance(extras, list):
                found = next((e for e in extras if isinstance(e, dict) and str(e.get("version")) == version), None)
            source: Any
            if found is not None and isinstance(extras, CommentedSeq):
                # A version the module already lists: swap it with the current one (same layout).
                source = found.get("source")
                extras[extras.index(found)] = flow_map(version=old_version, source=old_source)
            elif digest is not None:
                source = flow_map(digest=digest)
            else:
                raise ApiError(
                    409,
                    "not_registered",
                    f"{module_id(module, version)} is not registered and not among the module's versions: "
                    "upload it first (POST /api/v1/wasm/modules)",
                )
            spec["version"] = version
            spec["source"] = source
        if strategy is not None:
            spec["rollout"] = strategy
        if regions is not None:
            placement = spec.get("placement")
            if not isinstance(placement, CommentedMap):
                placement = CommentedMap()
                spec["placement"] = placement
            listed = CommentedSeq(regions)
            listed.fa.set_flow_style()
            placement["regions"] = listed

    def edit(root: Path) -> Sequence[str]:
        path = find_document(root, "Module", module, hint)
        return [str(path.relative_to(root))] if edit_document(path, "Module", module, change) else []

    return edit


@ROUTES.post("/api/v1/wasm/deployments")
async def create_deployment(request: web.Request) -> web.Response:
    who = require(request, *REQUESTERS)
    control = control_of(request)
    body = await read_object(request)
    for key in body:
        if key not in DEPLOY_FIELDS:
            raise bad_request(str(key), f"unknown field (expected {', '.join(sorted(DEPLOY_FIELDS))})")
    module = _string(body, "module", NAME_PATTERN)
    version = _string(body, "version")
    if not SEMVER_RE.match(version):
        raise bad_request("version", f"{version!r} is not semver (MAJOR.MINOR.PATCH)")
    fleet = current_fleet(control)
    if module not in fleet.modules:
        raise ApiError(404, "not_found", f"module {module!r} is not in the fleet; add its Module document in Git")
    strategy = body.get("strategy")
    if strategy is not None and (not isinstance(strategy, str) or strategy not in fleet.strategies):
        known = ", ".join(sorted(fleet.strategies)) or "none"
        raise bad_request("strategy", f"{strategy!r} is not a RolloutStrategy of the fleet ({known})")
    regions = body.get("regions")
    if regions is not None:
        if not isinstance(regions, list) or not regions or not all(isinstance(r, str) for r in regions):
            raise bad_request("regions", "must be a non-empty list of region names")
        unknown = [r for r in regions if r not in fleet.spec.region_names]
        if unknown:
            raise bad_request("regions", f"{', '.join(unknown)}: not a region of the fleet")
    digest = None
    try:
        record = await asyncio.to_thread(deps(request).registry.get, module_id(module, version))
        digest = record.digest
    except NotFoundError:
        pass
    location = fleet.locations.get(("Module", module))
    review = not fleet.policy.api_commits_to_branch
    branch = f"hotswap/deploy-{module}-{version}-{secrets.token_hex(3)}" if review else None
    edit = _deploy_edit(module, version, digest, strategy, regions, location.path if location else None)
    requester = caller_name(control, who.subject)
    result = await write(
        control,
        writer_of(control).write,
        edit,
        f"deploy {module} {version}",
        "Requested through POST /api/v1/wasm/deployments"
        + (f" (strategy {strategy})" if strategy else "")
        + (f" to {', '.join(regions)}" if regions else "")
        + ".",
        [(REQUESTED_BY, requester)],
        review_branch=branch,
    )
    await asyncio.to_thread(
        control.store.append_audit,
        requester,
        "deployment.request",
        module_id(module, version),
        {"commit": result.sha, "branch": result.branch},
    )
    answer = {
        "id": module_id(module, version),
        "module": module,
        "version": version,
        "strategy": strategy or fleet.modules[module].spec.rollout,
        "regions": regions,
        "status": "PendingReview" if review else "Committed",
        "requestedBy": who.subject,
        **result.to_json(),
    }
    where = f"/api/v1/wasm/deployments/{module_id(module, version)}"
    return web.json_response(answer, status=202, headers={"Location": where})


# -- POST /deployments/{id}/execute ------------------------------------------------------------------


def target_of(control: ControlDeps, ident: str) -> tuple[str, str]:
    """(module, version) a deployment id names: a rollout id or a module id."""
    record = control.book.get(ident)
    if record is not None:
        return record.module, record.target.version
    match = MODULE_ID.match(ident)
    if match is not None and SEMVER_RE.match(match["version"]):
        return match["module"], match["version"]
    raise ApiError(404, "not_found", f"deployment {ident!r} is neither a rollout id nor a module id (name-vX.Y.Z)")


def caller_name(control: ControlDeps, subject: str) -> str:
    """The trust principal the token's subject names (its spelling there), else the subject."""
    principal = control.trust.principal(subject) if control.trust is not None else None
    return principal.name if principal is not None and not principal.is_control_plane else subject


def acting(control: ControlDeps, subject: str) -> Acting:
    """Whom a commit the control plane signs for the caller `subject` counts for; 409 when nobody."""
    writer = writer_of(control)
    trust = control.trust
    if trust is None:
        raise ApiError(409, "untrusted_writer", "this control plane has no trust file: API approvals count for nobody")
    try:
        return acting_for(trust, writer.public_key, subject)
    except ActingError as exc:
        raise ApiError(409, "untrusted_writer", str(exc)) from None


def approver(control: ControlDeps, subject: str) -> Acting:
    """`acting` for an approval: 409 when the trust file would not count the caller's approval."""
    act = acting(control, subject)
    assert control.trust is not None  # acting() answered 409 without one
    try:
        may(act, control.trust.roles.approve, "approve")
    except ActingError as exc:
        raise ApiError(409, "not_allowed", str(exc)) from None
    return act


async def commit_approval(
    control: ControlDeps, act: Acting, ident: str, target: str, route: str, action: str, detail: dict[str, Any]
) -> web.Response:
    """Approve `target` (`module@version` or a WIT package) for the caller: a signed empty commit on the
    tracked branch with `Hotswap-Approve` and `Hotswap-Approved-By`, audit-logged as `action`."""
    result = await write(
        control,
        writer_of(control).write,
        lambda root: [],
        f"approve {target}",
        f"Approved by {act.caller.name} through {route}.",
        [(APPROVE_TRAILER, target), (API_APPROVED_BY_TRAILER, act.caller.name)],
        review_branch=None,
    )
    await asyncio.to_thread(
        control.store.append_audit, act.caller.name, action, target, {"commit": result.sha, **detail}
    )
    return web.json_response(
        {"id": ident, "approves": target, "approvedBy": act.caller.name, **result.to_json()}, status=202
    )


def waiting_for_approval(control: ControlDeps, module: str, version: str, conditions: tuple[Condition, ...]) -> bool:
    """Whether module@version waits for an approval now: its rollout, or a held pin or override (the
    module's `conditions`, from `Controller.conditions_of`)."""
    record = latest_records(control.book.records()).get(module)
    if record is not None and record.phase is Phase.WAITING_APPROVAL and record.target.version == version:
        return True
    target = f"{module}@{version}"
    return any(
        c.type is ConditionType.PAUSED and c.status and c.reason == "AwaitingApproval" and target in c.message
        for c in conditions
    )


def already_approved(control: ControlDeps, module: str, version: str, principal: str) -> str | None:
    """The commit of `principal`'s approval of module@version not yet spent on a gate, if any."""
    revision = control.controller.source.latest
    record = latest_records(control.book.records()).get(module)
    spent = set(record.approvals_used) if record is not None else set()
    for approval in getattr(revision, "approvals", ()):
        mine = (approval.module, approval.version, approval.principal) == (module, version, principal)
        if mine and approval.commit not in spent:
            return str(approval.commit)
    return None


@ROUTES.post("/api/v1/wasm/deployments/{id}/execute")
async def approve_deployment(request: web.Request) -> web.Response:
    control = control_of(request)
    fleet = current_fleet(control)
    production = fleet.spec.environment == "production"
    who = require(request, "admin") if production else require(request, *REQUESTERS)
    module, version = target_of(control, request.match_info["id"])
    if module not in fleet.modules:
        raise ApiError(404, "not_found", f"module {module!r} is not in the fleet")
    target = f"{module}@{version}"
    act = approver(control, who.subject)
    if not waiting_for_approval(control, module, version, await control.controller.conditions_of(module)):
        record = latest_records(control.book.records()).get(module)
        now = f"its latest rollout {record.id} is {record.phase.value} at {record.target.version}" if record else ""
        raise ApiError(
            409,
            "not_waiting",
            f"{target} is not waiting for approval{f' ({now})' if now else ''}; nothing was committed",
        )
    earlier = already_approved(control, module, version, act.caller.name)
    if earlier is not None:
        raise ApiError(
            409,
            "already_approved",
            f"{act.caller.name} already approved {target} (commit {earlier[:12]}); approvals count once per "
            "principal, so another principal must approve",
        )
    return await commit_approval(
        control,
        act,
        request.match_info["id"],
        target,
        "POST /api/v1/wasm/deployments/{id}/execute",
        "deployment.approve",
        {"subject": who.subject, "roles": sorted(act.roles)},
    )


# -- POST /deployments/{id}/rollback -----------------------------------------------------------------


async def _operator_request(http: web.Request, action: str, **changes: Any) -> web.Response:
    """Write an operator's request on an active rollout (rollback, pause, resume), poke, audit it."""
    who = require(http, *ROLLBACKERS)
    control = control_of(http)
    controller = control.controller
    ident = http.match_info["id"]
    record = control.book.get(ident)
    if record is None:
        match = MODULE_ID.match(ident)
        module = match["module"] if match is not None else ident
        record = latest_records(control.book.records()).get(module)
    if record is None:
        raise ApiError(404, "not_found", f"no rollout {ident!r} (a rollout id, module id or module name)")
    if not record.active:
        raise ApiError(
            409,
            "not_active",
            f"rollout {record.id} is {record.phase.value}: only an active rollout can {action}; "
            "to return to an earlier version, deploy it (POST /api/v1/wasm/deployments) or commit it",
        )
    for _ in range(5):
        try:
            record = await asyncio.to_thread(control.book.request, record.id, **changes)
            break
        except StaleBookError:
            continue  # a pass wrote the record meanwhile: the book reloaded, ask again
    else:
        raise ApiError(503, "busy", f"rollout {record.id} kept changing; try again")
    controller.poke()
    await asyncio.to_thread(
        control.store.append_audit,
        who.subject,
        f"rollout.{action}",
        record.id,
        {
            "module": record.module,
            "from": record.target.version,
            "to": record.previous.version if record.previous else None,
        },
    )
    body = rollout_json(record, control, await controller.conditions_of(record.module))
    body["request"] = action
    body["requestedBy"] = who.subject
    return web.json_response(body, status=202)


@ROUTES.post("/api/v1/wasm/deployments/{id}/rollback")
async def rollback_deployment(request: web.Request) -> web.Response:
    return await _operator_request(request, "rollback", request="rollback")


@ROUTES.post("/api/v1/wasm/deployments/{id}/pause")
async def pause_deployment(request: web.Request) -> web.Response:
    """Hold an active rollout where it is (traffic stays as the current step set it)."""
    return await _operator_request(request, "pause", held=True)


@ROUTES.post("/api/v1/wasm/deployments/{id}/resume")
async def resume_deployment(request: web.Request) -> web.Response:
    return await _operator_request(request, "resume", held=False)
