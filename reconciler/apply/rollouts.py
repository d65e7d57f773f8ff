"""The rollout book: the planner's rollout records, kept in the state store.

The planner's `RolloutRecord` is the whole memory of a rollout. The book stores it (as JSON in the
store's `detail`, with the queryable columns beside it), reads every record back on start, and writes
a pass's records with compare-and-set on the store's generation, so two reconcilers never both move
the same rollout and a restarted one continues at the recorded step. Step results and transitions go
to the rollout's step history too, for status and the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter

from reconciler.errors import ReconcilerError
from reconciler.planner import RolloutRecord
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
    return StoredRollout(
        id=record.id,
        module=record.module,
        to_version=record.target.version,
        to_digest=record.target.digest,
        strategy=record.strategy or "",
        state=record.phase.value,
        from_version=record.previous.version if record.previous else None,
        from_digest=record.previous.digest if record.previous else None,
        step=record.step,
        revision=revision,
        message=record.message,
        detail={"record": record_json(record)},
        created_at=_when(record.created_at),
        step_started_at=_when(record.step_started_at),
        generation=generation,
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
        for stored in self.store.list_rollouts():
            raw = stored.detail.get("record")
            if not isinstance(raw, dict):
                continue
            entries[stored.id] = _Entry(record_from_json(raw), stored.generation, stored.revision)
        self._entries = entries

    def records(self) -> tuple[RolloutRecord, ...]:
        return tuple(e.record for e in self._entries.values())

    def get(self, rollout_id: str) -> RolloutRecord | None:
        entry = self._entries.get(rollout_id)
        return entry.record if entry else None

    def revision_of(self, rollout_id: str) -> str | None:
        entry = self._entries.get(rollout_id)
        return entry.revision if entry else None

    def save(self, records: tuple[RolloutRecord, ...], revision: str | None) -> None:
        """Write a pass's new and changed records, and their new history lines, before any action."""
        for record in records:
            entry = self._entries.get(record.id)
            try:
                if entry is None:
                    stored = self.store.create_rollout(to_stored(record, revision, 0))
                    written = set()
                else:
                    stored = self.store.update_rollout(to_stored(record, entry.revision, entry.generation))
                    written = set(entry.record.history)
            except ConflictError as exc:  # StaleRecordError is one
                self.reload()
                raise StaleBookError(str(exc)) from exc
            self._entries[record.id] = _Entry(record, stored.generation, stored.revision)
            for result in (r for r in record.history if r not in written):
                self.store.append_rollout_step(
                    RolloutStepRecord(
                        rollout_id=record.id,
                        step=result.step,
                        event=result.outcome,
                        at=_when(result.at) or datetime.now(UTC),
                        message=f"{result.reason}: {result.message}",
                        analysis={
                            "requests": result.requests,
                            "errorRate": result.error_rate,
                            "p99Ms": result.p99_ms,
                            "region": result.region,
                        },
                    )
                )

    def request(self, rollout_id: str, **changes: Any) -> RolloutRecord:
        """An operator's request on a rollout (held=True, request="rollback"), written at once."""
        entry = self._entries.get(rollout_id)
        if entry is None:
            raise KeyError(rollout_id)
        record = replace(entry.record, **changes)
        self.save((record,), entry.revision)
        return record
