"""The rollout machine: one pass moves one rollout record at most one step, from recorded state and now.

Where it sits: the planner (`reconciler.planner.planner`) calls `start` when Git asks for a release
the module does not run, and `advance` for the module's active record on every pass. Both return a
`Transition`: the new record, the actions that report it, and when to look again. Which versions and
weights the nodes get follows from the record alone (`reconciler.planner.weights`).

The machine is four modules, read top-down: this one (`start`, `advance`, `supersede`: which move a
pass makes), `rollout_moves` (the moves: enter a step, promote, pause, roll back), `rollout_steps`
(the steps of each strategy: what comes next, how long, what it is judged on) and
`rollout_approvals` (gates, and which approvals count), all over `rollout_context`
(`RolloutContext`, `Transition`).

A step counts only what nodes report: entering it publishes its weights, and its time starts
(`applied_at`) once every healthy node of the rollout's scope reports running exactly the entries
the step gives it (versions, digests and weights: a node that could not load the new release, or
has not applied the table yet, holds the step) and, for a release with smoke calls (`smoke:` on the
Module), reports its smoke check passed. Until every node the step gives the new release weight
reports that pass, those nodes get it at weight 0 (the planner holds the step's weights back), so
no user request reaches it before every node of the step has smoked it. A node that reports the
smoke check failed fails the step at once: `SmokeFailed`, with the module's error in the message.
So does a failed run of the new release's health check that a node counted in the step's window
(`HealthCheckFailed`: the first rule of `reconciler.planner.analysis`, under every strategy, with or
without an `analysis` block).
A step passes when its time is up, every node still reports its weights and analysis passes
(`reconciler.planner.analysis`: a strategy without `analysis` gets its type's default, which for
BlueGreen and Rolling never waits for traffic); it fails as soon as analysis fails, on every pass
while the step is published (waiting for nodes, for its time, for traffic or for an approval;
analysis fails fast before `minRequests` when failure is certain or clear). After the last step
the rollout enters `Promote`: every node of the scope gets the new release alone, and the record is
Promoted only once every one of them reports it. A failure rolls the whole rollout back (a
Regional one too: every region returns to the stable release, and the history names the region
that failed) when `autoRollback`, else pauses it as Degraded. A step that waits for traffic it
cannot get (a BlueGreen preview at 0 % under an analysis that needs requests and pauses without
them) pauses with `CannotProgress` instead of `NoTraffic`.

Replaced at once (no steps): a first deployment, a module without a strategy, and a change of
limits, capabilities, health check, smoke calls or argv that keeps the version (a node's table
cannot hold two releases of one version). A revert to the release that runs starts nothing: its
record, and a `Reverted` event, only say that Git asks for what runs. Two of the replacements
wait for approval first, in WaitingApproval with the previous release still published, and are
applied once approved:
- a module without a strategy that changes version, when the Fleet sets `policy.approvals.rollouts`;
- a change of capabilities (env, filesystem, network) on a version already deployed or rolling out,
  when a new version of the module would need an approval (the Fleet's rollout policy, or its
  strategy's `approval` block, BlueGreen without `autoPromote`, ABTest `winner: approval`).
  An approval names module@version, not the capabilities, so every approval of module@version
  that exists when the change is first planned counts as spent: only one given after it counts.
  The same holds for a rollout of a version whose capabilities change while it rolls out.
Limits and health check changes stay immediate; without an approval policy a capability change
is applied at once, as before.

Pins and region overrides (`placement.pins`, `placement.versionOverrides`) have no steps: a pinned
or overridden version runs at weight 100 at once. When a new version of the module would need an
approval (`approval_asked`: the Fleet's rollout policy, or the strategy asks for one), the planner
puts module@V on a pinned or overridden node only when V is already approved and live:
- V is, or was, the module's stable release (a record promoted it, or a rollout started from it);
- the Fleet's rollout rule holds for module@V (approval commits for module@V; a pin has no gates,
  so approvals spent on a rollout's gates count too);
- or some node already runs module@V alone (weight 100 in the tables last published) and V is not
  what the module's latest rollout moves to: the pin or override was there before (tables hold
  only what passed this rule, so this admits nothing unapproved; a new node in an overridden
  region gets V like the others).
So a fleet that starts under an approval policy needs approvals for the pinned and overridden
versions other than the one each module deploys; one that adopts a policy keeps what runs.
Otherwise the pin or override is held: the node keeps what it ran (its one version of the module
at weight 100, when that is not the latest rollout's target, else the stable release, else
nothing), and the module's `Paused` condition says `AwaitingApproval`, naming module@V and the rule
it waits for. An approval commit for module@V releases it on the next pass. Pinned and overridden
versions always run with the stable release's capabilities. Without an approval demand, pins and
overrides apply at once, as before.
(`approval_asked` is in `rollout_approvals`.)
"""

from __future__ import annotations

from dataclasses import replace

from reconciler.planner.actions import Pause, Promote, RecordEvent, StartRollout
from reconciler.planner.analysis import Totals, Verdict, analysis_for, analyze
from reconciler.planner.rollout_approvals import before_start, holds_replacement, spent_approvals, unspent_approval
from reconciler.planner.rollout_context import LOADED_RECHECK_SECONDS, RECHECK_SECONDS, RolloutContext, Transition
from reconciler.planner.rollout_moves import (
    enter_next,
    failed,
    inconclusive,
    no_nodes,
    promote,
    rollback,
    split_done,
    winner_approval,
)
from reconciler.planner.rollout_steps import (
    duration,
    history_with,
    region_name,
    step_analysis,
    step_result,
    version_totals,
)
from reconciler.planner.types import Phase, Release, RolloutRecord, StepKind, StepResult
from reconciler.spec.strategies import StrategyType

__all__ = ["advance", "start", "supersede"]

INCONCLUSIVE = frozenset({"NoTraffic", "BaselineDegraded", "CannotProgress"})


def _wait(seconds: float) -> float:
    """When to look again during a step: at its end, and every RECHECK_SECONDS for early failure."""
    return min(seconds, RECHECK_SECONDS)


_SETTINGS = (
    ("limits", "limits"),
    ("capabilities", "capabilities"),
    ("health_check", "health check"),
    ("smoke", "smoke calls"),
    ("argv", "argv"),
)


def _new_settings(old: Release, new: Release) -> str:
    """What a replacement that keeps the version changes: `new limits and health check`."""
    names = [label for name, label in _SETTINGS if getattr(old, name) != getattr(new, name)] or ["settings"]
    return "new " + (names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}")


def _replace_when_approved(ctx: RolloutContext, r: RolloutRecord, first: bool = False) -> Transition:
    """A replacement at once that waits in WaitingApproval (previous release still published)."""
    result, commits = unspent_approval(ctx, r)
    previous = r.previous
    assert previous is not None
    same = previous.version == r.target.version
    what = (
        f"new capabilities for {ctx.module}@{r.target.version}"
        if same
        else f"{previous.version} -> {r.target.label} (no rollout strategy)"
    )
    if not result.satisfied:
        if not first:
            return Transition(r, changed=False)
        message = f"{what}: applied once approved; {result.message}"
        waiting = replace(r, phase=Phase.WAITING_APPROVAL, awaiting="gate", reason="AwaitingApproval", message=message)
        return Transition(waiting, (Pause(r.id, ctx.module, "AwaitingApproval", message),))
    approved = StepResult(r.step, None, None, ctx.now, "Approved", "Approved", result.message)
    why = "SameVersionReplaced" if same else "Replaced"
    done = replace(
        r,
        phase=Phase.PROMOTED,
        awaiting=None,
        finished_at=ctx.now,
        reason=why,
        message=f"{what} applied once approved ({result.message})",
        approvals_used=r.approvals_used + commits,
        history=history_with(r, approved),
    )
    return Transition(done, (Promote(r.id, ctx.module, r.target.version),))


def start(
    ctx: RolloutContext,
    seq: int,
    previous: Release | None,
    strategy_name: str | None,
    reason: str | None = None,
    earlier: Release | None = None,
) -> Transition:
    """Create the record of a rollout to `ctx.target` (from `previous`, the stable release).

    `earlier` is the release the module's latest record aimed at: when it is the same version with
    other capabilities, the approvals of that version known now are spent (see the module docstring).
    """
    strategy = ctx.strategy if strategy_name is not None else None
    rollout_id = f"{ctx.module}-r{seq}"
    started = StartRollout(
        rollout_id, ctx.module, previous.version if previous else None, ctx.target.version, strategy_name
    )
    spent = spent_approvals(ctx, earlier, previous)

    def new_record(
        phase: Phase,
        steps: StrategyType | None,
        reason: str,
        *,
        message: str = "",
        finished_at: float | None = None,
        approvals_used: tuple[str, ...] = (),
    ) -> RolloutRecord:
        return RolloutRecord(
            rollout_id,
            ctx.module,
            seq,
            previous,
            ctx.target,
            strategy_name,
            steps,
            phase,
            ctx.now,
            step_started_at=ctx.now,
            reason=reason,
            message=message,
            finished_at=finished_at,
            approvals_used=approvals_used,
        )

    if reason == "Reverted":
        # Nothing starts and nothing changes on a node: the record only marks that Git asks for what runs.
        message = f"Git returned to {ctx.target.label}, which runs: nothing to roll out"
        done = new_record(Phase.PROMOTED, None, reason, message=message, finished_at=ctx.now)
        return Transition(done, (RecordEvent(ctx.module, rollout_id, reason, f"{ctx.module}: {message}"),))
    at_once = previous is None or strategy is None or previous.version == ctx.target.version
    if at_once and previous is not None and holds_replacement(ctx, previous, strategy):
        # no steps: replaced at once once approved
        record = new_record(Phase.WAITING_APPROVAL, None, "AwaitingApproval", approvals_used=spent)
        moved = _replace_when_approved(ctx, record, first=True)
        same = previous.version == ctx.target.version
        what = f"with {_new_settings(previous, ctx.target)}," if same else "replaced (no rollout strategy)"
        if moved.record.phase is Phase.PROMOTED:
            how = f"{what} applied at once, already approved ({ctx.rule})"
        else:
            how = f"{what} applied once approved ({ctx.rule})"
        return Transition(moved.record, (replace(started, how=how), *moved.actions), moved.requeue_after)
    if at_once:
        if previous is None:
            why, message = "InitialDeployment", f"{ctx.target.label} placed at once (nothing ran before)"
            how = "at once (nothing ran before)"
        elif previous.version == ctx.target.version:  # with or without a strategy
            changed = _new_settings(previous, ctx.target)
            why, message = "SameVersionReplaced", f"{ctx.target.version}: {changed} applied at once"
            how = f"with {changed}, applied at once"
        else:
            why, message = (
                "Replaced",
                f"{previous.version} replaced by {ctx.target.label} at once (no rollout strategy)",
            )
            how = "at once (no rollout strategy)"
        done = new_record(Phase.PROMOTED, None, why, message=message, finished_at=ctx.now)
        return Transition(done, (replace(started, how=how), Promote(rollout_id, ctx.module, ctx.target.version)))
    assert strategy is not None  # not at once
    record = new_record(Phase.PROGRESSING, strategy.type, reason or "NewRelease", approvals_used=spent)
    if not any(ctx.scope.get(region) for region in ctx.regions):
        pending, pause = no_nodes(ctx, record)
        how = f"by {strategy_name} when a healthy node can take it"
        if before_start(ctx):
            how += f", once approved ({ctx.rule})"
        return Transition(pending, (replace(started, how=how), pause))
    moved = enter_next(ctx, record)
    how = f"by {strategy_name}"
    if moved.record.phase is Phase.WAITING_APPROVAL:
        how += f" once approved ({ctx.rule})"
    return Transition(moved.record, (replace(started, how=how), *moved.actions), moved.requeue_after)


def advance(ctx: RolloutContext, r: RolloutRecord) -> Transition:
    """Move an active record at most one step; unchanged records come back with `changed` False."""
    if r.request is not None:
        phase = Phase.ROLLED_BACK if r.request == "rollback" else Phase.ABORTED
        reason = "ManualRollback" if r.request == "rollback" else "Aborted"
        return rollback(ctx, r, reason, f"an operator asked to {r.request}", phase)
    if r.strategy_type is None:  # a replacement at once that waits for its approval
        return Transition(r, changed=False) if r.held else _replace_when_approved(ctx, r)
    if ctx.strategy is None:
        return rollback(ctx, r, "StrategyMissing", f"RolloutStrategy {r.strategy!r} is gone from Git", Phase.ABORTED)
    if r.held:
        return Transition(r, changed=False)
    if r.phase is Phase.PENDING:
        if not any(ctx.scope.get(region) for region in ctx.regions):
            return Transition(r, changed=False)
        return enter_next(ctx, r)
    if r.phase is Phase.PAUSED and r.reason not in INCONCLUSIVE:
        return Transition(r, changed=False)  # failed analysis without autoRollback: a human decides
    region = region_name(ctx, r)
    new = version_totals(ctx, r.target.version, region)
    if r.kind is not None and ctx.smoke_failed:
        return failed(ctx, r, _smoke_verdict(ctx, new))
    verdict: Verdict | None = None
    if r.kind is not None and r.awaiting != "winner":
        # Failure is judged on every pass while a step is published, whatever it waits for.
        stable = version_totals(ctx, r.previous.version, region) if r.previous is not None else None
        verdict = analyze(step_analysis(ctx, r), new, stable)
        if verdict.outcome == "Failed":
            return failed(ctx, r, verdict)
    if r.phase is Phase.WAITING_APPROVAL:
        return winner_approval(ctx, r) if r.awaiting == "winner" else enter_next(ctx, r)
    if r.kind is None or verdict is None:
        return enter_next(ctx, r)
    if _unapplied(ctx):
        # The step's weights count once every node reports them (a node that could not load the new
        # release keeps its previous table and retries; the rollout waits for it). A step whose time
        # had started waits the same way when a node no longer reports them (it restarted, say).
        return Transition(r, requeue_after=LOADED_RECHECK_SECONDS, changed=False)
    if r.kind is StepKind.PROMOTE:
        return promote(ctx, r)
    marked = r.applied_at is None
    if marked:
        r = replace(r, applied_at=ctx.now)
    assert r.applied_at is not None
    deadline = r.applied_at + duration(ctx, r)
    if ctx.now < deadline:
        return Transition(r, requeue_after=_wait(deadline - ctx.now), changed=marked)
    unit = ctx.unit
    if r.kind is StepKind.SPLIT and unit is not None and unit.ab_test is not None:
        return split_done(ctx, r, unit.ab_test, analysis_for(unit), new, region)
    if verdict.outcome == "Inconclusive":
        return inconclusive(ctx, r, verdict, changed=marked)
    return enter_next(ctx, replace(r, history=history_with(r, step_result(ctx, r, verdict))))


def _smoke_verdict(ctx: RolloutContext, new: Totals) -> Verdict:
    """A failed smoke check, in the module's own words (the first node's; how many others saw one)."""
    node, error = ctx.smoke_failed[0]
    others = len(ctx.smoke_failed) - 1
    where = f"{node}" + (f" (and {others} other node{'s' if others > 1 else ''})" if others else "")
    message = f"{ctx.target.version} failed its smoke check on {where}: {error}"
    return Verdict("Failed", "SmokeFailed", message, new)


def _unapplied(ctx: RolloutContext) -> tuple[str, ...]:
    """Nodes of the rollout's scope that do not report the entries the current step gives them.

    Healthy nodes only: a lost node is not waited for (placement moves its modules elsewhere).
    """
    return tuple(n for region in ctx.regions for n in ctx.scope.get(region, ()) if n not in ctx.applied)


def supersede(ctx: RolloutContext, r: RolloutRecord, by: str) -> Transition:
    """Git moved on while `r` ran: it stops where it is; the next rollout starts from `r.previous`."""
    message = f"superseded by {by} before it finished"
    done = replace(r, phase=Phase.SUPERSEDED, awaiting=None, finished_at=ctx.now, reason="Superseded", message=message)
    return Transition(done, (RecordEvent(ctx.module, r.id, "Superseded", message),))
