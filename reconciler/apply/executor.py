"""The executor: the one place where a pass's plan touches the world.

Where it sits: `reconciler.apply.controller.Controller` plans in a worker thread from an immutable
snapshot (no side effects), saves the rollout records, then hands the plan here:

    Plan.actions --SetAssignment--> NodeHub.publish (one gather for the fleet; the hub encodes and
                                    signs each distinct table once, nodes long-polling wake up)
                 --the others-----> Event -> listeners (notifier, console stream), log, audit log
    the report's conditions ------> the store's `module_conditions`, once per pass and only the
                                    modules whose conditions changed since the last write (an idle
                                    pass writes nothing), in one transaction off the event loop;
                                    replicas that do not lead read them back (`stored_conditions`)

Events from beside the controller (update automation, a stalled revision) come through `event()` too,
so every "something happened" reaches the same three places in the same order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, assert_never

from edge.protocol import ModuleTable
from reconciler.apply.nodes import NodeHub
from reconciler.apply.tables import WireEntries
from reconciler.planner import AssignmentEntry, Condition, ConditionType, actions
from reconciler.store.audit import AuditLog
from reconciler.store.conditions import ConditionStore
from reconciler.store.errors import StoreError
from reconciler.store.records import JsonObject

log = logging.getLogger("hotswap.controller")
MAX_EVENTS = 200

Published = tuple[str, ModuleTable, tuple[AssignmentEntry, ...]]  # node, the table it holds, its rows
Conditions = Mapping[str, tuple[Condition, ...]]  # module -> its conditions


class ExecutorStore(AuditLog, ConditionStore, Protocol):
    """What the executor writes: audit lines, and the modules' conditions."""


def conditions_json(conditions: tuple[Condition, ...]) -> list[JsonObject]:
    """A module's conditions as the store keeps them."""
    return [{"type": c.type.value, "status": c.status, "reason": c.reason, "message": c.message} for c in conditions]


def conditions_from_json(rows: list[JsonObject]) -> tuple[Condition, ...] | None:
    """The conditions `conditions_json` wrote; None for rows this version cannot read (a condition
    type it does not know): such a module counts as unwritten and is written again."""
    try:
        return tuple(
            Condition(ConditionType(row["type"]), bool(row["status"]), str(row["reason"]), str(row["message"]))
            for row in rows
        )
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Event:
    at: float
    reason: str
    message: str
    module: str | None = None
    rollout: str | None = None
    warning: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "reason": self.reason,
            "message": self.message,
            "module": self.module,
            "rollout": self.rollout,
            "type": "Warning" if self.warning else "Normal",
        }


class Executor:
    """Publishes a plan's tables and turns its transitions into events."""

    def __init__(self, hub: NodeHub, store: ExecutorStore, clock: Callable[[], float]) -> None:
        self.hub = hub
        self.store = store
        self.clock = clock
        self.events: list[Event] = []  # the last MAX_EVENTS, for status
        self.listeners: list[Callable[[Event], None]] = []  # told of every event; must not block
        self._wire = WireEntries()  # planner rows -> wire rows, each distinct row converted once
        # The conditions as the store holds them after this executor's last write; None: read the
        # store first (a start, or a replica that became leader: another may have written since).
        self._written: dict[str, tuple[Condition, ...]] | None = None

    async def apply(self, plan: actions.Plan, traces: Mapping[str, str] | None = None) -> list[Published]:
        """Publish every table the plan sets (one await for the fleet, not one event-loop turn per
        node), each with the traceparents of the steps that changed it (`traces`: module ->
        traceparent), then say what the plan did; returns what each node now holds."""
        tables = {a.node_id: a.table for a in plan.actions if isinstance(a, actions.SetAssignment)}
        # The same rows give the same wire objects, so the hub encodes each distinct table once.
        held = await self.hub.publish_all({node_id: self._wire.table(t) for node_id, t in tables.items()}, traces)
        published: list[Published] = [(node_id, held[node_id], t) for node_id, t in tables.items() if node_id in held]
        for action in plan.actions:
            self._say(action)
        return published

    async def write_conditions(self, conditions: Conditions) -> None:
        """The pass's conditions into the store: the modules whose conditions differ from what was
        last written, and the removal of those gone from the fleet, in one transaction; nothing when
        none changed. A store error propagates (the pass is retried) and leaves the last write as
        it was."""
        written = self._written
        if written is None:
            written = await self.stored_conditions()
        changed = {module: conditions_json(c) for module, c in conditions.items() if written.get(module) != c}
        removed = [module for module in written if module not in conditions]
        if changed or removed:
            await asyncio.to_thread(self.store.write_conditions, changed, removed)
        self._written = dict(conditions)

    async def stored_conditions(self, module: str | None = None) -> dict[str, tuple[Condition, ...]]:
        """The conditions in the store (of every module, or of `module` only), off the event loop."""
        if module is None:
            rows = await asyncio.to_thread(self.store.list_conditions)
        else:
            row = await asyncio.to_thread(self.store.get_conditions, module)
            rows = {module: row} if row is not None else {}
        read = {name: conditions_from_json(row.conditions) for name, row in rows.items()}
        return {name: conditions for name, conditions in read.items() if conditions is not None}

    def forget(self) -> None:
        """Read the store again before the next write (a replica that becomes leader)."""
        self._written = None

    def _say(self, action: actions.Action) -> None:
        match action:
            case actions.SetAssignment():
                pass  # published above
            case actions.StartRollout():
                self.event("RolloutStarted", f"{action.module}: {action.describe()}", action.module, action.rollout_id)
            case actions.AdvanceStep():
                where = f" in {action.region}" if action.region else ""
                self.event(
                    "StepStarted",
                    f"{action.module}: step {action.step} ({action.kind.value}, {action.percent}%){where}",
                    action.module,
                    action.rollout_id,
                )
            case actions.Pause():
                self.event(action.reason, f"{action.module}: {action.message}", action.module, action.rollout_id)
            case actions.Rollback():
                self.event(
                    "RolledBack",
                    f"{action.module}: back to {action.to_version}: {action.message}",
                    action.module,
                    action.rollout_id,
                    warning=True,
                )
            case actions.Promote():
                self.event("Promoted", f"{action.module}: {action.version} is stable", action.module, action.rollout_id)
            case actions.RecordEvent():
                self.event(action.reason, action.message, action.module, action.rollout_id, warning=action.warning)
            case _:
                assert_never(action)

    def event(
        self,
        reason: str,
        message: str,
        module: str | None = None,
        rollout: str | None = None,
        *,
        warning: bool = False,
    ) -> None:
        """Listeners, log and audit log, in that order. Loop only."""
        event = Event(self.clock(), reason, message, module, rollout, warning)
        self.events.append(event)
        del self.events[:-MAX_EVENTS]
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a listener's bug must not stop a rollout
                log.exception("event listener failed on %s", reason)
        ids = {"moduleName": module, "deploymentId": rollout}  # "module" is a LogRecord attribute
        (log.warning if warning else log.info)("%s: %s", reason, message, extra=ids)
        with contextlib.suppress(StoreError):
            self.store.append_audit(
                actor="reconciler",
                action=f"rollout.{reason[0].lower()}{reason[1:]}",
                subject=rollout or module or "fleet",
                detail={"message": message, "module": module},
            )
