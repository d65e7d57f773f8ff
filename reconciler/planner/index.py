"""Facts the planner derives once per fleet revision and reuses on every pass over it.

Where it sits: the first thing a pass asks for. A revision's `DesiredFleet` does not change while
it is current, so what follows from it alone (each module's target release, its regions and
overrides, pinned releases, strategy shapes, the approval rule) is computed once and kept with the
revision object; assignment entries are shared across passes, so unchanged tables compare by
identity. This is memoisation of pure functions: a pass returns exactly what it would without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from reconciler.planner.placement import module_regions
from reconciler.planner.types import AssignmentEntry, Condition, Release
from reconciler.spec.approvals import ApprovalRule
from reconciler.spec.fleet import DesiredFleet
from reconciler.spec.models import ModuleSpec
from reconciler.spec.strategies import RolloutStrategySpec, StrategyType

__all__ = ["FleetFacts", "ModuleFacts", "Shape", "facts", "rollout_rule"]


def rollout_rule(desired: DesiredFleet) -> ApprovalRule:
    """The fleet's rule for rollout approvals; without one, a single admin approval."""
    rule = desired.policy.approvals.rollouts
    if rule is None:
        return ApprovalRule.of(["admin"], 1)
    return ApprovalRule.of([str(role) for role in rule.roles], rule.count)


@dataclass(frozen=True)
class Shape:
    """How a strategy lays a module's rollout out: regions in order, Regional or not, A/B header."""

    regions: tuple[str, ...]
    regional: bool = False
    sticky: str | None = None
    strategy: RolloutStrategySpec | None = None
    inner: RolloutStrategySpec | None = None


@dataclass(frozen=True)
class ModuleFacts:
    name: str
    spec: ModuleSpec
    target: Release | None  # None: the desired version has no binary
    missing_binary: str | None
    overrides: Mapping[str, str]  # region -> version served there instead of the rollout's
    regions: tuple[str, ...]  # the module's regions without overrides, in fleet order
    fixed: Mapping[str, Release]  # version -> release, for overrides and pins (when a binary exists)
    _entries: dict[tuple[str, str, int, str | None], AssignmentEntry] = field(default_factory=dict, repr=False)
    _shapes: dict[str | None, Shape] = field(default_factory=dict, repr=False)
    _status: list[tuple[object, tuple[Condition, ...]]] = field(default_factory=list, repr=False)

    def status(self, key: object, compute: Callable[[], tuple[Condition, ...]]) -> tuple[Condition, ...]:
        """The conditions for `key` (everything they depend on), computed again only when it changes."""
        if self._status and self._status[0][0] == key:
            return self._status[0][1]
        conditions = compute()
        self._status[:] = [(key, conditions)]
        return conditions

    def entry(self, release: Release, weight: int, sticky: str | None = None) -> AssignmentEntry:
        """The entry for `release` at `weight`: the same object every pass while nothing changes."""
        key = (release.version, release.digest, weight, sticky)
        found = self._entries.get(key)
        if (
            found is not None
            and (found.limits is release.limits or found.limits == release.limits)
            and (found.capabilities is release.capabilities or found.capabilities == release.capabilities)
            and found.health_check == release.health_check
            and found.smoke == release.smoke
            and found.argv == release.argv
        ):
            return found
        made = AssignmentEntry(
            self.name,
            release.version,
            release.digest,
            weight,
            release.limits,
            release.capabilities,
            release.health_check,
            sticky,
            release.smoke,
            release.argv,
        )
        self._entries[key] = made
        return made


class FleetFacts:
    """Every module's facts and the shapes of their rollouts, for one `DesiredFleet` object."""

    def __init__(self, desired: DesiredFleet) -> None:
        self.desired = desired
        self.rule = rollout_rule(desired)
        self.required = desired.policy.approvals.rollouts is not None  # the policy holds every rollout
        self.names = tuple(sorted(desired.modules))
        self.modules = {name: self._module(name) for name in self.names}

    def _module(self, name: str) -> ModuleFacts:
        spec = self.desired.modules[name].spec
        digest = self.desired.digest_of(name, spec.version)
        target = Release.of(spec, spec.version, digest) if digest is not None else None
        missing = None if digest is not None else f"{name}@{spec.version} has no binary (no source file, no digest)"
        overrides = {region: o.version for o in spec.placement.version_overrides for region in o.regions}
        regions = tuple(r for r in module_regions(self.desired, name) if r not in overrides)
        fixed: dict[str, Release] = {}
        for version in {*overrides.values(), *spec.placement.pins.values()}:
            found = self.desired.digest_of(name, version)
            if found is not None:
                fixed[version] = (
                    target if target is not None and target.version == version else Release.of(spec, version, found)
                )
        return ModuleFacts(name, spec, target, missing, overrides, regions, fixed)

    def strategy(self, name: str | None) -> RolloutStrategySpec | None:
        found = self.desired.strategies.get(name) if name is not None else None
        return found.spec if found is not None else None

    def shape(self, module: ModuleFacts, strategy_name: str | None) -> Shape:
        known = module._shapes.get(strategy_name)
        if known is None:
            known = module._shapes[strategy_name] = self._shape(module, strategy_name)
        return known

    def _shape(self, module: ModuleFacts, strategy_name: str | None) -> Shape:
        strategy = self.strategy(strategy_name)
        regions = module.regions
        if strategy is None:
            return Shape(regions)
        if strategy.type is StrategyType.REGIONAL and strategy.regional is not None:
            order = strategy.regional.order or self.desired.spec.region_names
            ordered = (*(r for r in order if r in regions), *(r for r in regions if r not in order))
            inner = self.strategy(strategy.regional.per_region)
            sticky = inner.ab_test.sticky_header if inner is not None and inner.ab_test is not None else None
            return Shape(ordered, True, sticky, strategy, inner)
        sticky = strategy.ab_test.sticky_header if strategy.ab_test is not None else None
        return Shape(regions, False, sticky, strategy)


_recent: list[FleetFacts] = []


def facts(desired: DesiredFleet) -> FleetFacts:
    """The facts of `desired`, computed once per revision object (the two most recent are kept)."""
    for known in _recent:
        if known.desired is desired:
            return known
    made = FleetFacts(desired)
    _recent.insert(0, made)
    del _recent[2:]
    return made
