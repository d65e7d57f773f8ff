"""What the next reconcile pass would change, as data and as the lines `hotswap diff` prints.

Where it sits: beside the planner. `hotswap diff` (reconciler/commands/diff.py) plans locally from
the control plane's snapshot (reconciler/planner/snapshots.py) and a fleet from the working tree; the
console's `GET /api/v1/wasm/diff?ref=` (reconciler/api/diff.py) plans on the control plane from a
fleet at a Git ref. Both call `plan_diff(snapshot)` and show the same lines. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reconciler import planner
from reconciler.planner import AssignmentEntry, Snapshot


@dataclass(frozen=True)
class TableChange:
    """One module version's weight on one node, before and after (None: not in the table)."""

    module: str
    version: str
    before: int | None
    after: int | None

    def text(self, node: str) -> str:
        where = f"{self.module}@{self.version}"
        if self.before is None:
            return f"  {node}: + {where} weight {self.after}"
        if self.after is None:
            return f"  {node}: - {where} (was weight {self.before})"
        return f"  {node}: ~ {where} weight {self.before} -> {self.after}"


@dataclass(frozen=True)
class RolloutChange:
    """One rollout action: its kind (startRollout, advanceStep, rollback, promote, pause, recordEvent)."""

    kind: str
    module: str
    version: str | None
    from_version: str | None
    to_version: str | None
    strategy: str | None
    text: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "module": self.module,
            "version": self.version,
            "from": self.from_version,
            "to": self.to_version,
            "strategy": self.strategy,
            "text": self.text,
        }


@dataclass(frozen=True)
class PlannedDiff:
    actions: tuple[RolloutChange, ...]
    tables: tuple[tuple[str, tuple[TableChange, ...]], ...]  # (node id, its changes) per changed node
    lines: tuple[str, ...]  # in the planner's order, as `hotswap diff` prints them

    @property
    def changes(self) -> int:
        return len(self.actions) + sum(len(changes) for _, changes in self.tables)


def _weights(entries: tuple[AssignmentEntry, ...]) -> dict[tuple[str, str], int]:
    return {(e.module, e.version): e.weight for e in entries}


def table_changes(before: tuple[AssignmentEntry, ...], after: tuple[AssignmentEntry, ...]) -> tuple[TableChange, ...]:
    old, new = _weights(before), _weights(after)
    return tuple(
        TableChange(module, version, old.get((module, version)), new.get((module, version)))
        for module, version in sorted(set(old) | set(new))
        if old.get((module, version)) != new.get((module, version))
    )


def rollout_change(action: planner.Action) -> RolloutChange | None:
    """The rollout action as data with the line `hotswap diff` prints; None for a table change."""
    match action:
        case planner.StartRollout():
            text = action.describe()
            return RolloutChange(
                "startRollout",
                action.module,
                action.to_version,
                action.from_version,
                action.to_version,
                action.strategy,
                text,
            )
        case planner.AdvanceStep():
            text = f"step {action.step} {action.kind.value} {action.percent}%"
            return RolloutChange("advanceStep", action.module, None, None, None, None, text)
        case planner.Rollback():
            text = f"roll back to {action.to_version} ({action.message})"
            return RolloutChange("rollback", action.module, action.to_version, None, action.to_version, None, text)
        case planner.Promote():
            text = f"promote {action.version}"
            return RolloutChange("promote", action.module, action.version, None, None, None, text)
        case planner.Pause() | planner.RecordEvent():
            kind = "pause" if isinstance(action, planner.Pause) else "recordEvent"
            return RolloutChange(kind, action.module, None, None, None, None, f"{action.reason}: {action.message}")
        case _:
            return None


def plan_diff(snapshot: Snapshot) -> PlannedDiff:
    """Plan from `snapshot` and describe every rollout action and node-table change it would make."""
    result = planner.plan(snapshot)
    assigned = {n.id: n.assigned for n in snapshot.nodes}
    actions: list[RolloutChange] = []
    tables: list[tuple[str, tuple[TableChange, ...]]] = []
    lines: list[str] = []
    for action in result.actions:
        if isinstance(action, planner.SetAssignment):
            changes = table_changes(assigned.get(action.node_id, ()), action.table)
            if changes:
                tables.append((action.node_id, changes))
                lines += [c.text(action.node_id) for c in changes]
            continue
        change = rollout_change(action)
        if change is not None:
            actions.append(change)
            lines.append(f"rollout {change.module}: {change.text}")
    return PlannedDiff(tuple(actions), tuple(tables), tuple(lines))
