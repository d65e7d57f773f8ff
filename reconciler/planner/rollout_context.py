"""What the rollout machine reads (`RolloutContext`) and returns (`Transition`) in one pass.

Where it sits: at the bottom of the rollout machine (`reconciler.planner.machine` and its parts
`rollout_steps`, `rollout_approvals`, `rollout_moves`). The planner (`reconciler.planner.planner`)
builds one `RolloutContext` per module and pass from its snapshot; every part of the machine reads it
and returns a `Transition` (the new record, the actions that report it, when to look again).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from reconciler.planner.actions import Action
from reconciler.planner.types import RegionMetrics, Release, RolloutRecord
from reconciler.spec.approvals import Approval, ApprovalRule
from reconciler.spec.strategies import RolloutStrategySpec, StrategyType

__all__ = ["LOADED_RECHECK_SECONDS", "RECHECK_SECONDS", "RolloutContext", "Transition"]

RECHECK_SECONDS = 5.0
"""How often a running step is analysed for early failure, and a rollout paused for lack of traffic
(or a degraded baseline) analysed again."""

LOADED_RECHECK_SECONDS = 0.25
"""How soon a step whose nodes do not all report its weights yet is looked at again (a node's report
wakes the executor anyway: this is the fallback)."""


@dataclass(frozen=True)
class RolloutContext:
    """What the machine knows about one module in this pass, besides its record."""

    module: str
    target: Release  # what Git asks for now
    strategy: RolloutStrategySpec | None  # the record's strategy as Git defines it now
    inner: RolloutStrategySpec | None  # Regional's perRegion strategy
    regions: tuple[str, ...]  # the rollout's regions, in rollout order
    scope: Mapping[str, tuple[str, ...]]  # region -> nodes whose version the rollout sets
    rule: ApprovalRule
    approvals: tuple[Approval, ...]  # approvals of this module
    metrics: Mapping[str, tuple[RegionMetrics, ...]]  # version -> per-region metrics
    now: float
    applied: frozenset[str] = frozenset()  # nodes that report exactly what the record's step gives them
    alone: frozenset[str] = frozenset()  # nodes that report the target release alone, at 100 %
    smoke_failed: tuple[tuple[str, str], ...] = ()  # (node, error): the target's smoke check failed there
    required: bool = False  # the Fleet's approval policy holds every rollout before it starts

    @property
    def regional(self) -> bool:
        return self.strategy is not None and self.strategy.type is StrategyType.REGIONAL

    @property
    def unit(self) -> RolloutStrategySpec | None:
        """The strategy that runs the steps: Regional's inner one (None: replace per region)."""
        return self.inner if self.regional else self.strategy


@dataclass(frozen=True)
class Transition:
    record: RolloutRecord
    actions: tuple[Action, ...] = ()
    requeue_after: float | None = None
    changed: bool = True
