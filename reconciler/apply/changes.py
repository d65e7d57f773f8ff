"""What a change to the fleet repository does: rollouts it starts, interfaces it breaks.

`fleet_changes(old, new)` compares two loaded revisions: the base of a pull request and its head
(`hotswap validate --base`), or the last applied revision and a new one (the reconciler). Interface
evolution comes from `reconciler.interfaces.compare`: a breaking change without a major version bump
is a problem (the revision is refused); one with a bump needs the fleet policy's
`breakingInterfaceChanges` approvals before any module implementing the new version rolls out.

Each module change says how it would go, as the planner would do it (`reconciler.planner.machine`):
by its strategy, at once, or only once approved (the Fleet's rollout policy holds every rollout; a
change of capabilities, and a pin or override to a version not yet live, wait for an approval when
the module's rollouts need one).
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.interfaces import Evolution, compare
from reconciler.planner import rollout_rule
from reconciler.planner.rollout_approvals import approval_asked
from reconciler.spec.fleet import DesiredFleet, Problem
from reconciler.spec.models import ModuleSpec, package_of
from reconciler.spec.strategies import StrategyType


@dataclass(frozen=True)
class ModuleChange:
    module: str
    old_version: str | None  # None: a new module
    new_version: str | None  # None: removed
    strategy: str | None
    what: tuple[str, ...]  # version, digest, limits, capabilities, placement
    how: str = ""  # "by canary", "at once", "applied once approved (1 of [admin])"...

    def __str__(self) -> str:
        if self.old_version is None:
            return f"{self.module}: new module at {self.new_version}"
        if self.new_version is None:
            return f"{self.module}: removed (was {self.old_version})"
        how = " " + (self.how or (f"by {self.strategy}" if self.strategy else "at once"))
        changed = ", ".join(self.what)
        if self.old_version != self.new_version:
            return f"{self.module}: {self.old_version} -> {self.new_version}{how} ({changed})"
        return f"{self.module}: {self.new_version} changes {changed}{how}"


def _fixed_versions(spec: ModuleSpec) -> set[str]:
    return {*spec.placement.pins.values(), *(o.version for o in spec.placement.version_overrides)}


def _how(new: DesiredFleet, before: ModuleSpec, after: ModuleSpec, what: list[str]) -> str:
    """How the planner would apply the change: by its strategy, at once, or once approved."""
    found = new.strategies.get(after.rollout) if after.rollout is not None else None
    strategy = found.spec if found is not None else None
    unit = strategy
    if strategy is not None and strategy.type is StrategyType.REGIONAL and strategy.regional is not None:
        per_region = strategy.regional.per_region
        inner = new.strategies.get(per_region) if per_region is not None else None
        unit = inner.spec if inner is not None else None
    required = new.policy.approvals.rollouts is not None
    asked = approval_asked(required, strategy, unit)
    rule = rollout_rule(new)
    if "version" in what or "binary" in what:
        if strategy is not None:
            how = f"by {after.rollout}"
            if required or strategy.approval.before_start:
                how += f" once approved ({rule})"
        elif required:
            how = f"replaced once approved ({rule}) (no rollout strategy)"
        else:
            how = "at once (no rollout strategy)"
    elif "capabilities" in what and asked:
        how = f"applied once approved ({rule})"
    else:
        how = "at once"
    if "placement" in what and asked:
        waiting = sorted(_fixed_versions(after) - _fixed_versions(before) - {before.version})
        if waiting:
            how += f"; pins and overrides to {', '.join(waiting)} wait for approval ({rule})"
    return how


@dataclass(frozen=True)
class InterfaceChange:
    interface: str
    evolution: Evolution
    implementers: tuple[str, ...]  # modules that implement the new package

    @property
    def needs_approval(self) -> bool:
        return self.evolution.needs_approval


@dataclass(frozen=True)
class FleetChanges:
    modules: tuple[ModuleChange, ...]
    interfaces: tuple[InterfaceChange, ...]
    problems: tuple[Problem, ...]

    def gated_modules(self) -> dict[str, str]:
        """Module name -> the interface package whose breaking change must be approved first."""
        return {m: c.evolution.new for c in self.interfaces if c.needs_approval for m in c.implementers}


def fleet_changes(old: DesiredFleet | None, new: DesiredFleet) -> FleetChanges:
    modules: list[ModuleChange] = []
    previous = old.modules if old is not None else {}
    for name in sorted(set(previous) | set(new.modules)):
        before, after = previous.get(name), new.modules.get(name)
        if after is None:
            assert before is not None
            modules.append(ModuleChange(name, before.spec.version, None, None, ()))
            continue
        if before is None:
            modules.append(ModuleChange(name, None, after.spec.version, after.spec.rollout, ("new",)))
            continue
        assert old is not None
        what = []
        if before.spec.version != after.spec.version:
            what.append("version")
        if old.digest_of(name, before.spec.version) != new.digest_of(name, after.spec.version):
            what.append("binary")
        for field in ("limits", "capabilities", "placement", "health_check", "smoke", "argv"):
            if getattr(before.spec, field) != getattr(after.spec, field):
                what.append(field.replace("_c", "C"))
        if what:
            how = _how(new, before.spec, after.spec, what)
            modules.append(
                ModuleChange(name, before.spec.version, after.spec.version, after.spec.rollout, tuple(what), how)
            )

    interfaces: list[InterfaceChange] = []
    problems: list[Problem] = []
    old_wit = old.wit_packages if old is not None else {}
    for name, package in sorted(new.wit_packages.items()):
        base = old_wit.get(name)
        if base is None or base.digest == package.digest:
            continue
        evolution = compare(base, package)
        implementers = tuple(
            sorted(
                m
                for m, doc in new.modules.items()
                if doc.spec.implements and package_of(doc.spec.implements) == evolution.new
            )
        )
        interfaces.append(InterfaceChange(name, evolution, implementers))
        location = new.locations.get(("Interface", name))
        for problem in evolution.problems:
            problems.append(
                Problem(location.path if location else "", location.line if location else 0, "spec.wit", problem)
            )
    return FleetChanges(tuple(modules), tuple(interfaces), tuple(problems))
