"""The rollout machine's moves: enter a step, promote, pause, roll back, judge an A/B split.

Where it sits: under `reconciler.planner.machine`, whose `start` and `advance` decide which move a
pass makes; each move builds the new record and the actions that report it (a `Transition`). Entering
a step or promoting goes through `enter_next`, which first checks every gate not yet passed
(`rollout_approvals`).
"""

from __future__ import annotations

from dataclasses import replace

from reconciler.planner.actions import AdvanceStep, Pause, Promote, RecordEvent, Rollback
from reconciler.planner.analysis import Totals, Verdict, compare
from reconciler.planner.rollout_approvals import gate, unspent_approval
from reconciler.planner.rollout_context import LOADED_RECHECK_SECONDS, RECHECK_SECONDS, RolloutContext, Transition
from reconciler.planner.rollout_steps import (
    history_with,
    next_step,
    region_name,
    step_analysis,
    step_message,
    step_result,
    version_totals,
)
from reconciler.planner.types import Phase, RolloutRecord, StepKind, StepResult
from reconciler.spec.strategies import ABTestParams, Analysis

__all__ = [
    "enter_next",
    "failed",
    "finish",
    "inconclusive",
    "no_nodes",
    "promote",
    "rollback",
    "split_done",
    "winner_approval",
]


def no_nodes(ctx: RolloutContext, r: RolloutRecord) -> tuple[RolloutRecord, Pause]:
    message = f"no healthy node in {', '.join(ctx.regions) or 'any region'} can take {ctx.target.version} yet"
    pending = replace(r, phase=Phase.PENDING, awaiting=None, reason="NoNodes", message=message)
    return pending, Pause(r.id, ctx.module, "NoNodes", message)


def enter_next(ctx: RolloutContext, r: RolloutRecord) -> Transition:
    """Enter the next step, or promote: in both cases only past every gate not yet passed."""
    nxt = next_step(ctx, r)
    awaiting = gate(ctx, r, nxt)
    approved: StepResult | None = None
    commits: tuple[str, ...] = ()
    if awaiting is not None:
        result, commits = unspent_approval(ctx, r)
        if not result.satisfied:
            if r.phase is Phase.WAITING_APPROVAL and r.awaiting == awaiting:
                return Transition(r, changed=False)
            what = f"step {nxt.step}" if nxt is not None and awaiting == "gate" else "promotion"
            message = f"{what} waits for approval: {result.message}"
            waiting = replace(
                r, phase=Phase.WAITING_APPROVAL, awaiting=awaiting, reason="AwaitingApproval", message=message
            )
            return Transition(waiting, (Pause(r.id, ctx.module, "AwaitingApproval", message),))
        at = nxt if nxt is not None else r
        approved = StepResult(at.step, at.kind, region_name(ctx, at), ctx.now, "Approved", "Approved", result.message)
    if nxt is None and r.kind is None:
        # Nothing ran yet and there is no step to enter (no healthy node in scope): wait for nodes;
        # the approvals stay unspent until a step is entered.
        if r.phase is Phase.PENDING and r.reason == "NoNodes":
            return Transition(r, changed=False)
        pending, pause = no_nodes(ctx, r)
        return Transition(pending, (pause,))
    if approved is not None:
        r = replace(r, approvals_used=r.approvals_used + commits, history=history_with(r, approved))
    if nxt is None:
        return finish(ctx, r)
    message = step_message(ctx, nxt)
    entered = replace(
        r,
        phase=Phase.PROGRESSING,
        awaiting=None,
        step=nxt.step,
        kind=nxt.kind,
        percent=nxt.percent,
        region_index=nxt.region_index,
        done_nodes=nxt.done,
        batch=nxt.batch,
        step_started_at=ctx.now,
        applied_at=None,
        reason="StepStarted",
        message=message,
    )
    action = AdvanceStep(r.id, ctx.module, nxt.step, nxt.kind, nxt.percent, region_name(ctx, nxt))
    return Transition(entered, (action,), LOADED_RECHECK_SECONDS)


def finish(ctx: RolloutContext, r: RolloutRecord) -> Transition:
    """Every step passed: publish the new release alone on every node of the scope (`Promote`), or
    promote at once when every node already reports it alone (a Rolling or Regional last step)."""
    if all(n in ctx.alone for region in ctx.regions for n in ctx.scope.get(region, ())):
        return promote(ctx, r)
    message = f"every step passed: {r.target.label} alone on every node; promoted once each reports it"
    finishing = replace(
        r,
        phase=Phase.PROGRESSING,
        awaiting=None,
        kind=StepKind.PROMOTE,
        percent=100,
        step_started_at=ctx.now,
        applied_at=None,
        reason="Promoting",
        message=message,
    )
    return Transition(finishing, (), LOADED_RECHECK_SECONDS)


def promote(ctx: RolloutContext, r: RolloutRecord) -> Transition:
    """Every node of the scope reports the new release alone: it is the stable version."""
    message = f"{r.target.label} is the stable version"
    done = replace(
        r,
        phase=Phase.PROMOTED,
        awaiting=None,
        finished_at=ctx.now,
        applied_at=ctx.now,
        reason="Promoted",
        message=message,
        batch=(),
    )
    return Transition(done, (Promote(r.id, ctx.module, r.target.version),))


def rollback(ctx: RolloutContext, r: RolloutRecord, reason: str, message: str, phase: Phase) -> Transition:
    back_to = r.previous.version if r.previous is not None else "nothing"
    done = replace(r, phase=phase, awaiting=None, finished_at=ctx.now, reason=reason, message=message, request=None)
    return Transition(done, (Rollback(r.id, ctx.module, back_to, reason, message),))


def inconclusive(ctx: RolloutContext, r: RolloutRecord, verdict: Verdict, changed: bool = False) -> Transition:
    if verdict.reason == "NoTraffic" and r.kind is StepKind.PREVIEW and step_analysis(ctx, r).waits_for_traffic:
        message = (
            f"{verdict.message}, and a preview at 0% gets requests only with X-Hotswap-Version:"
            " send some, or set the strategy's analysis onNoTraffic: proceed (or leave analysis out)"
        )
        verdict = replace(verdict, reason="CannotProgress", message=message)
    if r.phase is Phase.PAUSED and r.reason == verdict.reason:
        return Transition(r, requeue_after=RECHECK_SECONDS, changed=changed)
    paused = replace(
        r,
        phase=Phase.PAUSED,
        reason=verdict.reason,
        message=verdict.message,
        history=history_with(r, step_result(ctx, r, verdict)),
    )
    return Transition(paused, (Pause(r.id, ctx.module, verdict.reason, verdict.message),), RECHECK_SECONDS)


def failed(ctx: RolloutContext, r: RolloutRecord, verdict: Verdict) -> Transition:
    r = replace(r, history=history_with(r, step_result(ctx, r, verdict)))
    strategy = ctx.strategy
    if strategy is not None and strategy.auto_rollback:
        return rollback(ctx, r, verdict.reason, verdict.message, Phase.ROLLED_BACK)
    message = f"{verdict.message} (autoRollback is off: roll back, or commit a fix)"
    reason = "SmokeFailed" if verdict.reason == "SmokeFailed" else "AnalysisFailed"
    paused = replace(r, phase=Phase.PAUSED, reason=reason, message=message)
    return Transition(paused, (Pause(r.id, ctx.module, reason, message),))


def split_done(
    ctx: RolloutContext, r: RolloutRecord, params: ABTestParams, analysis: Analysis, b: Totals, region: str | None
) -> Transition:
    a = version_totals(ctx, r.previous.version, region) if r.previous is not None else Totals()
    verdict, result = compare(params, analysis, a, b)
    if result is None:
        return inconclusive(ctx, r, verdict)
    r = replace(r, ab_result=result, history=history_with(r, step_result(ctx, r, verdict)))
    if params.winner == "approval":
        hint = "approve it to promote" if result.winner == "B" else "approve it to promote B anyway, or roll back"
        message = f"{verdict.message}; waiting for an approval of {ctx.module}@{r.target.version} ({hint})"
        waiting = replace(
            r, phase=Phase.WAITING_APPROVAL, awaiting="winner", reason="AwaitingApproval", message=message
        )
        return Transition(waiting, (Pause(r.id, ctx.module, "AwaitingApproval", message),))
    if result.winner == "A":
        return rollback(ctx, r, "ABTestLost", verdict.message, Phase.ROLLED_BACK)
    return enter_next(ctx, r)


def winner_approval(ctx: RolloutContext, r: RolloutRecord) -> Transition:
    result, commits = unspent_approval(ctx, r)
    if not result.satisfied:
        return Transition(r, changed=False)
    approved = StepResult(r.step, r.kind, region_name(ctx, r), ctx.now, "Approved", "Approved", result.message)
    r = replace(r, approvals_used=r.approvals_used + commits, history=history_with(r, approved))
    moved = enter_next(ctx, r)
    event = RecordEvent(ctx.module, r.id, "WinnerApproved", result.message)
    return Transition(moved.record, (event, *moved.actions), moved.requeue_after)
