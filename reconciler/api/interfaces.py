"""Interface routes: the fleet's WIT interfaces, proposals of new ones, approvals, compatibility checks.

    GET  /api/v1/wasm/interfaces                 the Interfaces of the current revision
    GET  /api/v1/wasm/interfaces/{id}            one (by Interface name), with its WIT text
    POST /api/v1/wasm/interfaces                 {name, wit, wasi?} -> a signed commit writing the WIT and
                                                 the Interface document (review branch, or the tracked
                                                 branch under `apiCommitsToBranch`); breaking changes are
                                                 named, and refused without a major version bump
    POST /api/v1/wasm/interfaces/{id}/approve    admin: a signed approval commit
                                                 `Hotswap-Approve: <package>` (what gates a breaking change)
    POST /api/v1/wasm/interfaces/{id}/validate   {module: "greeter-v1.1.0"} (registered) or {wasm: base64}:
                                                 the problems that keep it from implementing the interface

Where it sits: reads come from the control plane's current revision (`source.latest.fleet`: the
Interface documents and their parsed `wit_packages`); writes go through reconciler.gitsource.gitwrite like the
deployment routes. `{id}` is an Interface name (`greeter`), or for approve a package
(`example:greeter@2.0.0`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import posixpath
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from ruamel.yaml.comments import CommentedMap

from edge.wasm import ModuleInfo, WasmError, inspect
from reconciler.api.base import ANY_ROLE, ApiError, bad_request, deps, read_object, require
from reconciler.api.control import ControlDeps, control_of
from reconciler.api.deployments import (
    REQUESTED_BY,
    approver,
    caller_name,
    commit_approval,
    current_fleet,
    write,
    writer_of,
)
from reconciler.gitsource.gitwrite import DocumentNotFoundError, edit_document, find_document
from reconciler.interfaces import InterfaceError, WitError, WitPackage, check_module, compare, parse_wit_text
from reconciler.spec.approvals import parse_target
from reconciler.spec.fields import NAME_PATTERN
from reconciler.spec.fleet import DesiredFleet
from reconciler.spec.models import WIT_PACKAGE_RE, Capabilities, package_of

WRITERS = ("developer", "admin")
APPROVERS = ("admin",)
READERS = tuple(sorted(ANY_ROLE))
MAX_WIT_BYTES = 256 * 1024
MAX_VALIDATE_BYTES = 70 << 20
PROPOSE_FIELDS = frozenset({"name", "wit", "wasi"})
VALIDATE_FIELDS = frozenset({"module", "wasm", "interface"})
ROUTES = web.RouteTableDef()  # each handler names its route; setup() adds them all


def setup(app: web.Application) -> None:
    app.router.add_routes(ROUTES)


def interface_json(fleet: DesiredFleet, name: str) -> dict[str, Any]:
    doc = fleet.interfaces[name]
    package = fleet.wit_packages.get(name)
    location = fleet.locations.get(("Interface", name))
    body: dict[str, Any] = {
        "id": name,
        "name": name,
        "package": doc.spec.package,
        "version": doc.spec.version,
        "wasi": doc.spec.wasi,
        "deprecated": doc.spec.deprecated,
        "deprecationMessage": doc.spec.deprecation_message,
        "status": "deprecated" if doc.spec.deprecated else "active",
        "digest": package.digest if package else None,
        "interfaces": {
            iface.name: sorted(iface.functions) for iface in (package.interfaces.values() if package else ())
        },
        "worlds": sorted(package.worlds) if package else [],
        "implementedBy": sorted(
            m
            for m, module in fleet.modules.items()
            if module.spec.implements and package_of(module.spec.implements) == doc.spec.package
        ),
        "file": location.path if location else None,
    }
    return body


def wit_text(control: ControlDeps, fleet: DesiredFleet, name: str) -> str | None:
    """The WIT file of an Interface at the current revision, read from the Git mirror."""
    source = control.controller.source
    revision, repo = source.latest, getattr(source, "repo", None)
    location = fleet.locations.get(("Interface", name))
    if revision is None or repo is None or location is None:
        return None
    root = str(getattr(source, "path", ""))
    path = posixpath.normpath(posixpath.join(root, posixpath.dirname(location.path), fleet.interfaces[name].spec.wit))
    data = repo.read_blob(revision.sha, path)
    return data.decode(errors="replace") if data is not None else None


@ROUTES.get("/api/v1/wasm/interfaces")
async def list_interfaces(request: web.Request) -> web.Response:
    require(request, *READERS)
    fleet = current_fleet(control_of(request))
    return web.json_response({"interfaces": [interface_json(fleet, name) for name in sorted(fleet.interfaces)]})


def _interface_name(fleet: DesiredFleet, ident: str) -> str:
    if ident in fleet.interfaces:
        return ident
    for name, doc in fleet.interfaces.items():
        if doc.spec.package == ident:
            return name
    raise ApiError(404, "not_found", f"interface {ident!r} is not in the fleet")


@ROUTES.get("/api/v1/wasm/interfaces/{id}")
async def get_interface(request: web.Request) -> web.Response:
    require(request, *READERS)
    fleet = current_fleet(control_of(request))
    name = _interface_name(fleet, request.match_info["id"])
    body = interface_json(fleet, name)
    body["wit"] = await asyncio.to_thread(wit_text, control_of(request), fleet, name)
    return web.json_response(body)


# -- POST /interfaces --------------------------------------------------------------------------------


def _parse(text: str, name: str) -> WitPackage:
    try:
        return parse_wit_text(text, f"{name}.wit")
    except WitError as exc:
        line = f" (line {exc.line})" if exc.line else ""
        raise bad_request("wit", f"{exc.message}{line}") from None
    except InterfaceError as exc:
        raise ApiError(503, "tool_unavailable", f"cannot parse WIT now: {exc}") from None


@ROUTES.post("/api/v1/wasm/interfaces")
async def propose_interface(request: web.Request) -> web.Response:
    who = require(request, *WRITERS)
    control = control_of(request)
    body = await read_object(request, MAX_WIT_BYTES + 4096)
    for key in body:
        if key not in PROPOSE_FIELDS:
            raise bad_request(str(key), f"unknown field (expected {', '.join(sorted(PROPOSE_FIELDS))})")
    name = body.get("name")
    if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
        raise bad_request("name", "is required: a lowercase name like greeter")
    wit = body.get("wit")
    if not isinstance(wit, str) or not wit.strip():
        raise bad_request("wit", "is required: the WIT text")
    wasi = body.get("wasi", "preview1")
    if wasi not in ("preview1", "preview2"):
        raise bad_request("wasi", "must be preview1 or preview2")
    package = await asyncio.to_thread(_parse, wit, name)
    if package.version is None or not WIT_PACKAGE_RE.match(package.name):
        raise bad_request("wit", f"the package {package.name!r} needs a version, e.g. package example:{name}@1.0.0;")
    fleet = current_fleet(control)
    changes: list[str] = []
    needs_approval = False
    existing = fleet.interfaces.get(name)
    old = fleet.wit_packages.get(name)
    if old is not None:
        evolution = compare(old, package)
        if evolution.problems:
            raise ApiError(409, "breaking_change", "; ".join(evolution.problems))
        changes = [str(c) for c in evolution.changes]
        needs_approval = evolution.needs_approval
    location = fleet.locations.get(("Interface", name))

    def edit(root: Path) -> Sequence[str]:
        if existing is not None:
            path = find_document(root, "Interface", name, location.path if location else None)
            wit_path = (path.parent / existing.spec.wit).resolve()
            if wit_path.is_dir() or not wit_path.is_relative_to(root.resolve()):
                raise DocumentNotFoundError(f"interface {name}: its WIT {existing.spec.wit!r} is not one file")
            wit_path.write_text(wit)

            def change(doc: CommentedMap) -> None:
                doc["spec"]["package"] = package.name
                if doc["spec"].get("wasi", "preview1") != wasi:
                    doc["spec"]["wasi"] = wasi

            edit_document(path, "Interface", name, change)
            return [str(path.relative_to(root)), str(wit_path.relative_to(root.resolve()))]
        folder = root / "interfaces"
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.wit").write_text(wit)
        (folder / f"{name}.yaml").write_text(
            "apiVersion: hotswap.dev/v1\nkind: Interface\n"
            f"metadata:\n  name: {name}\nspec:\n  package: {package.name}\n  wit: {name}.wit\n  wasi: {wasi}\n"
        )
        return [f"interfaces/{name}.wit", f"interfaces/{name}.yaml"]

    review = not fleet.policy.api_commits_to_branch
    branch = f"hotswap/interface-{name}-{package.version}" if review else None
    result = await write(
        control,
        writer_of(control).write,
        edit,
        f"interface {name}: {package.name}",
        "Proposed through POST /api/v1/wasm/interfaces." + (f"\n\nChanges: {'; '.join(changes)}" if changes else ""),
        [(REQUESTED_BY, caller_name(control, who.subject))],
        review_branch=branch,
    )
    await asyncio.to_thread(
        control.store.append_audit, who.subject, "interface.propose", package.name, {"commit": result.sha}
    )
    return web.json_response(
        {
            "id": name,
            "package": package.name,
            "breaking": needs_approval,
            "needsApproval": needs_approval,
            "changes": changes,
            "status": "PendingReview" if review else "Committed",
            "requestedBy": who.subject,
            **result.to_json(),
        },
        status=202,
    )


# -- POST /interfaces/{id}/approve -------------------------------------------------------------------


@ROUTES.post("/api/v1/wasm/interfaces/{id}/approve")
async def approve_interface(request: web.Request) -> web.Response:
    who = require(request, *APPROVERS)
    control = control_of(request)
    ident = request.match_info["id"]
    if ":" in ident and "@" in ident:
        # Read as the Git source reads the trailer back (`parse_target`): an approval it would not
        # count is never committed.
        try:
            name, version = parse_target(ident)
        except ValueError:
            name = version = ""
        if ":" not in name or ident != f"{name}@{version}":  # parse_target forgives white space around it
            raise bad_request("id", f"{ident!r} is not a WIT package like example:greeter@2.0.0")
        package = f"{name}@{version}"
    else:
        fleet = current_fleet(control)
        package = fleet.interfaces[_interface_name(fleet, ident)].spec.package
    act = approver(control, who.subject)
    return await commit_approval(
        control,
        act,
        ident,
        package,
        "POST /api/v1/wasm/interfaces/{id}/approve",
        "interface.approve",
        {"subject": who.subject},
    )


# -- POST /interfaces/{id}/validate ------------------------------------------------------------------


def _registered_binary(request: web.Request, module_id: str) -> tuple[bytes, str]:
    registry = deps(request).registry
    record = registry.get(module_id)
    with registry.open_blob(record.digest) as blob:
        return blob.file.read(), record.name


def _inspect(data: bytes) -> ModuleInfo:
    try:
        return inspect(data)
    except WasmError as exc:
        raise bad_request("wasm", f"not valid WebAssembly ({exc})") from None


@ROUTES.post("/api/v1/wasm/interfaces/{id}/validate")
async def validate_interface(request: web.Request) -> web.Response:
    require(request, *READERS)
    control = control_of(request)
    fleet = current_fleet(control)
    name = _interface_name(fleet, request.match_info["id"])
    body = await read_object(request, MAX_VALIDATE_BYTES)
    for key in body:
        if key not in VALIDATE_FIELDS:
            raise bad_request(str(key), f"unknown field (expected {', '.join(sorted(VALIDATE_FIELDS))})")
    module_id, encoded, ref = body.get("module"), body.get("wasm"), body.get("interface")
    if (module_id is None) == (encoded is None):
        raise bad_request("body", 'give exactly one of "module" (a registered module id) or "wasm" (base64)')
    if ref is not None and not isinstance(ref, str):
        raise bad_request("interface", "must be a string such as greet")
    granted = Capabilities().granted()
    if module_id is not None:
        if not isinstance(module_id, str):
            raise bad_request("module", "must be a module id such as greeter-v1.1.0")
        data, module_name = await asyncio.to_thread(_registered_binary, request, module_id)
        if module_name in fleet.modules:
            granted = fleet.modules[module_name].spec.capabilities.granted()
    else:
        if not isinstance(encoded, str):
            raise bad_request("wasm", "must be a base64 string")
        try:
            data = base64.b64decode("".join(encoded.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise bad_request("wasm", f"not valid base64 ({exc})") from None
    package = fleet.wit_packages.get(name)
    if package is None:
        raise ApiError(409, "no_wit", f"interface {name}: its WIT did not parse at the current revision")
    wasi = fleet.interfaces[name].spec.wasi
    info = await asyncio.to_thread(_inspect, data)
    try:
        problems = await asyncio.to_thread(check_module, info, package, ref, granted, wasi, binary=data)
    except InterfaceError as exc:
        raise ApiError(503, "tool_unavailable", f"cannot check the module now: {exc}") from None
    return web.json_response(
        {
            "interface": name,
            "package": package.name,
            "module": module_id,
            "digest": info.digest,
            "compatible": not problems,
            "problems": problems,
        }
    )
