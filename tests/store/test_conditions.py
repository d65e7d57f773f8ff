"""The modules' conditions in the state store (issue 23): written in one transaction, replaced and
removed per module, read back by any store on the same database. Runs on SQLite and on PostgreSQL
like the rest of tests/store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.store import database as database_module
from reconciler.store.conditions import ConditionStore, SqlConditions
from reconciler.store.database import Database
from reconciler.store.migrations import LATEST, MIGRATIONS
from reconciler.store.records import JsonObject
from reconciler.store.state import StateStore, open_state_store

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def ready(status: bool, reason: str = "Available", message: str = "serving") -> list[JsonObject]:
    return [{"type": "Ready", "status": status, "reason": reason, "message": message}]


@pytest.fixture
def database(state: StateStore) -> Iterator[Database]:
    """A second `Database` on the migrated schema of `state`, with a fixed clock."""
    db = Database(state.dialect, clock=lambda: T0)
    yield db
    db.close()


def test_conditions_written_are_read_back_with_the_time_they_were_written(database: Database) -> None:
    conditions = SqlConditions(database)
    conditions.write_conditions({"greeter": ready(True), "calc": ready(False, "Progressing", "step 1 of 3")})

    found = conditions.list_conditions()
    assert list(found) == ["calc", "greeter"]
    assert found["greeter"].conditions == ready(True)
    assert found["calc"].conditions == ready(False, "Progressing", "step 1 of 3")
    assert {row.updated_at for row in found.values()} == {T0}
    assert conditions.get_conditions("greeter") == found["greeter"]
    assert conditions.get_conditions("ghost") is None


def test_a_write_replaces_the_modules_it_names_and_removes_those_it_drops(state: StateStore) -> None:
    state.write_conditions({"greeter": ready(True), "calc": ready(True), "wc": ready(True)}, at=T0)
    later = T0 + timedelta(seconds=5)
    state.write_conditions({"greeter": ready(False, "RolledBack", "smoke failed")}, removed=["wc"], at=later)

    found = state.list_conditions()
    assert sorted(found) == ["calc", "greeter"]
    assert found["greeter"].conditions == ready(False, "RolledBack", "smoke failed")
    assert found["greeter"].updated_at == later
    assert found["calc"].updated_at == T0  # not named: untouched
    state.write_conditions({}, removed=["ghost"])  # removing what is not there is no error
    assert sorted(state.list_conditions()) == ["calc", "greeter"]


def test_a_module_both_changed_and_removed_is_kept(state: StateStore) -> None:
    state.write_conditions({"greeter": ready(True)}, removed=["greeter"], at=T0)
    row = state.get_conditions("greeter")
    assert row is not None and row.conditions == ready(True)


def test_a_write_is_one_transaction_all_or_none(state: StateStore) -> None:
    state.write_conditions({"calc": ready(True)}, at=T0)
    broken: list[JsonObject] = [{"type": "Ready", "status": object()}]  # cannot be encoded
    with pytest.raises(TypeError):
        # "a" is written first (module order), then "b" fails: neither stays, nor does "calc" go.
        state.write_conditions({"a": ready(True), "b": broken}, removed=["calc"], at=T0)
    assert sorted(state.list_conditions()) == ["calc"]


def test_another_store_on_the_same_database_reads_what_one_wrote(state: StateStore, state_url: str) -> None:
    other = open_state_store(database_url=state_url)
    try:
        state.write_conditions({"greeter": ready(True)}, at=T0)
        row = other.get_conditions("greeter")
        assert row is not None and row.conditions == ready(True)
    finally:
        other.close()


def test_the_state_store_is_a_condition_store(state: StateStore) -> None:
    as_conditions: ConditionStore = state
    as_conditions.write_conditions({"greeter": ready(True)})
    assert state.conditions.get_conditions("greeter") == state.get_conditions("greeter")


def test_a_database_of_the_previous_schema_gains_the_table_and_keeps_its_rows(
    state_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as older:
        older.setattr(database_module, "MIGRATIONS", MIGRATIONS[:-1])
        before = open_state_store(database_url=state_url)
        before.append_audit("alice", "module.add", "greeter-v1.0.0")
        assert before.schema_version() == LATEST - 1
        before.close()
    upgraded = open_state_store(database_url=state_url)
    try:
        assert upgraded.schema_version() == LATEST
        assert [e.subject for e in upgraded.audit_log()] == ["greeter-v1.0.0"]
        upgraded.write_conditions({"greeter": ready(True)}, at=T0)
        assert list(upgraded.list_conditions()) == ["greeter"]
    finally:
        upgraded.close()
