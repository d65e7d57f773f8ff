"""Each module's conditions as the leader's last pass reported them, so every replica (and a control
plane that just restarted) shows the same status.

Where it sits: the executor (reconciler.apply.executor) writes the modules whose conditions changed
once per pass, in one transaction, and nothing when none did; the API of a replica that does not
lead reads them back here. The store keeps the conditions as JSON (a list of objects, the
executor's encoding: this layer does not know the planner's `Condition`) with the time they last
changed. Consumers take the narrow `ConditionStore` Protocol; `SqlConditions` is its implementation
over a `Database` (`StateStore` offers the same methods too).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from reconciler.store.database import Database, Table
from reconciler.store.records import JsonObject
from reconciler.store.rows import dt, to_json, ts

__all__ = ["ConditionStore", "ModuleConditions", "SqlConditions"]


@dataclass(frozen=True)
class ModuleConditions:
    """One row: a module's conditions and when they were last written (they changed then)."""

    module: str
    conditions: list[JsonObject]
    updated_at: datetime


class ConditionStore(Protocol):
    """What a consumer of the modules' conditions needs."""

    def write_conditions(
        self, changed: Mapping[str, list[JsonObject]], removed: Collection[str] = (), at: datetime | None = None
    ) -> None: ...

    def list_conditions(self) -> dict[str, ModuleConditions]: ...

    def get_conditions(self, module: str) -> ModuleConditions | None: ...


class SqlConditions:
    """The `module_conditions` table of `db`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def write_conditions(
        self, changed: Mapping[str, list[JsonObject]], removed: Collection[str] = (), at: datetime | None = None
    ) -> None:
        """Replace the conditions of the modules in `changed` and forget those in `removed`, in ONE
        transaction (all or none), stamped `at` (default: now). Rows are written in module order, so
        two writers at once wait for each other instead of deadlocking."""
        if not changed and not removed:
            return
        stamp = ts(at or self.db.clock())
        with self.db.tx(write=True) as tx:
            for module in sorted(changed):
                _CONDITIONS.upsert(tx, (module, to_json(changed[module]), stamp), update=("conditions", "updated_at"))
            for module in sorted(set(removed) - set(changed)):
                tx.run("DELETE FROM module_conditions WHERE module = ?", module)

    def list_conditions(self) -> dict[str, ModuleConditions]:
        """Every module's row, by module name."""
        return {row.module: row for row in self.db.read(_CONDITIONS.select, "ORDER BY module")}

    def get_conditions(self, module: str) -> ModuleConditions | None:
        return self.db.read(_CONDITIONS.get, module)


_CONDITIONS = Table.of(
    "module_conditions",
    ModuleConditions,
    "module, conditions, updated_at",
    key="module",
    conditions=json.loads,
    updated_at=dt,
)
