"""The aggregate stores work on their own over one `Database`, and a `StateStore` is the composition of
them: it satisfies every narrow Protocol and sees what each aggregate wrote. Runs on SQLite and on
PostgreSQL like the rest of tests/store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from reconciler.store.audit import AuditLog, SqlAudit
from reconciler.store.database import Database
from reconciler.store.interfaces import InterfaceStore
from reconciler.store.modules import ModuleStore, SqlModules
from reconciler.store.nodes import NodeStore, SqlNodes
from reconciler.store.records import NodeRecord, RolloutRecord
from reconciler.store.revisions import RevisionStore, SqlRevisions
from reconciler.store.rollouts import RolloutStore, SqlRollouts
from reconciler.store.state import StateStore
from tests.store.test_state import module

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


@pytest.fixture
def database(state: StateStore) -> Iterator[Database]:
    """A second `Database` on the migrated schema of `state`, with a fixed clock."""
    db = Database(state.dialect, clock=lambda: T0)
    yield db
    db.close()


def test_each_aggregate_works_over_a_bare_database(database: Database) -> None:
    modules, nodes, rollouts = SqlModules(database), SqlNodes(database), SqlRollouts(database)
    revisions, audit = SqlRevisions(database), SqlAudit(database)

    assert modules.add_module(module())[1] is True
    assert nodes.upsert_node(NodeRecord(id="n1", region="us-east", url="http://n1")).registered_at == T0
    rollout = RolloutRecord(id="r1", module="g", state="P", detail={"to": "1.0.0"})
    assert rollouts.create_rollout(rollout).generation == 1
    assert revisions.record_revision_seen("abc", verified=True).seen_at == T0
    assert audit.append_audit("alice", "module.add", "greeter-v1.0.0").at == T0
    assert database.schema_version() > 0


def test_the_state_store_sees_what_the_aggregates_wrote(state: StateStore, database: Database) -> None:
    SqlNodes(database).upsert_node(NodeRecord(id="n1", region="us-east", url="http://n1"))
    SqlAudit(database).append_audit("alice", "node.add", "n1")

    assert [n.id for n in state.list_nodes()] == ["n1"]
    assert [e.subject for e in state.audit_log()] == ["n1"]
    assert state.nodes.get_node("n1") == state.get_node("n1")


def test_a_state_store_is_every_narrow_store(state: StateStore) -> None:
    as_modules: ModuleStore = state
    as_interfaces: InterfaceStore = state
    as_nodes: NodeStore = state
    as_rollouts: RolloutStore = state
    as_revisions: RevisionStore = state
    as_audit: AuditLog = state
    # ... and so is each of its parts (mypy checks these assignments; the calls check the wiring)
    parts: tuple[ModuleStore, InterfaceStore, NodeStore, RolloutStore, RevisionStore, AuditLog] = (
        state.modules,
        state.interfaces,
        state.nodes,
        state.rollouts,
        state.revisions,
        state.audit,
    )
    assert as_modules.list_modules() == parts[0].list_modules() == []
    assert as_interfaces.list_interfaces() == parts[1].list_interfaces() == []
    assert as_nodes.list_nodes() == parts[2].list_nodes() == []
    assert as_rollouts.list_rollouts() == parts[3].list_rollouts() == []
    assert as_revisions.last_applied_revision() is None and parts[4].last_seen_revision() is None
    assert as_audit.audit_log() == parts[5].audit_log() == []
