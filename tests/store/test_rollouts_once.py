"""A rollout is stored once: its record as one JSON document beside the columns queries use, its
history as step events only. The rollout book reads records back whole (history included), writes a
record and its new events in one compare-and-set transaction, and migration 5 moves what schema 4
kept three times into that shape. Runs on SQLite and on PostgreSQL like the rest of tests/store."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from reconciler.apply.rollouts import RolloutBook, StaleBookError, record_json
from reconciler.planner.types import HISTORY_LIMIT, Phase, Release, RolloutRecord, StepKind, StepResult
from reconciler.spec.models import Capabilities, Limits
from reconciler.store import database as database_module
from reconciler.store.migrations import LATEST, MIGRATIONS
from reconciler.store.rows import to_json, ts
from reconciler.store.state import StateStore, open_state_store

EPOCH = 1_767_323_045.25  # 2026-01-02T03:04:05.25Z: a time a datetime holds exactly
OLD = Release("1.0.0", "sha256:" + "a" * 64, Limits(), Capabilities())
NEW = Release("1.1.0", "sha256:" + "b" * 64, Limits(), Capabilities())


def line(step: int, outcome: str = "Passed", *, at: float | None = None, region: str | None = None) -> StepResult:
    return StepResult(
        step=step,
        kind=StepKind.WEIGHT,
        region=region,
        at=EPOCH + step if at is None else at,
        outcome=outcome,  # type: ignore[arg-type]
        reason="AnalysisPassed" if outcome == "Passed" else "ErrorRateTooHigh",
        message=f"step {step}: 0.5% errors",
        requests=100 + step,
        error_rate=0.005,
        p99_ms=12.5 if step % 2 else None,
    )


def canary(
    rollout_id: str = "greeter-1", *, history: tuple[StepResult, ...] = (), created: float = EPOCH
) -> RolloutRecord:
    return RolloutRecord(
        id=rollout_id,
        module=rollout_id.rpartition("-")[0],
        seq=1,
        previous=OLD,
        target=NEW,
        strategy="canary",
        strategy_type=None,
        phase=Phase.PROGRESSING,
        created_at=created,
        step=len(history),
        kind=StepKind.WEIGHT,
        percent=25,
        step_started_at=EPOCH + 100,
        history=history,
        message="step 1",
    )


def test_a_pass_does_not_write_over_a_request_made_while_it_planned(state: StateStore) -> None:
    """A pause lands between the pass's read of the book and its save: the save refuses (the next
    pass plans from the held record), and the stored record keeps the pause."""
    book = RolloutBook(state)
    book.save((canary(history=(line(0),)),), "c0ffee")
    read = book.records()  # what the pass plans from
    book.request("greeter-1", held=True)  # the operator's pause, meanwhile
    planned = replace(read[0], step=2, history=(line(0), line(1)))  # the pass's step, not held
    with pytest.raises(StaleBookError, match="greeter-1 changed while the pass planned it"):
        book.save((planned,), "c0ffee", read)
    stored = RolloutBook(state).get("greeter-1")
    assert stored is not None and stored.held and stored.step == 1
    book.save((replace(planned, held=True),), "c0ffee", book.records())  # planned again from it
    again = RolloutBook(state).get("greeter-1")
    assert again is not None and again.held and again.step == 2


def test_the_book_reads_back_what_it_wrote_history_included(state: StateStore) -> None:
    book = RolloutBook(state)
    first = canary(history=(line(0),))
    book.save((first,), "c0ffee")
    second = replace(first, step=2, history=(line(0), line(1, "Failed", region="eu")))
    book.save((second,), "beef")

    again = RolloutBook(state)
    assert again.records() == (second,)
    assert again.revision_of(first.id) == "c0ffee"  # the revision that started it
    stored = state.get_rollout(first.id)
    assert stored is not None and stored.generation == 2 and stored.state == "Progressing"
    assert "history" not in stored.detail["record"]  # the history is the step events, once
    assert [(s.step, s.event) for s in state.rollout_steps(first.id)] == [(0, "Passed"), (1, "Failed")]
    assert again.history(first.id, 100) == list(second.history)


def test_the_book_keeps_the_last_lines_on_the_record_and_every_line_as_an_event(state: StateStore) -> None:
    book = RolloutBook(state)
    lines = tuple(line(i) for i in range(HISTORY_LIMIT + 3))
    book.save((canary(history=lines[:-3]),), None)
    book.save((canary(history=lines[-HISTORY_LIMIT:]),), None)  # the planner keeps the last HISTORY_LIMIT

    record = RolloutBook(state).get("greeter-1")
    assert record is not None and record.history == lines[-HISTORY_LIMIT:]
    assert book.history("greeter-1", 100) == list(lines)


def test_a_stale_writer_writes_neither_the_record_nor_its_history(state: StateStore) -> None:
    leader, other = RolloutBook(state), RolloutBook(state)
    leader.save((canary(),), None)
    other.reload()
    leader.save((canary(history=(line(0),)),), None)
    with pytest.raises(StaleBookError):
        other.save((canary(history=(line(0, "Failed"),)),), None)
    assert [s.event for s in state.rollout_steps("greeter-1")] == ["Passed"]
    assert other.get("greeter-1") == leader.get("greeter-1")  # reloaded on the conflict


# -- migration 5 ------------------------------------------------------------------------------------


def _write_as_schema_4(state: StateStore, record: RolloutRecord, revision: str | None, rows: list[StepResult]) -> None:
    """What the rollout book wrote up to schema 4: the record (history included) as `detail`, copies of
    its fields in columns, and each history line again as a step row ("reason: message")."""
    with state.database.tx(write=True) as tx:
        tx.run(
            "INSERT INTO rollouts (id, module, from_version, from_digest, to_version, to_digest, strategy, state, "
            "step, revision, message, detail, created_at, updated_at, step_started_at, generation) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            record.id,
            record.module,
            OLD.version,
            OLD.digest,
            NEW.version,
            NEW.digest,
            record.strategy,
            record.phase.value,
            record.step,
            revision,
            record.message,
            to_json({"record": record_json(record)}),
            _ts(record.created_at),
            _ts(record.created_at),
            _ts(record.step_started_at),
            3,
        )
        for r in rows:
            tx.run(
                "INSERT INTO rollout_steps (rollout_id, step, event, at, message, analysis) VALUES (?, ?, ?, ?, ?, ?)",
                record.id,
                r.step,
                r.outcome,
                _ts(r.at),
                f"{r.reason}: {r.message}",
                to_json({"requests": r.requests, "errorRate": r.error_rate, "p99Ms": r.p99_ms, "region": r.region}),
            )


def _ts(epoch: float) -> str:
    return ts(datetime.fromtimestamp(epoch, UTC))


def _columns(state: StateStore, table: str) -> set[str]:
    with state.database.connection() as conn:
        described: Any = conn.execute(f"SELECT * FROM {table} LIMIT 0", ())
        return {column[0] for column in described.description}


def test_migration_5_moves_schema_4_rollouts_into_one_record_and_one_history(
    state_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    long = tuple(line(i) for i in range(HISTORY_LIMIT + 2))
    kept = canary("greeter-1", history=long[-HISTORY_LIMIT:])  # the record kept the last 32, the rows all 34
    crashed = canary("adder-1", history=(line(0), line(1)), created=EPOCH + 1)  # its last row was never written
    plain = canary("calc-1", created=EPOCH + 2)
    with monkeypatch.context() as older:
        older.setattr(database_module, "MIGRATIONS", MIGRATIONS[:4])
        before = open_state_store(database_url=state_url)
        assert before.schema_version() == 4
        _write_as_schema_4(before, kept, "c0ffee", list(long))
        _write_as_schema_4(before, crashed, "beef", [line(0)])
        _write_as_schema_4(before, plain, None, [])
        before.close()

    upgraded = open_state_store(database_url=state_url)
    try:
        assert upgraded.schema_version() == LATEST  # 5, and any migration after it
        assert _columns(upgraded, "rollouts") == {
            "id", "module", "state", "detail", "created_at", "updated_at", "generation"
        }  # fmt: skip
        book = RolloutBook(upgraded)
        assert book.records() == (kept, crashed, plain)  # oldest first, history from the rows
        assert [book.revision_of(r.id) for r in book.records()] == ["c0ffee", "beef", None]
        # Every line; the kinds of the last 32 from the record (schema 4 kept no kind for older ones).
        assert book.history("greeter-1", 100) == [replace(r, kind=None) for r in long[:2]] + list(long[2:])
        assert book.history("adder-1", 100) == [line(0), line(1)]  # the lost line appended
        for stored in upgraded.list_rollouts():
            assert "history" not in stored.detail["record"] and stored.generation == 3
        assert [r.id for r in upgraded.list_rollouts(module="greeter", states=["Progressing"])] == ["greeter-1"]

        # ... and the book carries on from them with compare-and-set.
        book.save((replace(crashed, step=3, history=(line(0), line(1), line(2))),), "ignored")
        assert RolloutBook(upgraded).get("adder-1") == replace(crashed, step=3, history=(line(0), line(1), line(2)))
        assert upgraded.get_rollout("adder-1").generation == 4  # type: ignore[union-attr]
    finally:
        upgraded.close()
