"""Conditions: the status of a module and its rollout, computed once per pass by one pure function.

Where it sits: the planner calls `module_conditions` for every module at the end of its pass and
returns the result in `Plan.status`; the executor writes it once, and `hotswap status`, `hotswap
diff` and the deployments API show it. Every module always carries all five condition types
(Ready, Progressing, Paused, Degraded, Stalled), each with a CamelCase reason and a human message,
as Flux does. Conditions that do not hold are shared constants: a steady fleet of 10,000 modules
costs one new object per module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.planner.types import Condition, ConditionType, Phase, RolloutRecord

__all__ = ["ModuleView", "module_conditions"]

_T = ConditionType
NOT_PROGRESSING = Condition(_T.PROGRESSING, False, "Idle", "no rollout is running")
NOT_PAUSED = Condition(_T.PAUSED, False, "NotPaused", "nothing is paused")
NOT_DEGRADED = Condition(_T.DEGRADED, False, "Healthy", "every replica is placed and no analysis failed")
NOT_STALLED = Condition(_T.STALLED, False, "Reconciling", "no human action is needed")


@dataclass(frozen=True)
class ModuleView:
    """What the conditions of one module are computed from."""

    module: str
    desired_version: str
    record: RolloutRecord | None  # the module's latest record after this pass
    placed: int  # nodes running the module (pins and overrides included)
    missing: Mapping[str, int] = field(default_factory=dict)  # region -> replicas without a node
    missing_binary: str | None = None  # why the desired version has no binary
    held: tuple[str, ...] = ()  # pins and overrides held for an approval, and what they wait for


def module_conditions(view: ModuleView) -> tuple[Condition, ...]:
    r = view.record
    name = f"{view.module}@{view.desired_version}"
    shortfall = ""
    if view.missing:
        shortfall = ", ".join(f"{region}: {n} replica(s) without a node" for region, n in sorted(view.missing.items()))
    failed = r is not None and (
        (r.phase is Phase.PAUSED and r.reason == "AnalysisFailed")
        or (r.phase in (Phase.ROLLED_BACK, Phase.ABORTED) and r.target.version == view.desired_version)
    )

    if view.missing_binary is not None:
        stalled = Condition(_T.STALLED, True, "MissingBinary", view.missing_binary)
    elif r is not None and failed:
        stalled = Condition(
            _T.STALLED, True, r.reason, f"{r.message}; stays so until Git changes {view.module} or an operator acts"
        )
    else:
        stalled = NOT_STALLED

    if r is not None and failed:
        degraded = Condition(_T.DEGRADED, True, r.reason, r.message)
    elif shortfall:
        degraded = Condition(_T.DEGRADED, True, "InsufficientNodes", shortfall)
    else:
        degraded = NOT_DEGRADED

    if r is not None and r.active and r.held:
        paused = Condition(_T.PAUSED, True, "ManualPause", f"rollout {r.id} is held by an operator")
    elif r is not None and r.phase in (Phase.PAUSED, Phase.WAITING_APPROVAL):
        paused = Condition(_T.PAUSED, True, r.reason, r.message)
    else:
        paused = NOT_PAUSED
    if view.held:
        waits = "; ".join(view.held)
        paused = (
            Condition(_T.PAUSED, True, paused.reason, f"{paused.message}; {waits}")
            if paused.status
            else Condition(_T.PAUSED, True, "AwaitingApproval", waits)
        )

    if r is not None and r.active:
        progressing = Condition(_T.PROGRESSING, not r.held, r.reason or r.phase.value, r.message)
    else:
        progressing = NOT_PROGRESSING

    if view.missing_binary is not None:
        ready = Condition(_T.READY, False, "MissingBinary", view.missing_binary)
    elif r is not None and r.active:
        ready = Condition(_T.READY, False, "RolloutInProgress", f"rollout {r.id} to {name}: {r.message}")
    elif failed and r is not None:
        stable = r.stable.version if r.stable is not None else "nothing"
        ready = Condition(_T.READY, False, r.phase.value, f"{name} was {r.phase.value}; {stable} still runs")
    elif view.placed == 0:
        ready = Condition(_T.READY, False, "NoNodes", f"no healthy node can hold {view.module}")
    elif shortfall:
        ready = Condition(_T.READY, False, "InsufficientNodes", shortfall)
    else:
        ready = Condition(_T.READY, True, "Deployed", f"{name} runs on {view.placed} node(s)")
    return (ready, progressing, paused, degraded, stalled)
