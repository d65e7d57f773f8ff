"""Rollout records and their history: one row per rollout, written with compare-and-set on its
generation, and an append-only list of step events per rollout.

Each fact is kept once. A rollout's row holds its record as one JSON document (`detail`) and, as
columns, only what queries filter or order by (module, state, created_at) and the generation that
compare-and-set checks. Its history is the `rollout_steps` rows and nowhere else: a record is written
together with its new events in one transaction, so no record is stored without them.

Where it sits: the rollout book (reconciler.apply.rollouts) reads every record with its recent
history on start and writes a pass's records here, so two reconcilers never both advance a step
(the loser gets `StaleRecordError`); the API reads the history. Consumers take the narrow
`RolloutStore` Protocol; `SqlRollouts` is its implementation over a `Database` (`StateStore` offers
the same methods too).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from reconciler.store.database import Database, Table, Tx
from reconciler.store.errors import ConflictError, StaleRecordError
from reconciler.store.records import RolloutRecord, RolloutStepRecord
from reconciler.store.rows import dt, marks, to_json, ts

__all__ = ["RolloutStore", "SqlRollouts"]


class RolloutStore(Protocol):
    """What a consumer of rollout records needs."""

    def create_rollout(self, rollout: RolloutRecord, steps: Sequence[RolloutStepRecord] = ()) -> RolloutRecord: ...

    def update_rollout(self, rollout: RolloutRecord, steps: Sequence[RolloutStepRecord] = ()) -> RolloutRecord: ...

    def get_rollout(self, rollout_id: str) -> RolloutRecord | None: ...

    def list_rollouts(self, module: str | None = None, states: Iterable[str] | None = None) -> list[RolloutRecord]: ...

    def rollouts_with_steps(self, limit: int) -> list[tuple[RolloutRecord, list[RolloutStepRecord]]]: ...

    def append_rollout_step(self, step: RolloutStepRecord) -> RolloutStepRecord: ...

    def rollout_steps(self, rollout_id: str, limit: int | None = None) -> list[RolloutStepRecord]: ...


class SqlRollouts:
    """The `rollouts` and `rollout_steps` tables of `db`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create_rollout(self, rollout: RolloutRecord, steps: Sequence[RolloutStepRecord] = ()) -> RolloutRecord:
        """Insert a new rollout at generation 1, with the first events of its history; an existing id
        raises `ConflictError` (and writes nothing)."""
        now = self.db.clock()
        created = replace(rollout, created_at=rollout.created_at or now, updated_at=now, generation=1)
        with self.db.tx(write=True) as tx:
            if not _ROLLOUTS.insert(tx, _rollout_row(created)):
                raise ConflictError(f"rollout {rollout.id!r} already exists")
            _append(tx, steps)
        return created

    def update_rollout(self, rollout: RolloutRecord, steps: Sequence[RolloutStepRecord] = ()) -> RolloutRecord:
        """Write a rollout read at `rollout.generation`, with the new events of its history; returns it
        at the next generation.

        Raises `StaleRecordError` (and writes nothing) when someone else updated it since
        (compare-and-set), so two reconcilers never both advance a step.
        """
        updated = replace(rollout, updated_at=self.db.clock(), generation=rollout.generation + 1)
        row = _rollout_row(updated)
        assignments = ", ".join(f"{column} = ?" for column in _ROLLOUTS.columns.split(", ")[1:])
        with self.db.tx(write=True) as tx:
            changed = tx.run(
                f"UPDATE rollouts SET {assignments} WHERE id = ? AND generation = ?",
                *row[1:],
                rollout.id,
                rollout.generation,
            )
            if changed != 1:
                raise StaleRecordError("rollout", rollout.id, rollout.generation)
            _append(tx, steps)
        return updated

    def get_rollout(self, rollout_id: str) -> RolloutRecord | None:
        return self.db.read(_ROLLOUTS.get, rollout_id)

    def list_rollouts(self, module: str | None = None, states: Iterable[str] | None = None) -> list[RolloutRecord]:
        """Rollouts, oldest first; of one module and/or in the given states only."""
        clauses: list[str] = []
        params: list[Any] = []
        if module is not None:
            clauses.append("module = ?")
            params.append(module)
        if states is not None:
            wanted = sorted(set(states))
            if not wanted:
                return []
            clauses.append(f"state IN ({marks(wanted)})")
            params.extend(wanted)
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        return self.db.read(_ROLLOUTS.select, f"{where}{_OLDEST_FIRST}", *params)

    def rollouts_with_steps(self, limit: int) -> list[tuple[RolloutRecord, list[RolloutStepRecord]]]:
        """Every rollout, oldest first, with the last `limit` events of its history in order: what a
        reader that starts (the rollout book) needs, read in one transaction so the two agree."""
        with self.db.tx(write=False) as tx:
            rollouts = _ROLLOUTS.select(tx, _OLDEST_FIRST)
            rows = tx.all(
                f"SELECT {_STEPS.columns} FROM (SELECT {_STEPS.columns}, "
                "ROW_NUMBER() OVER (PARTITION BY rollout_id ORDER BY seq DESC) AS newest FROM rollout_steps) recent "
                "WHERE newest <= ? ORDER BY seq",
                limit,
            )
        steps: dict[str, list[RolloutStepRecord]] = {r.id: [] for r in rollouts}
        for step in map(_STEPS.decode, rows):
            steps.setdefault(step.rollout_id, []).append(step)
        return [(r, steps[r.id]) for r in rollouts]

    # -- history --------------------------------------------------------------------------------

    def append_rollout_step(self, step: RolloutStepRecord) -> RolloutStepRecord:
        """Add an event to a rollout's history; returns it with its sequence number."""
        with self.db.tx(write=True) as tx:
            return _append(tx, (step,))[0]

    def rollout_steps(self, rollout_id: str, limit: int | None = None) -> list[RolloutStepRecord]:
        """A rollout's history in order (the last `limit` events when given)."""
        newest_first = self.db.read(_STEPS.select, "WHERE rollout_id = ? ORDER BY seq DESC", rollout_id)
        return newest_first[:limit][::-1]


def _append(tx: Tx, steps: Iterable[RolloutStepRecord]) -> list[RolloutStepRecord]:
    appended = []
    for step in steps:
        row = tx.one(
            "INSERT INTO rollout_steps (rollout_id, step, event, at, message, analysis) "
            "VALUES (?, ?, ?, ?, ?, ?) RETURNING seq",
            step.rollout_id,
            step.step,
            step.event,
            ts(step.at),
            step.message,
            to_json(step.analysis),
        )
        appended.append(replace(step, seq=int(row[0])))
    return appended


def _rollout_row(r: RolloutRecord) -> tuple[Any, ...]:
    assert r.created_at is not None and r.updated_at is not None
    return (r.id, r.module, r.state, to_json(r.detail), ts(r.created_at), ts(r.updated_at), r.generation)


_ROLLOUTS = Table.of(
    "rollouts",
    RolloutRecord,
    "id, module, state, detail, created_at, updated_at, generation",
    detail=json.loads,
    created_at=dt,
    updated_at=dt,
    generation=int,
)
_STEPS = Table.of(
    "rollout_steps",
    RolloutStepRecord,
    "seq, rollout_id, step, event, at, message, analysis",
    key="seq",
    seq=int,
    step=int,
    at=dt,
    analysis=json.loads,
)
_OLDEST_FIRST = "ORDER BY created_at, id"
