"""The rollout book: the planner's rollout records, kept in the state store.

The planner's `RolloutRecord` is the whole memory of a rollout. The book stores each one once: the
record without its history as JSON in the store's `detail` (with the Git revision that asked for it;
the store's columns only index it), and each line of its history as one of the store's step events,
written in the same transaction as the record. It reads every record back on start, with the last
`HISTORY_LIMIT` events as its history, and writes a pass's records with compare-and-set on the
store's generation, so two reconcilers never both move the same rollout and a restarted one
continues at the recorded step. The step events are also what status shows as a rollout's steps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

from pydantic import TypeAdapter

from reconciler.errors import ReconcilerError
from reconciler.planner import RolloutRecord, StepKind, StepResult
from reconciler.planner.types import HISTORY_LIMIT, Outcome
from reconciler.store.errors import ConflictError
from reconciler.store.records import RolloutRecord as StoredRollout
from reconciler.store.records import RolloutStepRecord
from reconciler.store.rollouts import RolloutStore

_RECORD = TypeAdapter(RolloutRecord)


def record_json(record: RolloutRecord) -> dict[str, Any]:
    data = _RECORD.dump_python(record, mode="json", by_alias=True)
    assert isinstance(data, dict)
    return data


def record_from_json(data: dict[str, Any]) -> RolloutRecord:
    return _RECORD.validate_python(data)


def _when(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch else None


def to_stored(record: RolloutRecord, revision: str | None, generation: int) -> StoredRollout:
    """The store's row of a record: the record without its history (that is the step events), and the
    keys the store filters and orders by."""
    body = record_json(replace(record, history=()))
    del body["history"]
    return StoredRollout(
        id=record.id,
        module=record.module,
        state=record.phase.value,
        detail={"record": body, "revision": revision},
        created_at=_when(record.created_at),
        generation=generation,
    )


def to_step(rollout_id: str, result: StepResult) -> RolloutStepRecord:
    """A line of a record's history as the store's step event (the whole line: `from_step` reads it back)."""
    return RolloutStepRecord(
        rollout_id=rollout_id,
        step=result.step,
        event=result.outcome,
        at=datetime.fromtimestamp(result.at, UTC),
        message=result.message,
        analysis={
            "kind": result.kind.value if result.kind else None,
            "region": result.region,
            "reason": result.reason,
            "requests": result.requests,
            "errorRate": result.error_rate,
            "p99Ms": result.p99_ms,
        },
    )


def from_step(step: RolloutStepRecord) -> StepResult:
    detail = step.analysis
    kind = detail.get("kind")
    return StepResult(
        step=step.step,
        kind=StepKind(kind) if kind else None,
        region=detail.get("region"),
        at=step.at.timestamp(),
        outcome=cast(Outcome, step.event),  # written from a StepResult's outcome
        reason=detail.get("reason", ""),
        message=step.message,
        requests=detail.get("requests", 0),
        error_rate=detail.get("errorRate", 0.0),
        p99_ms=detail.get("p99Ms"),
    )


@dataclass
class _Entry:
    record: RolloutRecord
    generation: int
    revision: str | None


class StaleBookError(ReconcilerError):
    """Another reconciler wrote a rollout since this one read it: reload and plan again."""


class RolloutBook:
    """Every rollout record by id, as last read from or written to the store."""

    def __init__(self, store: RolloutStore) -> None:
        self.store = store
        self._entries: dict[str, _Entry] = {}
        self.reload()

    def reload(self) -> None:
        entries = {}
        for stored, steps in self.store.rollouts_with_steps(HISTORY_LIMIT):
            raw = stored.detail.get("record")
            if not isinstance(raw, dict):
                continue
            record = replace(record_from_json(raw), history=tuple(map(from_step, steps)))
            entries[stored.id] = _Entry(record, stored.generation, stored.detail.get("revision"))
        self._entries = entries

    def records(self) -> tuple[RolloutRecord, ...]:
        return tuple(e.record for e in self._entries.values())

    def get(self, rollout_id: str) -> RolloutRecord | None:
        entry = self._entries.get(rollout_id)
        return entry.record if entry else None

    def revision_of(self, rollout_id: str) -> str | None:
        entry = self._entries.get(rollout_id)
        return entry.revision if entry else None

    def save(
        self, records: tuple[RolloutRecord, ...], revision: str | None, read: tuple[RolloutRecord, ...] | None = None
    ) -> None:
        """Write a pass's new and changed records, each with its new history lines, before any action.
        `read`: the records the pass planned from; StaleBookError, with nothing written, when one of
        those it would write has changed since (an operator's request written meanwhile)."""
        if read is not None:
            planned_from = {r.id: r for r in read}
            for record in records:
                entry = self._entries.get(record.id)
                if entry is not None and entry.record is not planned_from.get(record.id):
                    raise StaleBookError(f"rollout {record.id} changed while the pass planned it")
        for record in records:
            entry = self._entries.get(record.id)
            written = set(entry.record.history) if entry is not None else set()
            steps = [to_step(record.id, r) for r in record.history if r not in written]
            try:
                if entry is None:
                    stored = self.store.create_rollout(to_stored(record, revision, 0), steps)
                else:
                    stored = self.store.update_rollout(to_stored(record, entry.revision, entry.generation), steps)
            except ConflictError as exc:  # StaleRecordError is one
                self.reload()
                raise StaleBookError(str(exc)) from exc
            self._entries[record.id] = _Entry(record, stored.generation, stored.detail["revision"])

    def history(self, rollout_id: str, limit: int) -> list[StepResult]:
        """The last `limit` lines of a rollout's history (the record keeps the last `HISTORY_LIMIT`)."""
        return [from_step(step) for step in self.store.rollout_steps(rollout_id, limit)]

    def request(self, rollout_id: str, **changes: Any) -> RolloutRecord:
        """An operator's request on a rollout (held=True, request="rollback"), written at once."""
        entry = self._entries.get(rollout_id)
        if entry is None:
            raise KeyError(rollout_id)
        record = replace(entry.record, **changes)
        self.save((record,), entry.revision)
        return record
