"""What a planner pass returns: a closed set of actions, the records to store, when to look again.

Where it sits: `reconciler.planner.plan` returns a `Plan`; the executor applies it in this order:
1. write `Plan.records` to the state store (each is a whole record, upserted by id), so a restarted
   reconciler resumes from the new step and never repeats or skips one;
2. apply `Plan.actions` in order, matching on the type with `assert_never` for the rest. The
   transition actions (`StartRollout`, `AdvanceStep`, `Pause`, `Rollback`, `Promote`, `RecordEvent`)
   are facts to log, trace and show: their state is already in the records. `SetAssignment` carries
   a node's full desired table: publishing the same table again changes nothing;
3. come back after `Plan.requeue_after` seconds (None: only when something changes).
Every action is safe to repeat.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.planner.types import AssignmentEntry, Condition, RolloutRecord, StepKind

__all__ = [
    "Action",
    "AdvanceStep",
    "Pause",
    "Plan",
    "Promote",
    "RecordEvent",
    "Rollback",
    "RolloutAction",
    "SetAssignment",
    "StartRollout",
]


@dataclass(frozen=True)
class SetAssignment:
    """Publish `table` (the node's whole desired module table) to `node_id`."""

    node_id: str
    table: tuple[AssignmentEntry, ...]


@dataclass(frozen=True)
class RolloutAction:
    """The fields every transition of one rollout starts with: which rollout, of which module.
    (`RecordEvent` is not one: it may speak of a module with no rollout.)"""

    rollout_id: str
    module: str


@dataclass(frozen=True)
class StartRollout(RolloutAction):
    """A rollout was created (span `wasm.deployment.create`).

    `how` says what happens next, as events and `hotswap diff` show it: "by canary", "by canary
    once approved", "at once (no rollout strategy)", "with new capabilities, applied once approved"...
    """

    from_version: str | None
    to_version: str
    strategy: str | None
    how: str = ""

    def describe(self) -> str:
        """`1.1.0 -> 1.2.0 by canary once approved`; `1.1.0 with new limits, applied at once` when the
        version stays (a replacement with other settings)."""
        how = self.how or (f"by {self.strategy}" if self.strategy else "at once")
        if self.from_version == self.to_version:
            return f"{self.to_version} {how}"
        return f"{self.from_version or 'nothing'} -> {self.to_version} {how}"


@dataclass(frozen=True)
class AdvanceStep(RolloutAction):
    """A rollout entered a step (span `wasm.deployment.execute`)."""

    step: int
    kind: StepKind
    percent: int
    region: str | None = None


@dataclass(frozen=True)
class Pause(RolloutAction):
    """A rollout stopped moving and says why (NoTraffic, AnalysisFailed, AwaitingApproval...)."""

    reason: str
    message: str


@dataclass(frozen=True)
class Rollback(RolloutAction):
    """Traffic went back to `to_version` and the new version is unloaded (span `wasm.deployment.rollback`)."""

    to_version: str
    reason: str
    message: str


@dataclass(frozen=True)
class Promote(RolloutAction):
    """`version` is now the module's stable version everywhere in the rollout's scope."""

    version: str


@dataclass(frozen=True)
class RecordEvent:
    """Something worth an event line that changes no traffic (Superseded, AwaitingApproval, Stalled)."""

    module: str
    rollout_id: str | None
    reason: str
    message: str
    warning: bool = False


Action = SetAssignment | StartRollout | AdvanceStep | Pause | Rollback | Promote | RecordEvent


@dataclass(frozen=True)
class Plan:
    """One pass's result. `records` holds only records that are new or changed in this pass."""

    actions: tuple[Action, ...] = ()
    records: tuple[RolloutRecord, ...] = ()
    requeue_after: float | None = None
    status: Mapping[str, tuple[Condition, ...]] = field(default_factory=dict)
    waiting: Mapping[str, str] = field(default_factory=dict)  # module -> why its interface change waits
