"""Interface gates: a breaking change of a WIT interface holds back the modules that implement it.

FR-WASM-005 and DESIGN.md section 5. Each Interface of a new revision is compared with the same
Interface at the last fully applied revision (its *base*). A breaking change with a major version
bump needs the fleet policy's `breakingInterfaceChanges` approvals of the new package
(`Hotswap-Approve: example:greeter@2.0.0`, or `hotswap approve example:greeter@2.0.0`); a breaking
change without one can never be approved and waits for a revert or a bump. Until then the planner
sees the implementing modules as they were at the base, so nothing that implements the new interface
rolls out; everything else goes ahead.

Pure: the snapshot brings the base fleet and the approvals (`reconciler.apply.gates` reads the base
from the store and Git, and announces each new wait once). `Gate` runs first in every pass, full or
incremental: the rest of the planner sees the held-back fleet, and `paused` marks what waits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from reconciler.interfaces.evolution import compare
from reconciler.planner.actions import Plan
from reconciler.planner.types import Condition, ConditionType, Snapshot
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


class Gate:
    """`held(snapshot)`: the snapshot the rest of a pass plans from and what waits. The held-back
    fleet of the last revision is kept, so the incremental planner sees the same object pass after
    pass (its caches are keyed by the fleet's identity)."""

    def __init__(self) -> None:
        self._last: tuple[DesiredFleet, DesiredFleet | None, tuple[tuple[str, str], ...], DesiredFleet] | None = None

    def held(self, snapshot: Snapshot) -> tuple[Snapshot, dict[str, str]]:
        waits = waiting(snapshot.desired, snapshot.base, snapshot.approvals)
        if not waits or snapshot.base is None:
            return snapshot, {}
        key = tuple(sorted(waits.items()))
        last = self._last
        if last is not None and last[0] is snapshot.desired and last[1] is snapshot.base and last[2] == key:
            fleet = last[3]
        else:
            fleet = held_back(snapshot.desired, snapshot.base, waits)
            self._last = (snapshot.desired, snapshot.base, key, fleet)
        return replace(snapshot, desired=fleet), waits


def paused(plan: Plan, waits: Mapping[str, str]) -> Plan:
    """`plan` with each waiting module Paused as AwaitingInterfaceApproval (its other conditions kept)."""
    if not waits:
        return plan
    status = dict(plan.status)
    for module, message in waits.items():
        status[module] = (
            Condition(ConditionType.PAUSED, True, "AwaitingInterfaceApproval", message),
            *(c for c in status.get(module, ()) if c.type is not ConditionType.PAUSED),
        )
    return replace(plan, status=status, waiting=dict(waits))
