"""The executor: the one place where a pass's plan touches the world.

Where it sits: `reconciler.apply.controller.Controller` plans in a worker thread from an immutable
snapshot (no side effects), saves the rollout records, then hands the plan here:

    Plan.actions --SetAssignment--> NodeHub.publish (one gather for the fleet; the hub encodes and
                                    signs each distinct table once, nodes long-polling wake up)
                 --the others-----> Event -> listeners (notifier, console stream), log, audit log

Events from beside the controller (update automation, a stalled revision) come through `event()` too,
so every "something happened" reaches the same three places in the same order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, assert_never

from edge.protocol import ModuleTable
from reconciler.apply.nodes import NodeHub
from reconciler.apply.tables import WireEntries
from reconciler.planner import (
    Action,
    AdvanceStep,
    AssignmentEntry,
    Pause,
    Plan,
    Promote,
    RecordEvent,
    Rollback,
    SetAssignment,
    StartRollout,
)
from reconciler.store.audit import AuditLog
from reconciler.store.errors import StoreError

log = logging.getLogger("hotswap.controller")
MAX_EVENTS = 200

Published = tuple[str, ModuleTable, tuple[AssignmentEntry, ...]]  # node, the table it holds, its rows


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

    def __init__(self, hub: NodeHub, store: AuditLog, clock: Callable[[], float]) -> None:
        self.hub = hub
        self.store = store
        self.clock = clock
        self.events: list[Event] = []  # the last MAX_EVENTS, for status
        self.listeners: list[Callable[[Event], None]] = []  # told of every event; must not block
        self._wire = WireEntries()  # planner rows -> wire rows, each distinct row converted once

    async def apply(self, plan: Plan) -> list[Published]:
        """Publish every table the plan sets (one await for the fleet, not one event-loop turn per
        node), then say what the plan did; returns what each node now holds."""
        tables = {a.node_id: a.table for a in plan.actions if isinstance(a, SetAssignment)}
        published: list[Published] = []

        async def publish(node_id: str, table: tuple[AssignmentEntry, ...]) -> None:
            # The same rows give the same wire objects, so the hub encodes each distinct table once.
            if await self.hub.publish(node_id, self._wire.table(table)) is not None:
                held = self.hub.table(node_id)  # no await since the publish: the table it left
                if held is not None:
                    published.append((node_id, held, table))

        await asyncio.gather(*(publish(node_id, table) for node_id, table in tables.items()))
        for action in plan.actions:
            self._say(action)
        return published

    def _say(self, action: Action) -> None:
        match action:
            case SetAssignment():
                pass  # published above
            case StartRollout():
                self.event("RolloutStarted", f"{action.module}: {action.describe()}", action.module, action.rollout_id)
            case AdvanceStep():
                where = f" in {action.region}" if action.region else ""
                self.event(
                    "StepStarted",
                    f"{action.module}: step {action.step} ({action.kind.value}, {action.percent}%){where}",
                    action.module,
                    action.rollout_id,
                )
            case Pause():
                self.event(action.reason, f"{action.module}: {action.message}", action.module, action.rollout_id)
            case Rollback():
                self.event(
                    "RolledBack",
                    f"{action.module}: back to {action.to_version}: {action.message}",
                    action.module,
                    action.rollout_id,
                    warning=True,
                )
            case Promote():
                self.event("Promoted", f"{action.module}: {action.version} is stable", action.module, action.rollout_id)
            case RecordEvent():
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
