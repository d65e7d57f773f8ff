"""Interface gates: a breaking change of a WIT interface holds back the modules that implement it.

FR-WASM-005 and DESIGN.md section 5. The controller compares each Interface of a new revision with
the same Interface at the last fully applied revision (its *base*, read back from Git after a
restart). A breaking change with a major version bump needs the fleet policy's
`breakingInterfaceChanges` approvals of the new package (`Hotswap-Approve: example:greeter@2.0.0`,
or `hotswap approve example:greeter@2.0.0`); a breaking change without one can never be approved and
waits for a revert or a bump. Until then the planner sees the implementing modules as they were at
the base, so nothing that implements the new interface rolls out; everything else goes ahead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

from reconciler.interfaces import compare
from reconciler.spec.approvals import Approval, ApprovalRule, evaluate
from reconciler.spec.fleet import DesiredFleet
from reconciler.spec.models import package_of
from reconciler.store.revisions import RevisionStore


class FleetHistory(Protocol):
    def fleet_at(self, sha: str) -> DesiredFleet | None: ...


@dataclass(frozen=True)
class Held:
    fleet: DesiredFleet  # what the planner gets: gated modules as they were at the base
    waiting: dict[str, str] = field(default_factory=dict)  # module -> why it waits
    new_waits: tuple[tuple[str, str], ...] = ()  # (module, message) not announced before


def breaking_rule(desired: DesiredFleet) -> ApprovalRule:
    rule = desired.policy.approvals.breaking_interface_changes
    if rule is None:
        return ApprovalRule.of(["admin"], 1)
    return ApprovalRule.of([str(r) for r in rule.roles], rule.count)


class InterfaceGates:
    def __init__(self, store: RevisionStore) -> None:
        self.store = store
        self.base: DesiredFleet | None = None
        self.ready = False
        self._announced: set[tuple[str, str]] = set()
        self._cache: dict[tuple[int, tuple[tuple[str, str], ...]], DesiredFleet] = {}

    def load_base(self, history: FleetHistory) -> None:
        """The fleet at the last applied revision (None on a first start: nothing to compare with)."""
        applied = self.store.last_applied_revision()
        self.base = history.fleet_at(applied.sha) if applied is not None else None
        self.ready = True

    def applied(self, fleet: DesiredFleet) -> None:
        """`fleet` is now the last applied revision's: later changes are judged against it."""
        self.base = fleet

    def waiting(self, desired: DesiredFleet, approvals: tuple[Approval, ...]) -> dict[str, str]:
        base = self.base
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
                message = (
                    f"interface {name}: {'; '.join(evolution.problems)}; revert the change or bump the major version"
                )
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

    def hold(self, desired: DesiredFleet, approvals: tuple[Approval, ...]) -> Held:
        waiting = self.waiting(desired, approvals)
        if not waiting:
            return Held(desired)
        key = (id(desired), tuple(sorted(waiting.items())))
        fleet = self._cache.get(key)
        if fleet is None:
            assert self.base is not None
            base = self.base
            modules = dict(desired.modules)
            binaries = {k: v for k, v in desired.binaries.items() if k[0] not in waiting}
            for module in waiting:
                if module in base.modules:
                    modules[module] = base.modules[module]
                    binaries.update({k: v for k, v in base.binaries.items() if k[0] == module})
                else:
                    del modules[module]  # a new module that implements the new interface: not yet
            fleet = replace(desired, modules=modules, binaries=binaries)
            self._cache = {key: fleet}  # one revision at a time: keep the planner's caches warm
        new = tuple((m, msg) for m, msg in sorted(waiting.items()) if (m, msg) not in self._announced)
        self._announced.update(new)
        return Held(fleet, waiting, new)
