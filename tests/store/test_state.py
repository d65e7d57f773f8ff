"""The state store behaves the same on SQLite and on PostgreSQL: every test here runs on both."""

from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.protocol import MAX_GENERATION
from reconciler.store.dialect import redact
from reconciler.store.errors import (
    BackendError,
    ConflictError,
    ModuleConflictError,
    SchemaTooNewError,
    StaleRecordError,
    StoreConfigError,
)
from reconciler.store.migrations import LATEST
from reconciler.store.nodes import MAX_ROW_GENERATION
from reconciler.store.records import (
    ApprovalRecord,
    BuildInfo,
    ExportRef,
    ImportRef,
    InterfaceRecord,
    ModuleRecord,
    NodeRecord,
    RolloutRecord,
    RolloutStepRecord,
)
from reconciler.store.state import StateStore, connect_state_store, open_state_store

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def module(name: str = "greeter", version: str = "1.0.0", digest: str = "sha256:" + "a" * 64) -> ModuleRecord:
    return ModuleRecord(
        id=f"{name}-v{version}",
        name=name,
        version=version,
        digest=digest,
        size=1000,
        compressed_size=400,
        imports=(ImportRef("wasi_snapshot_preview1", "fd_write", "func"),),
        exports=(ExportRef("add", "func", "(i32, i32) -> (i32)", "numeric"), ExportRef("memory", "memory")),
        wasi_imports=("fd_write",),
        capabilities=("stdio",),
        component=False,
        memory_min_pages=1,
        build=BuildInfo(commit="abc123", timestamp="2026-01-01T00:00:00Z"),
        created_at=T0,
    )


def test_a_module_reads_back_exactly_as_written(state: StateStore) -> None:
    record = module()
    stored, inserted = state.add_module(record)
    assert inserted
    assert stored == record
    assert state.get_module(record.id) == record
    assert state.get_module("nope-v1.0.0") is None


def test_the_same_module_twice_is_one_row_and_not_an_error(state: StateStore) -> None:
    state.add_module(module())
    stored, inserted = state.add_module(replace(module(), created_at=T0 + timedelta(hours=1)))
    assert not inserted
    assert stored.created_at == T0  # the first registration stands
    assert len(state.list_modules()) == 1


def test_the_same_id_with_other_bytes_is_a_conflict(state: StateStore) -> None:
    state.add_module(module())
    with pytest.raises(ModuleConflictError) as caught:
        state.add_module(module(digest="sha256:" + "b" * 64))
    assert "greeter-v1.0.0" in str(caught.value) and "b" * 64 in str(caught.value)
    assert state.get_module("greeter-v1.0.0").digest == "sha256:" + "a" * 64  # type: ignore[union-attr]


def test_modules_list_by_name_and_digest_and_delete(state: StateStore) -> None:
    state.add_module(module("greeter", "1.0.0"))
    state.add_module(replace(module("greeter", "1.1.0", "sha256:" + "b" * 64), created_at=T0 + timedelta(1)))
    state.add_module(module("adder", "0.1.0"))
    assert [m.id for m in state.list_modules()] == ["adder-v0.1.0", "greeter-v1.0.0", "greeter-v1.1.0"]
    assert [m.id for m in state.list_modules("greeter")] == ["greeter-v1.0.0", "greeter-v1.1.0"]
    assert [m.id for m in state.modules_with_digest("sha256:" + "a" * 64)] == ["adder-v0.1.0", "greeter-v1.0.0"]
    assert state.delete_module("greeter-v1.0.0")
    assert not state.delete_module("greeter-v1.0.0")
    assert [m.id for m in state.list_modules("greeter")] == ["greeter-v1.1.0"]


def test_nodes_register_heartbeat_and_take_assignments(state: StateStore) -> None:
    node = state.upsert_node(NodeRecord(id="edge-1", region="us-east", url="http://127.0.0.1:9001"))
    assert node.generation == 0 and node.status == "Healthy" and node.registered_at is not None
    assert state.publish_assignment("edge-1", {"modules": {"greeter": [{"version": "1.0.0", "weight": 100}]}}) == 1
    assert state.publish_assignment("edge-1", {"modules": {}}) == 2
    assert state.publish_assignment("ghost", {}) is None
    assert state.record_heartbeat("edge-1", {"running": ["greeter@1.0.0"]}, at=T0)
    assert not state.record_heartbeat("ghost", {})
    # Registering again updates the address but keeps generation, assignment and report.
    state.upsert_node(NodeRecord(id="edge-1", region="us-east", url="http://127.0.0.1:9002", max_modules=5))
    again = state.get_node("edge-1")
    assert again is not None
    assert (again.url, again.max_modules, again.generation) == ("http://127.0.0.1:9002", 5, 2)
    assert again.assignment == {"modules": {}}
    assert again.reported == {"running": ["greeter@1.0.0"]}
    assert again.last_heartbeat_at == T0
    assert state.set_node_status("edge-1", "Unhealthy")
    state.upsert_node(NodeRecord(id="edge-2", region="eu-central", url="http://127.0.0.1:9003"))
    assert [n.id for n in state.list_nodes()] == ["edge-1", "edge-2"]
    assert [n.status for n in state.list_nodes("us-east")] == ["Unhealthy"]
    assert state.delete_node("edge-2") and state.get_node("edge-2") is None


def test_a_node_ahead_of_its_row_numbers_the_row_on_past_it(state: StateStore) -> None:
    """A store restored from a backup has the node's row behind what the node applied: registering
    again numbers the row past the node's generation, with the row's table, so the node takes that
    table as a newer one (a node pinned to the control plane's key takes nothing older)."""
    state.upsert_node(NodeRecord(id="edge-1", region="us-east", url="http://127.0.0.1:9001"))
    state.publish_assignment("edge-1", {"modules": []})
    assert state.upsert_node(NodeRecord(id="edge-1", region="us-east", url="http://x", generation=1)).generation == 1
    ahead = state.upsert_node(NodeRecord(id="edge-1", region="us-east", url="http://x", generation=9))
    assert (ahead.generation, ahead.assignment) == (10, {"modules": []})
    assert state.publish_assignment("edge-1", {"modules": []}) == 11
    new = state.upsert_node(NodeRecord(id="edge-2", region="us-east", url="http://y", generation=4))
    assert new.generation == 4  # a new row numbers on from what the node applied, as before


def test_a_registration_at_the_wire_bound_leaves_room_to_publish(state: StateStore) -> None:
    """A node token holder may register with any generation a node takes, up to MAX_GENERATION. Its
    row starts, or is renumbered, at MAX_ROW_GENERATION at most, so the tables published after it
    are still numbered within what a node takes; a row already past that is never numbered back."""
    new = state.upsert_node(NodeRecord(id="edge-1", region="us-east", url="http://x", generation=MAX_GENERATION))
    assert new.generation == MAX_ROW_GENERATION
    assert state.publish_assignment("edge-1", {"modules": []}) == MAX_ROW_GENERATION + 1
    state.upsert_node(NodeRecord(id="edge-2", region="us-east", url="http://y"))
    ahead = state.upsert_node(NodeRecord(id="edge-2", region="us-east", url="http://y", generation=MAX_GENERATION))
    assert ahead.generation == MAX_ROW_GENERATION
    assert state.publish_assignment("edge-2", {"modules": []}) == MAX_ROW_GENERATION + 1
    again = state.upsert_node(NodeRecord(id="edge-2", region="us-east", url="http://y", generation=MAX_GENERATION))
    assert again.generation == MAX_ROW_GENERATION + 1  # not numbered back under the table it holds


def test_a_deleted_node_registering_again_numbers_on_from_its_deleted_row(state: StateStore) -> None:
    """A node deleted once its row was past MAX_ROW_GENERATION may have applied a table numbered that
    high: the row made when it registers again starts at the deleted row's generation, with its table,
    whatever the registration claims, and the next table is past it. Only the row made takes it over,
    once; a node never deleted, or one deleted at a low generation, starts where its registration says."""
    state.upsert_node(NodeRecord(id="edge-1", region="us-east", url="http://x", generation=MAX_GENERATION))
    for n in range(3):
        applied = state.publish_assignment("edge-1", {"modules": [{"module": "m", "n": n}]})
    assert applied == MAX_ROW_GENERATION + 3
    assert state.delete_node("edge-1") and not state.delete_node("edge-1")
    assert state.get_node("edge-1") is None

    for claim in (applied, 0):  # what the node applied, or nothing (its cache was wiped): the same row
        again = state.upsert_node(NodeRecord(id="edge-1", region="us-east", url="http://x", generation=claim))
        assert again.generation == applied, claim
        if claim:  # with its table: under that number, the node is only ever given one table
            assert again.assignment == {"modules": [{"module": "m", "n": 2}]}
        else:
            assert again.assignment == {"modules": []}  # what the last round published
        assert state.publish_assignment("edge-1", {"modules": []}) == applied + 1
        assert state.delete_node("edge-1")
        applied += 1

    low = state.upsert_node(NodeRecord(id="edge-2", region="us-east", url="http://y", generation=5))
    assert state.delete_node("edge-2")
    assert state.upsert_node(NodeRecord(id="edge-2", region="us-east", url="http://y", generation=9)).generation == 9
    assert state.delete_node("edge-2")
    assert low.generation == 5
    # Kept once: the row made takes the numbering over, and a row deleted again keeps its own.
    state.upsert_node(NodeRecord(id="edge-2", region="us-east", url="http://y", generation=2))
    state.upsert_node(NodeRecord(id="edge-2", region="us-east", url="http://y", generation=2))
    assert state.get_node("edge-2").generation == 9  # type: ignore[union-attr]


def rollout(rollout_id: str = "greeter-1") -> RolloutRecord:
    return RolloutRecord(
        id=rollout_id,
        module="greeter",
        state="Pending",
        detail={"from": "1.0.0", "to": "1.1.0", "strategy": "canary", "revision": "c0ffee", "steps": [10, 25, 50, 100]},
    )


def test_a_rollout_advances_by_compare_and_set(state: StateStore) -> None:
    created = state.create_rollout(rollout())
    assert created.generation == 1
    with pytest.raises(ConflictError):
        state.create_rollout(rollout())
    advanced = state.update_rollout(replace(created, state="Progressing", detail={**created.detail, "step": 1}))
    assert advanced.generation == 2
    with pytest.raises(StaleRecordError):  # a second reconciler still holding generation 1 loses
        state.update_rollout(replace(created, state="RolledBack"))
    assert state.get_rollout("greeter-1") == advanced
    assert state.get_rollout("nope") is None


def test_rollouts_filter_by_module_and_state(state: StateStore) -> None:
    state.create_rollout(replace(rollout("greeter-1"), created_at=T0))
    second = state.create_rollout(replace(rollout("greeter-2"), created_at=T0 + timedelta(days=1)))
    state.update_rollout(replace(second, state="Progressing"))
    state.create_rollout(replace(rollout("adder-1"), module="adder", created_at=T0 + timedelta(days=2)))
    assert [r.id for r in state.list_rollouts()] == ["greeter-1", "greeter-2", "adder-1"]
    assert [r.id for r in state.list_rollouts(module="greeter")] == ["greeter-1", "greeter-2"]
    assert [r.id for r in state.list_rollouts(states=["Progressing", "Paused"])] == ["greeter-2"]
    assert state.list_rollouts(states=[]) == []


def test_rollout_history_is_kept_in_order(state: StateStore) -> None:
    state.create_rollout(rollout())
    for index, event in enumerate(["Started", "Passed", "Failed"]):
        step = state.append_rollout_step(
            RolloutStepRecord(rollout_id="greeter-1", step=index, event=event, at=T0, analysis={"errorRate": 0.1})
        )
        assert step.seq > 0
    history = state.rollout_steps("greeter-1")
    assert [s.event for s in history] == ["Started", "Passed", "Failed"]
    assert history[0].analysis == {"errorRate": 0.1} and history[0].at == T0
    assert [s.event for s in state.rollout_steps("greeter-1", limit=2)] == ["Passed", "Failed"]


def test_revisions_seen_then_applied(state: StateStore) -> None:
    assert state.last_seen_revision() is None and state.last_applied_revision() is None
    state.record_revision_seen("aaa", verified=True, at=T0)
    state.record_revision_seen("bbb", verified=False, message="unsigned commit bbb", at=T0 + timedelta(seconds=1))
    assert state.mark_revision_applied("aaa", at=T0 + timedelta(seconds=2))
    assert not state.mark_revision_applied("zzz")
    seen = state.last_seen_revision()
    assert seen is not None and (seen.sha, seen.verified, seen.message) == ("bbb", False, "unsigned commit bbb")
    applied = state.last_applied_revision()
    assert applied is not None and applied.sha == "aaa" and applied.applied_at == T0 + timedelta(seconds=2)
    # Seeing a revision again updates the verdict and keeps the first sighting.
    again = state.record_revision_seen("bbb", verified=True, at=T0 + timedelta(hours=1))
    assert again.verified and again.seen_at == T0 + timedelta(seconds=1)
    assert state.get_revision("nope") is None


def test_approvals_are_recorded_once_per_commit_and_principal(state: StateStore) -> None:
    approval = ApprovalRecord(
        commit="c1", module="greeter", version="1.1.0", principal="alice", roles=("admin",), kind="commit", found_at=T0
    )
    assert state.record_approval(approval)
    assert not state.record_approval(approval)
    assert state.record_approval(replace(approval, commit="c2", principal="bob", roles=("admin", "developer")))
    found = state.approvals_for("greeter", "1.1.0")
    assert [(a.commit, a.principal, a.roles) for a in found] == [
        ("c1", "alice", ("admin",)),
        ("c2", "bob", ("admin", "developer")),
    ]
    assert state.approvals_for("greeter", "9.9.9") == []


def test_interfaces_are_replaced_in_place(state: StateStore) -> None:
    interface = InterfaceRecord(
        id="example:greeter@1.0.0",
        name="greeter",
        package="example:greeter",
        version="1.0.0",
        wasi="preview2",
        wit="package example:greeter@1.0.0;",
        digest="sha256:" + "c" * 64,
        created_at=T0,
    )
    assert state.put_interface(interface) == interface
    updated = state.put_interface(replace(interface, status="deprecated", created_at=None))
    assert updated.status == "deprecated" and updated.created_at == T0
    assert [i.id for i in state.list_interfaces()] == ["example:greeter@1.0.0"]
    assert state.list_interfaces("other") == []
    assert state.get_interface("example:greeter@1.0.0") == updated


def test_the_audit_log_only_grows(state: StateStore) -> None:
    first = state.append_audit("alice", "module.register", "greeter-v1.0.0", {"digest": "sha256:aa"}, at=T0)
    second = state.append_audit("reconciler", "rollout.step", "greeter-1")
    third = state.append_audit("bob", "module.delete", "greeter-v1.0.0")
    assert first.seq < second.seq < third.seq
    assert [e.action for e in state.audit_log()] == ["module.register", "rollout.step", "module.delete"]
    assert [e.actor for e in state.audit_log(subject="greeter-v1.0.0")] == ["alice", "bob"]
    assert [e.seq for e in state.audit_log(after=first.seq, limit=1)] == [second.seq]
    assert state.audit_log()[0].detail == {"digest": "sha256:aa"} and state.audit_log()[0].at == T0
    # Not even SQL written by hand can change or remove a line.
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"), state._tx(write=True) as tx:
            tx.run(statement)
    assert [e.actor for e in state.audit_log()] == ["alice", "reconciler", "bob"]


def test_one_replica_at_a_time_holds_a_lease(state: StateStore, state_url: str) -> None:
    other = open_state_store(database_url=state_url)
    lease = state.try_lease("reconciler")
    assert lease is not None and lease.held()
    assert other.try_lease("reconciler") is None
    unrelated = other.try_lease("something else")
    assert unrelated is not None
    lease.release()
    lease.release()  # idempotent
    assert not lease.held()
    taken = other.try_lease("reconciler")
    assert taken is not None and taken.held()
    taken.release()
    unrelated.release()
    other.close()


def _hold_lease_and_die(url: str, held: Any) -> None:
    lease = connect_state_store(database_url=url).try_lease("reconciler")
    held.put(lease is not None)
    held.close()
    held.join_thread()  # the answer is sent before the process dies
    os._exit(0)  # no release: the lease must die with the process


def test_a_lease_dies_with_its_process(state: StateStore, state_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    held = context.Queue()
    child = context.Process(target=_hold_lease_and_die, args=(state_url, held))
    child.start()
    assert held.get(timeout=60)
    child.join(timeout=60)
    deadline = time.monotonic() + 30
    lease = state.try_lease("reconciler")
    while lease is None and time.monotonic() < deadline:  # the server notices the closed connection
        time.sleep(0.05)
        lease = state.try_lease("reconciler")
    assert lease is not None
    lease.release()


def test_migrations_run_once_and_reopening_applies_nothing(state_url: str) -> None:
    first = open_state_store(database_url=state_url)
    assert first.schema_version() == LATEST
    assert first.migrate() == []
    second = open_state_store(database_url=state_url)
    assert second.migrate() == []
    first.add_module(module())
    assert second.get_module("greeter-v1.0.0") is not None
    first.close()
    second.close()


def _migrate_in_child(url: str, start: Any, results: Any) -> None:
    store = connect_state_store(database_url=url)
    start.wait()
    results.put(store.migrate())
    store.close()


def test_migrations_from_two_processes_at_once_apply_each_version_once(state_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    results = context.Queue()
    children = [context.Process(target=_migrate_in_child, args=(state_url, start, results)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
        assert child.exitcode == 0
    applied = sorted([results.get(timeout=5), results.get(timeout=5)])
    assert applied == [[], list(range(1, LATEST + 1))]
    store = open_state_store(database_url=state_url)
    assert store.schema_version() == LATEST
    store.close()


def test_a_database_from_a_newer_hotswap_is_refused(state: StateStore, state_url: str) -> None:
    with state._tx(write=True) as tx:
        tx.run("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)", 999, "future", "x")
    with pytest.raises(SchemaTooNewError, match="999"):
        open_state_store(database_url=state_url)


def test_bad_configuration_is_named() -> None:
    with pytest.raises(StoreConfigError, match="--database-url"):
        open_state_store(database_url="mysql://x")
    with pytest.raises(StoreConfigError, match="--data-dir"):
        open_state_store()
    assert redact("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


def test_an_unreachable_or_unusable_database_is_a_backend_error(tmp_path: Path) -> None:
    from tests.services import free_port

    with pytest.raises(BackendError, match=r"postgresql://nobody@127\.0\.0\.1"):
        open_state_store(database_url=f"postgresql://nobody@127.0.0.1:{free_port()}/db?connect_timeout=5")
    (tmp_path / "state.db").mkdir()  # a directory where the file should be
    with pytest.raises(BackendError, match="sqlite:"):
        open_state_store(data_dir=tmp_path)


def test_data_dir_holds_an_embedded_database(tmp_path: Path) -> None:
    store = open_state_store(data_dir=tmp_path / "data")
    store.add_module(module())
    store.close()
    assert (tmp_path / "data" / "state.db").exists()
    assert open_state_store(data_dir=tmp_path / "data").get_module("greeter-v1.0.0") is not None
