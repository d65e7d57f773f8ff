"""A rollout's steps: which one comes next, how long it lasts, what it is judged on and records.

Where it sits: under the rollout machine (`reconciler.planner.machine`), which enters the step
`next_step` returns (through `rollout_moves.enter_next`), waits its `duration`, judges it with
`step_analysis` on the `version_totals` of its region and records the outcome (`step_result`,
`history_with`). Pure functions of the `RolloutContext` and the record (`rollout_context`).

Steps per strategy (`StepKind`): Canary `Weight` per entry of `steps`; BlueGreen `Preview` (new at
0 %) then `Switch` (new at 100 %, previous kept at 0 % for `keepPreviousSeconds`, so a rollback is
an instant switch back); Rolling one `Batch` of `batchSize` nodes after the other until every node
runs the new version; ABTest one sticky `Split`, then the winner; Regional the inner strategy's
steps in one region after the other, each region closed by a `Settle` step of `regionSeconds`.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.planner.analysis import Totals, Verdict, analysis_for, totals
from reconciler.planner.rollout_context import RolloutContext
from reconciler.planner.types import HISTORY_LIMIT, RolloutRecord, StepKind, StepResult
from reconciler.spec.strategies import Analysis, StrategyType

__all__ = [
    "Step",
    "duration",
    "history_with",
    "next_step",
    "region_name",
    "step_analysis",
    "step_message",
    "step_result",
    "version_totals",
]


@dataclass(frozen=True)
class Step:
    region_index: int
    step: int
    kind: StepKind
    percent: int
    done: tuple[str, ...] = ()
    batch: tuple[str, ...] = ()


def _unit_nodes(ctx: RolloutContext, region_index: int) -> tuple[str, ...]:
    if ctx.regional:
        return ctx.scope.get(ctx.regions[region_index], ()) if region_index < len(ctx.regions) else ()
    return tuple(n for region in ctx.regions for n in ctx.scope.get(region, ()))


def _next_in_unit(ctx: RolloutContext, region_index: int, step: int, done: tuple[str, ...]) -> Step | None:
    unit = ctx.unit
    if unit is None:
        return None
    i = step + 1
    if unit.type is StrategyType.CANARY and unit.canary is not None:
        steps = unit.canary.steps
        return Step(region_index, i, StepKind.WEIGHT, steps[i]) if i < len(steps) else None
    if unit.type is StrategyType.BLUE_GREEN:
        kinds = (StepKind.PREVIEW, StepKind.SWITCH)
        return Step(region_index, i, kinds[i], 100 * i) if i < len(kinds) else None
    if unit.type is StrategyType.AB_TEST and unit.ab_test is not None:
        return Step(region_index, i, StepKind.SPLIT, unit.ab_test.split) if i == 0 else None
    if unit.type is StrategyType.ROLLING and unit.rolling is not None:
        nodes = _unit_nodes(ctx, region_index)
        seen = set(done)
        remaining = [n for n in nodes if n not in seen]
        if not remaining:
            return None
        batch = tuple(remaining[: unit.rolling.batch_size])
        percent = round(100 * (len(nodes) - len(remaining) + len(batch)) / len(nodes))
        return Step(region_index, i, StepKind.BATCH, percent, done, batch)
    return None  # pragma: no cover - a Regional unit is refused by the loader


def next_step(ctx: RolloutContext, r: RolloutRecord) -> Step | None:
    """The step after the applied one, or None when the rollout is complete."""
    if ctx.regional and r.kind is StepKind.SETTLE:
        first = r.region_index + 1
        return _first_in_region(ctx, first) if first < len(ctx.regions) else None
    if ctx.regional and r.step < 0:
        return _first_in_region(ctx, r.region_index)
    done = r.done_nodes + r.batch
    found = _next_in_unit(ctx, r.region_index, r.step, done)
    if found is None and ctx.regional:
        return Step(r.region_index, r.step + 1, StepKind.SETTLE, 100, done)
    return found


def _first_in_region(ctx: RolloutContext, region_index: int) -> Step:
    return _next_in_unit(ctx, region_index, -1, ()) or Step(region_index, 0, StepKind.SETTLE, 100)


def duration(ctx: RolloutContext, r: RolloutRecord) -> float:
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


def step_analysis(ctx: RolloutContext, r: RolloutRecord) -> Analysis:
    """The step's analysis: the strategy's own, else its type's default (`analysis_for`)."""
    if r.kind is StepKind.SETTLE or ctx.unit is None:
        outer = ctx.strategy
        return analysis_for(outer, ctx.inner if ctx.regional else None) if outer is not None else Analysis()
    return analysis_for(ctx.unit)


def region_name(ctx: RolloutContext, r: RolloutRecord | Step) -> str | None:
    if ctx.regional and r.region_index < len(ctx.regions):
        return ctx.regions[r.region_index]
    return None


def version_totals(ctx: RolloutContext, version: str, region: str | None) -> Totals:
    regions = {region} if region is not None else set(ctx.regions)
    return totals(m for m in ctx.metrics.get(version, ()) if m.region in regions)


def history_with(r: RolloutRecord, result: StepResult) -> tuple[StepResult, ...]:
    return (*r.history, result)[-HISTORY_LIMIT:]


def step_result(ctx: RolloutContext, r: RolloutRecord, verdict: Verdict) -> StepResult:
    outcome = verdict.outcome
    return StepResult(
        r.step,
        r.kind,
        region_name(ctx, r),
        ctx.now,
        outcome,
        verdict.reason,
        verdict.message,
        verdict.new.requests,
        verdict.new.error_rate,
        verdict.new.p99_ms,
    )


def step_message(ctx: RolloutContext, nxt: Step) -> str:
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
