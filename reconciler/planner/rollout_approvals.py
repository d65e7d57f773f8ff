"""Approvals in a rollout: which gate the next step waits at, and which approvals count for it.

Where it sits: under the rollout machine (`reconciler.planner.machine`). `rollout_moves.enter_next`
asks `gate` before it enters a step or promotes, and `unspent_approval` whether the Fleet's rule
(`reconciler.spec.approvals`) holds; `machine.start` asks `holds_replacement` and `spent_approvals` for a
replacement at once. `approval_asked` is also what the planner (pins and overrides) and
`reconciler.apply.changes` ask.

Gates: approval `beforeStart` and `gates` (step indexes; region indexes for Regional) wait in
WaitingApproval until the fleet's rollout rule holds for module@version with approvals not yet
spent on an earlier gate. A Fleet with `policy.approvals.rollouts` holds every rollout before its
first step, whatever its strategy says (`RolloutContext.required`). BlueGreen without `autoPromote`
waits the same way before switching, an ABTest with `winner: approval` before applying the winner.
Gates come before everything else a step does: entering a step, and promoting, first checks every
gate not yet passed. A rollout with no next step because no healthy node is in scope (a Rolling one
whose nodes are all drained or unhealthy) never promotes from there: it keeps waiting for its
approval, or waits for nodes as Pending.
"""

from __future__ import annotations

from reconciler.planner.rollout_context import RolloutContext
from reconciler.planner.rollout_steps import Step
from reconciler.planner.types import Awaiting, Release, RolloutRecord, StepKind
from reconciler.spec.approvals import RuleResult, evaluate
from reconciler.spec.strategies import RolloutStrategySpec

__all__ = [
    "approval_asked",
    "asks_approval",
    "before_start",
    "gate",
    "holds_replacement",
    "spent_approvals",
    "unspent_approval",
]


def before_start(ctx: RolloutContext) -> bool:
    return ctx.required or (ctx.strategy is not None and ctx.strategy.approval.before_start)


def approval_asked(
    required: bool, strategy: RolloutStrategySpec | None, unit: RolloutStrategySpec | None = None
) -> bool:
    """Would a new version of the module need an approval at some point of its rollout?

    `required`: the Fleet's rollout policy; `strategy`: the module's strategy; `unit`: the strategy
    that runs the steps (Regional's `perRegion` one, else `strategy` itself).
    """
    if required:
        return True
    if strategy is not None and (strategy.approval.before_start or strategy.approval.gates):
        return True
    if unit is not None and unit.blue_green is not None and not unit.blue_green.auto_promote:
        return True
    return unit is not None and unit.ab_test is not None and unit.ab_test.winner == "approval"


def asks_approval(ctx: RolloutContext) -> bool:
    return approval_asked(ctx.required, ctx.strategy, ctx.unit)


def gate(ctx: RolloutContext, r: RolloutRecord, nxt: Step | None) -> Awaiting | None:
    """The approval entering `nxt` waits for; with `nxt` None (promoting), any gate not yet passed."""
    strategy = ctx.strategy
    assert strategy is not None
    gates = strategy.approval.gates
    if nxt is None:
        passed = r.region_index if ctx.regional else r.step
        if (r.step < 0 and before_start(ctx)) or any(g > passed for g in gates):
            return "promotion"
        return None
    if ctx.regional:
        index: int | None = nxt.region_index if (r.step < 0 or nxt.region_index != r.region_index) else None
    else:
        index = nxt.step
    if index is not None and ((index == 0 and before_start(ctx)) or index in gates):
        return "gate"
    unit = ctx.unit
    if nxt.kind is StepKind.SWITCH and unit is not None and unit.blue_green and not unit.blue_green.auto_promote:
        return "promotion"
    return None


def unspent_approval(ctx: RolloutContext, r: RolloutRecord) -> tuple[RuleResult, tuple[str, ...]]:
    """The rule for module@target with unspent approvals; and the commits that satisfied it."""
    fresh = [a for a in ctx.approvals if a.commit not in r.approvals_used]
    result = evaluate(ctx.rule, ctx.module, r.target.version, fresh)
    who = set(result.approved_by)
    commits = tuple(
        sorted(
            {a.commit for a in fresh if a.principal in who and a.version == r.target.version and a.module == ctx.module}
        )
    )
    return result, commits


def spent_approvals(ctx: RolloutContext, *earlier: Release | None) -> tuple[str, ...]:
    """Approvals of module@target that cannot count for it: all those given while an earlier release
    of the same version had other capabilities (an approval names the version, not what it may do)."""
    target = ctx.target
    if not any(
        e is not None and e.version == target.version and e.capabilities != target.capabilities for e in earlier
    ):
        return ()
    return tuple(sorted({a.commit for a in ctx.approvals if a.module == ctx.module and a.version == target.version}))


def holds_replacement(ctx: RolloutContext, previous: Release, strategy: RolloutStrategySpec | None) -> bool:
    """Must this replacement at once (no strategy, or the same version) wait for an approval first?"""
    if previous.version != ctx.target.version:
        return ctx.required  # a module without a strategy: the Fleet's policy holds it like any rollout
    if previous.capabilities == ctx.target.capabilities:
        return False  # limits or health check: applied at once
    return ctx.required or (strategy is not None and asks_approval(ctx))
