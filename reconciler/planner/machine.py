"""The rollout machine: one pass moves one rollout record at most one step, from recorded state and now.

Where it sits: the planner (`reconciler.planner.planner`) calls `start` when Git asks for a release
the module does not run, and `advance` for the module's active record on every pass. Both return a
`Transition`: the new record, the actions that report it, and when to look again. Which versions and
weights the nodes get follows from the record alone (`reconciler.planner.weights`).

Steps per strategy (`StepKind`): Canary `Weight` per entry of `steps`; BlueGreen `Preview` (new at
0 %) then `Switch` (new at 100 %, previous kept at 0 % for `keepPreviousSeconds`, so a rollback is
an instant switch back); Rolling one `Batch` of `batchSize` nodes after the other until every node
runs the new version; ABTest one sticky `Split`, then the winner; Regional the inner strategy's
steps in one region after the other, each region closed by a `Settle` step of `regionSeconds`.
A step counts only what nodes report: entering it publishes its weights, and its time starts
(`applied_at`) once every healthy node of the rollout's scope reports running exactly the entries
the step gives it (versions, digests and weights: a node that could not load the new release, or
has not applied the table yet, holds the step) and, for a release with smoke calls (`smoke:` on the
Module), reports its smoke check passed. Until every node the step gives the new release weight
reports that pass, those nodes get it at weight 0 (the planner holds the step's weights back), so
no user request reaches it before every node of the step has smoked it. A node that reports the
smoke check failed fails the step at once: `SmokeFailed`, with the module's error in the message.
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

Gates: approval `beforeStart` and `gates` (step indexes; region indexes for Regional) wait in
WaitingApproval until the fleet's rollout rule holds for module@version with approvals not yet
spent on an earlier gate. A Fleet with `policy.approvals.rollouts` holds every rollout before its
first step, whatever its strategy says (`RolloutContext.required`). BlueGreen without `autoPromote`
waits the same way before switching, an ABTest with `winner: approval` before applying the winner.
Gates come before everything else a step does: entering a step, and promoting, first checks every
gate not yet passed. A rollout with no next step because no healthy node is in scope (a Rolling one
whose nodes are all drained or unhealthy) never promotes from there: it keeps waiting for its
approval, or waits for nodes as Pending.

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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from reconciler.approvals import Approval, ApprovalRule, RuleResult, evaluate
from reconciler.planner.actions import Action, AdvanceStep, Pause, Promote, RecordEvent, Rollback, StartRollout
from reconciler.planner.analysis import Totals, Verdict, analysis_for, analyze, compare, totals
from reconciler.planner.types import (
    HISTORY_LIMIT,
    Awaiting,
    Phase,
    Release,
    RolloutRecord,
    StepKind,
    StepResult,
    VersionMetrics,
)
from reconciler.spec.models import ABTestParams, Analysis, RolloutStrategySpec, StrategyType

__all__ = ["RECHECK_SECONDS", "RolloutContext", "Transition", "advance", "approval_asked", "start"]

RECHECK_SECONDS = 5.0
"""How often a running step is analysed for early failure, and a rollout paused for lack of traffic
(or a degraded baseline) analysed again."""

INCONCLUSIVE = frozenset({"NoTraffic", "BaselineDegraded", "CannotProgress"})

LOADED_RECHECK_SECONDS = 0.25
"""How soon a step whose nodes do not all report its weights yet is looked at again (a node's report
wakes the executor anyway: this is the fallback)."""


def _wait(seconds: float) -> float:
    """When to look again during a step: at its end, and every RECHECK_SECONDS for early failure."""
    return min(seconds, RECHECK_SECONDS)


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
    metrics: Mapping[str, tuple[VersionMetrics, ...]]  # version -> per-region metrics
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


@dataclass(frozen=True)
class _Step:
    region_index: int
    step: int
    kind: StepKind
    percent: int
    done: tuple[str, ...] = ()
    batch: tuple[str, ...] = ()


# --- steps ------------------------------------------------------------------------------------


def _unit_nodes(ctx: RolloutContext, region_index: int) -> tuple[str, ...]:
    if ctx.regional:
        return ctx.scope.get(ctx.regions[region_index], ()) if region_index < len(ctx.regions) else ()
    return tuple(n for region in ctx.regions for n in ctx.scope.get(region, ()))


def _next_in_unit(ctx: RolloutContext, region_index: int, step: int, done: tuple[str, ...]) -> _Step | None:
    unit = ctx.unit
    if unit is None:
        return None
    i = step + 1
    if unit.type is StrategyType.CANARY and unit.canary is not None:
        steps = unit.canary.steps
        return _Step(region_index, i, StepKind.WEIGHT, steps[i]) if i < len(steps) else None
    if unit.type is StrategyType.BLUE_GREEN:
        kinds = (StepKind.PREVIEW, StepKind.SWITCH)
        return _Step(region_index, i, kinds[i], 100 * i) if i < len(kinds) else None
    if unit.type is StrategyType.AB_TEST and unit.ab_test is not None:
        return _Step(region_index, i, StepKind.SPLIT, unit.ab_test.split) if i == 0 else None
    if unit.type is StrategyType.ROLLING and unit.rolling is not None:
        nodes = _unit_nodes(ctx, region_index)
        seen = set(done)
        remaining = [n for n in nodes if n not in seen]
        if not remaining:
            return None
        batch = tuple(remaining[: unit.rolling.batch_size])
        percent = round(100 * (len(nodes) - len(remaining) + len(batch)) / len(nodes))
        return _Step(region_index, i, StepKind.BATCH, percent, done, batch)
    return None  # pragma: no cover - a Regional unit is refused by the loader


def _next(ctx: RolloutContext, r: RolloutRecord) -> _Step | None:
    """The step after the applied one, or None when the rollout is complete."""
    if ctx.regional and r.kind is StepKind.SETTLE:
        first = r.region_index + 1
        return _first_in_region(ctx, first) if first < len(ctx.regions) else None
    if ctx.regional and r.step < 0:
        return _first_in_region(ctx, r.region_index)
    done = r.done_nodes + r.batch
    found = _next_in_unit(ctx, r.region_index, r.step, done)
    if found is None and ctx.regional:
        return _Step(r.region_index, r.step + 1, StepKind.SETTLE, 100, done)
    return found


def _first_in_region(ctx: RolloutContext, region_index: int) -> _Step:
    return _next_in_unit(ctx, region_index, -1, ()) or _Step(region_index, 0, StepKind.SETTLE, 100)


def _duration(ctx: RolloutContext, r: RolloutRecord) -> float:
    outer, unit = ctx.strategy, ctx.unit
    if r.kind is StepKind.SETTLE and outer is not None and outer.regional is not None:
        return outer.regional.region_seconds
    if unit is None:
        return 0.0
    if r.kind is StepKind.WEIGHT and unit.canary is not None:
        return unit.canary.step_seconds
    if r.kind is StepKind.PREVIEW and unit.blue_green is not None:
        return unit.blue_green.preview_seconds
    if r.kind is StepKind.SWITCH and unit.blue_green is not None:
        return unit.blue_green.keep_previous_seconds
    if r.kind is StepKind.BATCH and unit.rolling is not None:
        return unit.rolling.batch_seconds
    if r.kind is StepKind.SPLIT and unit.ab_test is not None:
        return unit.ab_test.duration_seconds
    return 0.0


def _analysis(ctx: RolloutContext, r: RolloutRecord) -> Analysis:
    """The step's analysis: the strategy's own, else its type's default (`analysis_for`)."""
    if r.kind is StepKind.SETTLE or ctx.unit is None:
        outer = ctx.strategy
        return analysis_for(outer, ctx.inner if ctx.regional else None) if outer is not None else Analysis()
    return analysis_for(ctx.unit)


def _before_start(ctx: RolloutContext) -> bool:
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


def _asks_approval(ctx: RolloutContext) -> bool:
    return approval_asked(ctx.required, ctx.strategy, ctx.unit)


def _gate(ctx: RolloutContext, r: RolloutRecord, nxt: _Step | None) -> Awaiting | None:
    """The approval entering `nxt` waits for; with `nxt` None (promoting), any gate not yet passed."""
    strategy = ctx.strategy
    assert strategy is not None
    gates = strategy.approval.gates
    if nxt is None:
        passed = r.region_index if ctx.regional else r.step
        if (r.step < 0 and _before_start(ctx)) or any(g > passed for g in gates):
            return "promotion"
        return None
    if ctx.regional:
        index: int | None = nxt.region_index if (r.step < 0 or nxt.region_index != r.region_index) else None
    else:
        index = nxt.step
    if index is not None and ((index == 0 and _before_start(ctx)) or index in gates):
        return "gate"
    unit = ctx.unit
    if nxt.kind is StepKind.SWITCH and unit is not None and unit.blue_green and not unit.blue_green.auto_promote:
        return "promotion"
    return None


# --- helpers ----------------------------------------------------------------------------------


def _region_name(ctx: RolloutContext, r: RolloutRecord | _Step) -> str | None:
    if ctx.regional and r.region_index < len(ctx.regions):
        return ctx.regions[r.region_index]
    return None


def _totals(ctx: RolloutContext, version: str, region: str | None) -> Totals:
    regions = {region} if region is not None else set(ctx.regions)
    return totals(m for m in ctx.metrics.get(version, ()) if m.region in regions)


def _history(r: RolloutRecord, result: StepResult) -> tuple[StepResult, ...]:
    return (*r.history, result)[-HISTORY_LIMIT:]


def _result(ctx: RolloutContext, r: RolloutRecord, verdict: Verdict) -> StepResult:
    outcome = verdict.outcome
    return StepResult(
        r.step,
        r.kind,
        _region_name(ctx, r),
        ctx.now,
        outcome,
        verdict.reason,
        verdict.message,
        verdict.new.requests,
        verdict.new.error_rate,
        verdict.new.p99_ms,
    )


def _approval(ctx: RolloutContext, r: RolloutRecord) -> tuple[RuleResult, tuple[str, ...]]:
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


def _step_message(ctx: RolloutContext, nxt: _Step) -> str:
    where = f" in {ctx.regions[nxt.region_index]}" if ctx.regional and nxt.region_index < len(ctx.regions) else ""
    what = {
        StepKind.WEIGHT: f"{nxt.percent}% of requests to {ctx.target.version}",
        StepKind.PREVIEW: f"{ctx.target.version} loaded at 0% (preview with X-Hotswap-Version)",
        StepKind.SWITCH: f"all requests to {ctx.target.version}, previous version kept loaded",
        StepKind.BATCH: f"{', '.join(nxt.batch)} on {ctx.target.version} ({nxt.percent}% of nodes)",
        StepKind.SPLIT: f"{nxt.percent}% of users to {ctx.target.version}",
        StepKind.SETTLE: f"region on {ctx.target.version}, evaluating",
    }[nxt.kind]
    return f"step {nxt.step} ({nxt.kind.value}){where}: {what}"


# --- transitions ------------------------------------------------------------------------------


def _spent(ctx: RolloutContext, *earlier: Release | None) -> tuple[str, ...]:
    """Approvals of module@target that cannot count for it: all those given while an earlier release
    of the same version had other capabilities (an approval names the version, not what it may do)."""
    target = ctx.target
    if not any(
        e is not None and e.version == target.version and e.capabilities != target.capabilities for e in earlier
    ):
        return ()
    return tuple(sorted({a.commit for a in ctx.approvals if a.module == ctx.module and a.version == target.version}))


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


def _holds_replacement(ctx: RolloutContext, previous: Release, strategy: RolloutStrategySpec | None) -> bool:
    """Must this replacement at once (no strategy, or the same version) wait for an approval first?"""
    if previous.version != ctx.target.version:
        return ctx.required  # a module without a strategy: the Fleet's policy holds it like any rollout
    if previous.capabilities == ctx.target.capabilities:
        return False  # limits or health check: applied at once
    return ctx.required or (strategy is not None and _asks_approval(ctx))


def _replace_when_approved(ctx: RolloutContext, r: RolloutRecord, first: bool = False) -> Transition:
    """A replacement at once that waits in WaitingApproval (previous release still published)."""
    result, commits = _approval(ctx, r)
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
        history=_history(r, approved),
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
    spent = _spent(ctx, earlier, previous)

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
    if at_once and previous is not None and _holds_replacement(ctx, previous, strategy):
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
        pending, pause = _no_nodes(ctx, record)
        how = f"by {strategy_name} when a healthy node can take it"
        if _before_start(ctx):
            how += f", once approved ({ctx.rule})"
        return Transition(pending, (replace(started, how=how), pause))
    moved = _enter_next(ctx, record)
    how = f"by {strategy_name}"
    if moved.record.phase is Phase.WAITING_APPROVAL:
        how += f" once approved ({ctx.rule})"
    return Transition(moved.record, (replace(started, how=how), *moved.actions), moved.requeue_after)


def advance(ctx: RolloutContext, r: RolloutRecord) -> Transition:
    """Move an active record at most one step; unchanged records come back with `changed` False."""
    if r.request is not None:
        phase = Phase.ROLLED_BACK if r.request == "rollback" else Phase.ABORTED
        reason = "ManualRollback" if r.request == "rollback" else "Aborted"
        return _rollback(ctx, r, reason, f"an operator asked to {r.request}", phase)
    if r.strategy_type is None:  # a replacement at once that waits for its approval
        return Transition(r, changed=False) if r.held else _replace_when_approved(ctx, r)
    if ctx.strategy is None:
        return _rollback(ctx, r, "StrategyMissing", f"RolloutStrategy {r.strategy!r} is gone from Git", Phase.ABORTED)
    if r.held:
        return Transition(r, changed=False)
    if r.phase is Phase.PENDING:
        if not any(ctx.scope.get(region) for region in ctx.regions):
            return Transition(r, changed=False)
        return _enter_next(ctx, r)
    if r.phase is Phase.PAUSED and r.reason not in INCONCLUSIVE:
        return Transition(r, changed=False)  # failed analysis without autoRollback: a human decides
    region = _region_name(ctx, r)
    new = _totals(ctx, r.target.version, region)
    if r.kind is not None and ctx.smoke_failed:
        return _failed(ctx, r, _smoke_verdict(ctx, new))
    verdict: Verdict | None = None
    if r.kind is not None and r.awaiting != "winner":
        # Failure is judged on every pass while a step is published, whatever it waits for.
        stable = _totals(ctx, r.previous.version, region) if r.previous is not None else None
        verdict = analyze(_analysis(ctx, r), new, stable)
        if verdict.outcome == "Failed":
            return _failed(ctx, r, verdict)
    if r.phase is Phase.WAITING_APPROVAL:
        return _winner_approval(ctx, r) if r.awaiting == "winner" else _enter_next(ctx, r)
    if r.kind is None or verdict is None:
        return _enter_next(ctx, r)
    if _unapplied(ctx):
        # The step's weights count once every node reports them (a node that could not load the new
        # release keeps its previous table and retries; the rollout waits for it). A step whose time
        # had started waits the same way when a node no longer reports them (it restarted, say).
        return Transition(r, requeue_after=LOADED_RECHECK_SECONDS, changed=False)
    if r.kind is StepKind.PROMOTE:
        return _promote(ctx, r)
    marked = r.applied_at is None
    if marked:
        r = replace(r, applied_at=ctx.now)
    assert r.applied_at is not None
    deadline = r.applied_at + _duration(ctx, r)
    if ctx.now < deadline:
        return Transition(r, requeue_after=_wait(deadline - ctx.now), changed=marked)
    unit = ctx.unit
    if r.kind is StepKind.SPLIT and unit is not None and unit.ab_test is not None:
        return _split_done(ctx, r, unit.ab_test, analysis_for(unit), new, region)
    if verdict.outcome == "Inconclusive":
        return _inconclusive(ctx, r, verdict, changed=marked)
    return _enter_next(ctx, replace(r, history=_history(r, _result(ctx, r, verdict))))


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


def _no_nodes(ctx: RolloutContext, r: RolloutRecord) -> tuple[RolloutRecord, Pause]:
    message = f"no healthy node in {', '.join(ctx.regions) or 'any region'} can take {ctx.target.version} yet"
    pending = replace(r, phase=Phase.PENDING, awaiting=None, reason="NoNodes", message=message)
    return pending, Pause(r.id, ctx.module, "NoNodes", message)


def _enter_next(ctx: RolloutContext, r: RolloutRecord) -> Transition:
    """Enter the next step, or promote: in both cases only past every gate not yet passed."""
    nxt = _next(ctx, r)
    awaiting = _gate(ctx, r, nxt)
    approved: StepResult | None = None
    commits: tuple[str, ...] = ()
    if awaiting is not None:
        result, commits = _approval(ctx, r)
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
        approved = StepResult(at.step, at.kind, _region_name(ctx, at), ctx.now, "Approved", "Approved", result.message)
    if nxt is None and r.kind is None:
        # Nothing ran yet and there is no step to enter (no healthy node in scope): wait for nodes;
        # the approvals stay unspent until a step is entered.
        if r.phase is Phase.PENDING and r.reason == "NoNodes":
            return Transition(r, changed=False)
        pending, pause = _no_nodes(ctx, r)
        return Transition(pending, (pause,))
    if approved is not None:
        r = replace(r, approvals_used=r.approvals_used + commits, history=_history(r, approved))
    if nxt is None:
        return _finish(ctx, r)
    message = _step_message(ctx, nxt)
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
    action = AdvanceStep(r.id, ctx.module, nxt.step, nxt.kind, nxt.percent, _region_name(ctx, nxt))
    return Transition(entered, (action,), LOADED_RECHECK_SECONDS)


def _finish(ctx: RolloutContext, r: RolloutRecord) -> Transition:
    """Every step passed: publish the new release alone on every node of the scope (`Promote`), or
    promote at once when every node already reports it alone (a Rolling or Regional last step)."""
    if all(n in ctx.alone for region in ctx.regions for n in ctx.scope.get(region, ())):
        return _promote(ctx, r)
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


def _promote(ctx: RolloutContext, r: RolloutRecord) -> Transition:
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


def _rollback(ctx: RolloutContext, r: RolloutRecord, reason: str, message: str, phase: Phase) -> Transition:
    back_to = r.previous.version if r.previous is not None else "nothing"
    done = replace(r, phase=phase, awaiting=None, finished_at=ctx.now, reason=reason, message=message, request=None)
    return Transition(done, (Rollback(r.id, ctx.module, back_to, reason, message),))


def _inconclusive(ctx: RolloutContext, r: RolloutRecord, verdict: Verdict, changed: bool = False) -> Transition:
    if verdict.reason == "NoTraffic" and r.kind is StepKind.PREVIEW and _analysis(ctx, r).waits_for_traffic:
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
        history=_history(r, _result(ctx, r, verdict)),
    )
    return Transition(paused, (Pause(r.id, ctx.module, verdict.reason, verdict.message),), RECHECK_SECONDS)


def _failed(ctx: RolloutContext, r: RolloutRecord, verdict: Verdict) -> Transition:
    r = replace(r, history=_history(r, _result(ctx, r, verdict)))
    strategy = ctx.strategy
    if strategy is not None and strategy.auto_rollback:
        return _rollback(ctx, r, verdict.reason, verdict.message, Phase.ROLLED_BACK)
    message = f"{verdict.message} (autoRollback is off: roll back, or commit a fix)"
    reason = "SmokeFailed" if verdict.reason == "SmokeFailed" else "AnalysisFailed"
    paused = replace(r, phase=Phase.PAUSED, reason=reason, message=message)
    return Transition(paused, (Pause(r.id, ctx.module, reason, message),))


def _split_done(
    ctx: RolloutContext, r: RolloutRecord, params: ABTestParams, analysis: Analysis, b: Totals, region: str | None
) -> Transition:
    a = _totals(ctx, r.previous.version, region) if r.previous is not None else Totals()
    verdict, result = compare(params, analysis, a, b)
    if result is None:
        return _inconclusive(ctx, r, verdict)
    r = replace(r, ab_result=result, history=_history(r, _result(ctx, r, verdict)))
    if params.winner == "approval":
        hint = "approve it to promote" if result.winner == "B" else "approve it to promote B anyway, or roll back"
        message = f"{verdict.message}; waiting for an approval of {ctx.module}@{r.target.version} ({hint})"
        waiting = replace(
            r, phase=Phase.WAITING_APPROVAL, awaiting="winner", reason="AwaitingApproval", message=message
        )
        return Transition(waiting, (Pause(r.id, ctx.module, "AwaitingApproval", message),))
    if result.winner == "A":
        return _rollback(ctx, r, "ABTestLost", verdict.message, Phase.ROLLED_BACK)
    return _enter_next(ctx, r)


def _winner_approval(ctx: RolloutContext, r: RolloutRecord) -> Transition:
    result, commits = _approval(ctx, r)
    if not result.satisfied:
        return Transition(r, changed=False)
    approved = StepResult(r.step, r.kind, _region_name(ctx, r), ctx.now, "Approved", "Approved", result.message)
    r = replace(r, approvals_used=r.approvals_used + commits, history=_history(r, approved))
    moved = _enter_next(ctx, r)
    event = RecordEvent(ctx.module, r.id, "WinnerApproved", result.message)
    return Transition(moved.record, (event, *moved.actions), moved.requeue_after)


def supersede(ctx: RolloutContext, r: RolloutRecord, by: str) -> Transition:
    """Git moved on while `r` ran: it stops where it is; the next rollout starts from `r.previous`."""
    message = f"superseded by {by} before it finished"
    done = replace(r, phase=Phase.SUPERSEDED, awaiting=None, finished_at=ctx.now, reason="Superseded", message=message)
    return Transition(done, (RecordEvent(ctx.module, r.id, "Superseded", message),))
