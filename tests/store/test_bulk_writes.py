"""Heartbeats and published tables written in bulk: one transaction for a batch, the same rows as the
same writes one by one, nothing written when it fails, and through a RowBatch a bad row fails only its
caller while the others of its batch are written (reconciler.apply.threadbatch)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.apply.threadbatch import RowBatch
from reconciler.store import nodes as store_nodes
from reconciler.store.records import NodeRecord
from reconciler.store.state import SharedHeartbeat, StateStore, open_state_store

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
UNSERIALISABLE = {"modules": {object()}}  # json.dumps refuses it: the write fails inside the transaction


def nodes(state: StateStore, *ids: str) -> None:
    for node_id in ids:
        state.upsert_node(NodeRecord(id=node_id, region="r0", url=f"http://{node_id}"))


def seen(state: StateStore, node_id: str) -> tuple[object, ...]:
    node = state.get_node(node_id)
    assert node is not None
    return (node.generation, node.assignment, node.reported, node.last_heartbeat_at)


def test_a_bulk_write_leaves_the_rows_the_same_writes_one_by_one_leave(state: StateStore) -> None:
    nodes(state, "one-a", "one-b", "bulk-a", "bulk-b")
    tables = [("a", {"modules": {"m": 1}}), ("b", {"modules": {"m": 2}}), ("a", {"modules": {"m": 3}})]
    beats = [("a", {"running": ["m@1"]}, T0), ("b", {"running": []}, T0 + timedelta(seconds=1))]

    singly = [state.publish_assignment(f"one-{n}", table) for n, table in tables]
    singly.append(state.publish_assignment("ghost", {}))
    in_bulk = state.publish_assignments([*((f"bulk-{n}", table) for n, table in tables), ("ghost", {})])
    assert in_bulk == singly == [1, 1, 2, None]  # a node twice in a batch is bumped twice, as it would be

    heard_singly = [state.record_heartbeat(f"one-{n}", reported, at) for n, reported, at in beats]
    heard_singly.append(state.record_heartbeat("ghost", {}, T0))
    heard_in_bulk = state.record_heartbeats([*((f"bulk-{n}", r, at) for n, r, at in beats), ("ghost", {}, T0)])
    assert heard_in_bulk == heard_singly == [True, True, False]

    for n in ("a", "b"):
        assert seen(state, f"bulk-{n}") == seen(state, f"one-{n}")


def test_shared_heartbeats_in_bulk_leave_what_they_leave_one_by_one_metrics_included(state: StateStore) -> None:
    nodes(state, "one-a", "one-b", "bulk-a", "bulk-b")
    metrics = [{"module": "m", "version": "1.0.0", "requests": 3}]

    def beat(node_id: str, at: datetime, with_metrics: bool) -> SharedHeartbeat:
        return SharedHeartbeat(
            "replica-1", node_id, "r0", {"running": ["m@1.0.0"]}, at, metrics if with_metrics else []
        )

    shape = [("a", T0, True), ("b", T0 + timedelta(seconds=1), False), ("ghost", T0, True)]
    singly = [state.record_shared_heartbeat(beat(f"one-{n}" if n != "ghost" else n, at, m)) for n, at, m in shape]
    in_bulk = state.record_shared_heartbeats([beat(f"bulk-{n}" if n != "ghost" else n, at, m) for n, at, m in shape])
    assert in_bulk == singly == [True, True, False]
    for n in ("a", "b"):
        assert seen(state, f"bulk-{n}")[2:] == seen(state, f"one-{n}")[2:] != ({}, None)
    deltas = state.metric_deltas_since(T0 - timedelta(seconds=1), exclude_replica="another")
    assert sorted(d.node_id for d in deltas) == ["bulk-a", "one-a"]  # a ghost's metrics are not kept
    assert all(d.metrics == metrics for d in deltas)
    with pytest.raises(TypeError):  # all or none
        state.record_shared_heartbeats(
            [beat("bulk-a", T0, True), SharedHeartbeat("r", "bulk-b", "r0", UNSERIALISABLE, T0, [])]
        )
    assert len(state.metric_deltas_since(T0 - timedelta(seconds=1), exclude_replica="another")) == 2


def test_an_empty_bulk_write_writes_nothing(state: StateStore) -> None:
    assert state.publish_assignments([]) == [] and state.record_heartbeats([]) == []


def test_a_bulk_write_that_fails_writes_none_of_its_rows(state: StateStore) -> None:
    nodes(state, "a", "b")
    with pytest.raises(TypeError):
        state.publish_assignments([("a", {"modules": {}}), ("b", UNSERIALISABLE)])
    with pytest.raises(TypeError):
        state.record_heartbeats([("a", {"running": []}, T0), ("b", UNSERIALISABLE, T0)])
    assert seen(state, "a") == seen(state, "b") == (0, {}, {}, None)


async def test_a_bad_row_in_a_batch_fails_only_its_caller_and_the_others_are_written(state: StateStore) -> None:
    nodes(state, "a", "b", "c")
    tables = RowBatch(state.publish_assignments, lambda row: state.publish_assignment(*row))
    answers = await asyncio.gather(
        tables.write(("a", {"modules": {"m": 1}})),
        tables.write(("b", UNSERIALISABLE)),
        tables.write(("c", {"modules": {"m": 3}})),
        tables.write(("ghost", {})),
        return_exceptions=True,
    )
    assert tables.batches == 1  # queued together: one bulk try, then row by row
    assert answers[0] == 1 and isinstance(answers[1], TypeError) and answers[2:] == [1, None]
    assert [seen(state, n)[:2] for n in "abc"] == [(1, {"modules": {"m": 1}}), (0, {}), (1, {"modules": {"m": 3}})]


async def test_rows_queued_together_are_written_in_one_bulk_call(state: StateStore) -> None:
    nodes(state, *(f"n{i}" for i in range(20)))
    bulks: list[int] = []

    def bulk(rows: list[tuple[str, dict[str, object], datetime]]) -> list[bool]:
        bulks.append(len(rows))
        return state.record_heartbeats(rows)

    beats = RowBatch(bulk, lambda row: state.record_heartbeat(*row), limit=8)
    heard = await asyncio.gather(*(beats.write((f"n{i}", {"running": [i]}, T0)) for i in range(20)))
    assert heard == [True] * 20 and bulks == [8, 8, 4]
    assert all(seen(state, f"n{i}")[2:] == ({"running": [i]}, T0) for i in range(20))


def test_bulk_writes_lock_rows_in_node_order_so_replicas_never_deadlock(database_url: str) -> None:
    # Another replica's transaction holds node "a" and is about to take "b". A bulk write of [b, a]
    # must wait for "a" while holding nothing: had it locked "b" first (its batch's order), the two
    # would deadlock, PostgreSQL would abort one, and the batch would fall back to one row at a time.
    import threading
    import time

    import psycopg

    state = open_state_store(database_url=database_url)
    try:
        nodes(state, "a", "b")
        writing = threading.Thread(
            target=state.record_heartbeats, args=([("b", {"running": []}, T0), ("a", {"running": []}, T0)],)
        )
        with psycopg.connect(database_url) as other:
            other.execute("UPDATE nodes SET status = 'Healthy' WHERE id = 'a'")  # holds "a" until commit
            writing.start()
            deadline = time.monotonic() + 30
            while not other.execute(  # the bulk write is now waiting for a row lock
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype IN ('transactionid', 'tuple')"
            ).fetchone()[0]:  # type: ignore[index]
                assert time.monotonic() < deadline, "the bulk write never waited for node a"
                time.sleep(0.01)
            other.execute("SET lock_timeout = '5s'")
            other.execute("UPDATE nodes SET status = 'Healthy' WHERE id = 'b'")  # free: the bulk write holds no b
            other.commit()
        writing.join(30)
        assert not writing.is_alive()
        assert all(state.get_node(n).last_heartbeat_at is not None for n in ("a", "b"))  # type: ignore[union-attr]
    finally:
        state.close()


def test_bulk_writes_in_several_statements_leave_every_row(state: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # A bulk write is one UPDATE ... FROM (VALUES ...) per BULK_ROWS rows: three rows a statement here,
    # so ten nodes take four statements, given out of node order.
    monkeypatch.setattr(store_nodes, "BULK_ROWS", 3)
    ids = [f"n{i:02d}" for i in range(10)]
    nodes(state, *ids)
    tables = [(node_id, {"modules": {"m": i}}) for i, node_id in enumerate(reversed(ids))]
    assert state.publish_assignments([*tables, ("ghost", {})]) == [1] * 10 + [None]
    assert state.publish_assignments(tables[:4]) == [2] * 4
    later = T0 + timedelta(seconds=30)
    beats = [(node_id, {"running": [i]}, T0 + timedelta(seconds=i)) for i, node_id in enumerate(ids)]
    assert state.record_heartbeats([*beats, (ids[0], {"running": ["again"]}, later)]) == [True] * 11
    assert seen(state, ids[0])[2:] == ({"running": ["again"]}, later)  # a node's last heartbeat stays
    for i, node_id in enumerate(ids[1:], 1):
        assert seen(state, node_id) == (
            2 if i >= 6 else 1,
            {"modules": {"m": 9 - i}},
            {"running": [i]},
            T0 + timedelta(seconds=i),
        )

    metrics = [{"module": "m", "version": "1.0.0", "requests": 1}]
    shared = [SharedHeartbeat("replica-1", node_id, "r0", {"running": []}, later, metrics) for node_id in ids]
    ghost = shared[0]._replace(node_id="ghost")
    assert state.record_shared_heartbeats([*shared, shared[0], ghost]) == [True] * 11 + [False]
    deltas = state.metric_deltas_since(T0, exclude_replica="another")
    assert sorted(d.node_id for d in deltas) == sorted([*ids, ids[0]])  # each heartbeat's deltas, a node's two too
