"""Rollout records and their history: one row per rollout, written with compare-and-set on its
generation, and an append-only list of step events per rollout.

Where it sits: the rollout book (reconciler.apply.rollouts) reads every record on start and writes a pass's
records here, so two reconcilers never both advance a step (the loser gets `StaleRecordError`); the
API reads the history. Consumers take the narrow `RolloutStore` Protocol; `SqlRollouts` is its
implementation over a `Database` (`StateStore` offers the same methods too).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, Protocol

from reconciler.store.database import Database
from reconciler.store.errors import ConflictError, StaleRecordError
from reconciler.store.records import RolloutRecord, RolloutStepRecord
from reconciler.store.rows import dt, dt_or_none, marks, to_json, ts, ts_or_none

__all__ = ["RolloutStore", "SqlRollouts"]


class RolloutStore(Protocol):
    """What a consumer of rollout records needs."""

    def create_rollout(self, rollout: RolloutRecord) -> RolloutRecord: ...

    def update_rollout(self, rollout: RolloutRecord) -> RolloutRecord: ...

    def get_rollout(self, rollout_id: str) -> RolloutRecord | None: ...

    def list_rollouts(self, module: str | None = None, states: Iterable[str] | None = None) -> list[RolloutRecord]: ...

    def append_rollout_step(self, step: RolloutStepRecord) -> RolloutStepRecord: ...

    def rollout_steps(self, rollout_id: str, limit: int | None = None) -> list[RolloutStepRecord]: ...


class SqlRollouts:
    """The `rollouts` and `rollout_steps` tables of `db`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create_rollout(self, rollout: RolloutRecord) -> RolloutRecord:
        """Insert a new rollout at generation 1; an existing id raises `ConflictError`."""
        now = self.db.clock()
        created = replace(rollout, created_at=rollout.created_at or now, updated_at=now, generation=1)
        with self.db.tx(write=True) as tx:
            inserted = tx.run(
                f"INSERT INTO rollouts ({_COLUMNS}) VALUES ({marks(_COLUMNS)}) ON CONFLICT DO NOTHING",
                *_rollout_row(created),
            )
        if inserted != 1:
            raise ConflictError(f"rollout {rollout.id!r} already exists")
        return created

    def update_rollout(self, rollout: RolloutRecord) -> RolloutRecord:
        """Write a rollout read at `rollout.generation`; returns it at the next generation.

        Raises `StaleRecordError` when someone else updated it since (compare-and-set), so two reconcilers
        never both advance a step.
        """
        updated = replace(rollout, updated_at=self.db.clock(), generation=rollout.generation + 1)
        row = _rollout_row(updated)
        assignments = ", ".join(f"{column} = ?" for column in _COLUMNS.split(", ")[1:])
        with self.db.tx(write=True) as tx:
            changed = tx.run(
                f"UPDATE rollouts SET {assignments} WHERE id = ? AND generation = ?",
                *row[1:],
                rollout.id,
                rollout.generation,
            )
        if changed != 1:
            raise StaleRecordError("rollout", rollout.id, rollout.generation)
        return updated

    def get_rollout(self, rollout_id: str) -> RolloutRecord | None:
        with self.db.tx(write=False) as tx:
            return _rollout(tx.one(f"SELECT {_COLUMNS} FROM rollouts WHERE id = ?", rollout_id))

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
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self.db.tx(write=False) as tx:
            rows = tx.all(f"SELECT {_COLUMNS} FROM rollouts{where} ORDER BY created_at, id", *params)
        return [r for r in map(_rollout, rows) if r is not None]

    # -- history --------------------------------------------------------------------------------

    def append_rollout_step(self, step: RolloutStepRecord) -> RolloutStepRecord:
        """Add an event to a rollout's history; returns it with its sequence number."""
        with self.db.tx(write=True) as tx:
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
        return replace(step, seq=int(row[0]))

    def rollout_steps(self, rollout_id: str, limit: int | None = None) -> list[RolloutStepRecord]:
        """A rollout's history in order (the last `limit` events when given)."""
        with self.db.tx(write=False) as tx:
            rows = tx.all(
                "SELECT seq, rollout_id, step, event, at, message, analysis FROM rollout_steps "
                "WHERE rollout_id = ? ORDER BY seq DESC",
                rollout_id,
            )
        rows = rows[:limit] if limit is not None else rows
        return [
            RolloutStepRecord(
                seq=int(r[0]),
                rollout_id=r[1],
                step=int(r[2]),
                event=r[3],
                at=dt(r[4]),
                message=r[5],
                analysis=json.loads(r[6]),
            )
            for r in reversed(rows)
        ]


_COLUMNS = (
    "id, module, from_version, from_digest, to_version, to_digest, strategy, state, step, revision, "
    "message, detail, created_at, updated_at, step_started_at, generation"
)


def _rollout_row(r: RolloutRecord) -> tuple[Any, ...]:
    assert r.created_at is not None and r.updated_at is not None
    return (
        r.id,
        r.module,
        r.from_version,
        r.from_digest,
        r.to_version,
        r.to_digest,
        r.strategy,
        r.state,
        r.step,
        r.revision,
        r.message,
        to_json(r.detail),
        ts(r.created_at),
        ts(r.updated_at),
        ts_or_none(r.step_started_at),
        r.generation,
    )


def _rollout(row: Any) -> RolloutRecord | None:
    if row is None:
        return None
    return RolloutRecord(
        id=row[0],
        module=row[1],
        from_version=row[2],
        from_digest=row[3],
        to_version=row[4],
        to_digest=row[5],
        strategy=row[6],
        state=row[7],
        step=int(row[8]),
        revision=row[9],
        message=row[10],
        detail=json.loads(row[11]),
        created_at=dt(row[12]),
        updated_at=dt(row[13]),
        step_started_at=dt_or_none(row[14]),
        generation=int(row[15]),
    )
