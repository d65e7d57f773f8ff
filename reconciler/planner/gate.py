"""Interface gates: a breaking change of a WIT interface holds back the modules that implement it.

FR-WASM-005 and DESIGN.md section 5. Each Interface of a new revision is compared with the same
Interface at the last fully applied revision (its *base*). A breaking change with a major version
bump needs the fleet policy's `breakingInterfaceChanges` approvals of the new package
(`Hotswap-Approve: example:greeter@2.0.0`, or `hotswap approve example:greeter@2.0.0`); a breaking
change without one can never be approved and waits for a revert or a bump. Until then the planner
sees the implementing modules as they were at the base, so nothing that implements the new interface
rolls out; everything else goes ahead.

Pure: the base fleet and the approvals come in (`reconciler.apply.gates` reads the base from the
store and Git, and announces each new wait once).
"""

from __future__ import annotations

from dataclasses import replace

from reconciler.interfaces.evolution import compare
from reconciler.spec.approvals import Approval, ApprovalRule, evaluate
from reconciler.spec.fleet import DesiredFleet
from reconciler.spec.models import package_of


def breaking_rule(desired: DesiredFleet) -> ApprovalRule:
    rule = desired.policy.approvals.breaking_interface_changes
    if rule is None:
        return ApprovalRule.of(["admin"], 1)
    return ApprovalRule.of([str(r) for r in rule.roles], rule.count)


def waiting(desired: DesiredFleet, base: DesiredFleet | None, approvals: tuple[Approval, ...]) -> dict[str, str]:
    """module -> why it waits: it implements an interface whose change since `base` breaks callers
    and is not approved (None: a first start, nothing to compare with)."""
    if base is None:
        return {}
    out: dict[str, str] = {}
    rule = breaking_rule(desired)
    for name, package in desired.wit_packages.items():
        old = base.wit_packages.get(name)
        if old is None or old.digest == package.digest:
            continue
        evolution = compare(old, package)
        if not evolution.breaking:
            continue
        if evolution.problems:
            message = f"interface {name}: {'; '.join(evolution.problems)}; revert the change or bump the major version"
        else:
            result = evaluate(rule, package.id, package.version or "", approvals)
            if result.satisfied:
                continue
            message = (
                f"interface {name} ({evolution.old} -> {evolution.new}) has breaking changes; {result.message}; "
                f"approve with `hotswap approve {package.name}`"
            )
        for module, doc in desired.modules.items():
            if doc.spec.implements and package_of(doc.spec.implements) == package.name:
                out[module] = message
    return out


def held_back(desired: DesiredFleet, base: DesiredFleet, waits: dict[str, str]) -> DesiredFleet:
    """`desired` with each waiting module as it was at `base` (left out where `base` had none)."""
    modules = dict(desired.modules)
    binaries = {k: v for k, v in desired.binaries.items() if k[0] not in waits}
    for module in waits:
        if module in base.modules:
            modules[module] = base.modules[module]
            binaries.update({k: v for k, v in base.binaries.items() if k[0] == module})
        else:
            del modules[module]  # a new module that implements the new interface: not yet
    return replace(desired, modules=modules, binaries=binaries)
