"""The planner: a pure function from desired fleet, observed nodes, rollout records and now to actions.

Flow: the executor builds a `Snapshot` -> `plan(snapshot)` (or `Planner().plan(snapshot)`, the same plan
from only what changed since its last pass: `incremental`) places modules (`placement`), moves each
module's rollout at most one step (`machine`, judged by `analysis`), derives every node's table
(`weights`) and the conditions (`conditions`) -> a `Plan` whose records the executor stores before
it applies the actions. Nothing in this package does I/O or reads the clock (import-linter checks).
`snapshots` turns a snapshot to JSON and back (`hotswap diff` plans on its own machine) and
`plandiff` says what a plan would change, as `hotswap diff` and the console show it.
"""

from reconciler.planner.actions import (
    Action,
    AdvanceStep,
    Pause,
    Plan,
    Promote,
    RecordEvent,
    Rollback,
    SetAssignment,
    StartRollout,
)
from reconciler.planner.conditions import module_conditions
from reconciler.planner.incremental import Planner
from reconciler.planner.placement import place
from reconciler.planner.planner import latest_records, plan, rollout_rule
from reconciler.planner.types import (
    ABResult,
    AssignmentEntry,
    Condition,
    ConditionType,
    NodeStatus,
    ObservedNode,
    Phase,
    RegionMetrics,
    Release,
    RolloutRecord,
    RunningEntry,
    SmokeResult,
    Snapshot,
    StepKind,
    StepResult,
)

__all__ = [
    "ABResult",
    "Action",
    "AdvanceStep",
    "AssignmentEntry",
    "Condition",
    "ConditionType",
    "NodeStatus",
    "ObservedNode",
    "Pause",
    "Phase",
    "Plan",
    "Planner",
    "Promote",
    "RecordEvent",
    "RegionMetrics",
    "Release",
    "Rollback",
    "RolloutRecord",
    "RunningEntry",
    "SetAssignment",
    "SmokeResult",
    "Snapshot",
    "StartRollout",
    "StepKind",
    "StepResult",
    "latest_records",
    "module_conditions",
    "place",
    "plan",
    "rollout_rule",
]
