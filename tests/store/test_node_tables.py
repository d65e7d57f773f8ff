"""Node tables stored once per content (reconciler.store.nodes): nodes' rows name their table, a
distinct table is one row of `node_tables`, records read together share it, a table no row names is
deleted only after TABLE_KEEP unnamed, a publish's prune never waits for a table another write holds,
and a database of schema 6 moves its copies into named tables. Every test runs on SQLite and on a real
PostgreSQL, but the one of two writers at once (PostgreSQL only: SQLite runs one write at a time)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.store import database as database_module
from reconciler.store import nodes as store_nodes
from reconciler.store.errors import StoreError
from reconciler.store.migrations import LATEST, MIGRATIONS
from reconciler.store.records import JsonObject, NodeRecord
from reconciler.store.rows import content_named, to_json
from reconciler.store.state import StateStore, open_state_store

T0 = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
EMPTY = content_named({})[0]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def table(version: str, weight: int = 100) -> JsonObject:
    return {"modules": [{"module": "greeter", "version": version, "digest": "sha256:" + "0" * 64, "weight": weight}]}


def register(store: StateStore, *ids: str) -> None:
    for node_id in ids:
        store.upsert_node(NodeRecord(id=node_id, region="r0", url=f"http://{node_id}"))


def stored_tables(store: StateStore) -> dict[str, str]:
    return dict(store.database.read(lambda tx: tx.all("SELECT sha, body FROM node_tables")))


def test_nodes_with_the_same_table_share_one_row_and_one_object(state: StateStore, state_url: str) -> None:
    ids = [f"node-{i}" for i in range(6)]
    register(state, *ids)
    green, blue = table("2.0.0", 0), table("1.0.0")
    generations = state.publish_assignments([(i, green if n % 2 else blue) for n, i in enumerate(ids)])
    assert generations == [1] * 6

    named = {content_named(t)[0]: to_json(t) for t in (green, blue, {})}
    assert stored_tables(state) == named  # the registrations' empty table, and each published one once
    rows = state.database.read(lambda tx: tx.all("SELECT id, table_sha FROM nodes ORDER BY id"))
    assert [sha for _, sha in rows] == [content_named(green if n % 2 else blue)[0] for n in range(6)]

    fresh = open_state_store(database_url=state_url)  # another replica: nothing cached
    try:
        read = fresh.get_nodes(ids)
        assert [n.assignment for n in read] == [green if n % 2 else blue for n in range(6)]
        assert read[1].assignment is read[3].assignment is read[5].assignment  # parsed once, shared
        assert fresh.get_node("node-0") == read[0] and fresh.list_nodes("r0") == read
    finally:
        fresh.close()


def test_a_table_no_row_names_is_deleted_only_after_it_went_unnamed_a_while(state_url: str) -> None:
    clock = Clock()
    store = open_state_store(database_url=state_url, clock=clock)
    try:
        with store.database.tx(write=True) as tx:  # stored by migration 8, whenever: long before any cutoff here
            tx.run("UPDATE node_tables SET used_at = ? WHERE sha = ?", "2000-01-01T00:00:00.000000Z", EMPTY)
        register(store, "a", "b")
        old, kept, new = table("1.0.0"), table("1.1.0"), table("2.0.0")
        store.publish_assignments([("a", old), ("b", kept)])
        store.delete_node("b")  # its table stays named by what is kept of the deleted row
        clock.now += timedelta(minutes=5)
        store.publish_assignment("a", new)  # `old` is named by no row from now on
        assert content_named(old)[0] in stored_tables(store)

        clock.now += store_nodes.TABLE_KEEP - timedelta(minutes=6)
        assert store.nodes.prune_tables(clock.now - store_nodes.TABLE_KEEP) == 0  # last named 59 minutes ago
        clock.now += timedelta(minutes=2)
        assert store.nodes.prune_tables(clock.now - store_nodes.TABLE_KEEP) == 1  # never the registrations' empty one
        assert set(stored_tables(store)) == {content_named(t)[0] for t in (kept, new, {})}

        # A publish prunes on its own, TABLE_PRUNE_EVERY apart (the first at T0), once it has committed.
        store.publish_assignment("a", old)  # T0 + 61 min: `new`, unnamed from now on, was named 56 minutes ago
        assert content_named(new)[0] in stored_tables(store)
        clock.now += store_nodes.TABLE_PRUNE_EVERY - timedelta(minutes=1)
        store.publish_assignment("a", old)  # `new` is past TABLE_KEEP, but this publish does not prune
        assert content_named(new)[0] in stored_tables(store)
        clock.now += timedelta(minutes=1)
        store.publish_assignment("a", old)
        assert content_named(new)[0] not in stored_tables(store)
        node = store.get_node("a")
        assert node is not None and node.assignment == old and node.generation == 5
        register(store, "b")  # made again: it takes the deleted row's table back
        again = store.get_node("b")
        assert again is not None and again.assignment == kept
    finally:
        store.close()


def test_a_read_whose_table_went_away_meanwhile_reads_the_rows_again(
    state: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(state, "a")
    state.publish_assignment("a", table("1.0.0"))
    real = store_nodes.SqlNodes._with_tables
    calls: list[int] = []

    def gone_once(self: store_nodes.SqlNodes, tx: Any, rows: list[NodeRecord]) -> list[NodeRecord] | None:
        calls.append(len(rows))
        return None if len(calls) == 1 else real(self, tx, rows)

    monkeypatch.setattr(store_nodes.SqlNodes, "_with_tables", gone_once)
    node = state.get_node("a")
    assert node is not None and node.assignment == table("1.0.0") and calls == [1, 1]

    monkeypatch.setattr(store_nodes.SqlNodes, "_with_tables", lambda self, tx, rows: None)
    with pytest.raises(StoreError, match="naming a table that node_tables does not hold, 3 times"):
        state.get_nodes(["a"])


def test_a_row_naming_a_table_that_is_not_stored_is_an_error_not_an_empty_table(state: StateStore) -> None:
    register(state, "a")
    with state.database.tx(write=True) as tx:
        tx.run("UPDATE nodes SET table_sha = ? WHERE id = ?", "f" * 64, "a")
    with pytest.raises(StoreError, match="naming a table that node_tables does not hold"):
        state.get_node("a")


def test_a_publish_whose_prune_meets_a_write_holding_an_old_table_neither_waits_nor_deletes_it(
    database_url: str,
) -> None:
    """PostgreSQL, two writers. B names an old, unnamed table again and holds its row, then wants a
    node's row; A publishes to that node, its prune due. A's prune skips the table B holds (it does not
    wait for it while B waits for A, nor delete a table B is about to name) and A returns; then B
    takes the node's row and commits. Pruning inside the publish, A waited for B holding the node's row,
    and the database killed one of them for a deadlock."""
    clock = Clock()
    store = open_state_store(database_url=database_url, clock=clock)
    try:
        register(store, "a")
        old, newer = table("1.0.0"), table("3.0.0")
        store.publish_assignment("a", old)
        store.publish_assignment("a", table("2.0.0"))
        clock.now += 2 * store_nodes.TABLE_KEEP  # `old` and 2.0.0's table are past it, 2.0.0's still named
        name, body = content_named(old)
        holding, release = threading.Event(), threading.Event()
        failures: list[BaseException] = []

        def write_b() -> None:  # the store's own writes, a publish's order: the table, then the node's row
            try:
                with store.database.tx(write=True) as tx:
                    store.nodes._put_tables(tx, {name: (body, old)})
                    holding.set()
                    release.wait(60)
                    tx.run("UPDATE nodes SET table_sha = ?, generation = generation + 1 WHERE id = ?", name, "a")
            except BaseException as exc:
                failures.append(exc)

        published: list[list[int | None]] = []
        b = threading.Thread(target=write_b)
        b.start()
        assert holding.wait(30)
        a = threading.Thread(target=lambda: published.append(store.publish_assignments([("a", newer)])))
        a.start()
        a.join(60)
        assert not a.is_alive(), "A's publish waited for the table B holds"
        release.set()
        b.join(60)
        assert not b.is_alive() and failures == [] and published == [[3]]
        assert set(stored_tables(store)) == {name, content_named(newer)[0], EMPTY}  # 2.0.0's went, not `old`
        node = store.get_node("a")
        assert node is not None and node.assignment == old and node.generation == 4  # B's write, last
    finally:
        release.set()
        store.close()


def test_migration_8_names_the_tables_schema_6_kept_in_every_row(
    state_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared, own = table("1.0.0"), table("1.1.0", 50)
    with monkeypatch.context() as older:
        older.setattr(database_module, "MIGRATIONS", MIGRATIONS[:6])
        before = open_state_store(database_url=state_url)
        assert before.schema_version() == 6

        def as_schema_6(tx: Any) -> None:
            for node_id, assignment in (("a", shared), ("b", shared), ("c", own), ("d", {})):
                tx.run(
                    "INSERT INTO nodes (id, region, url, status, max_modules, registered_at, generation, "
                    "assignment, reported) VALUES (?, 'r0', 'http://x', 'Healthy', 10, ?, 3, ?, '{}')",
                    node_id,
                    "2026-12-06T08:00:00.000000Z",
                    # as schema 6 wrote it: not the canonical text (spaces, other key order)
                    '{"modules": [' + ", ".join(_reordered(m) for m in assignment.get("modules", [])) + "]}"
                    if assignment
                    else "{}",
                )
            tx.run(
                "INSERT INTO deleted_node_generations (id, generation, assignment, deleted_at) VALUES (?, 9, ?, ?)",
                "gone",
                to_json(own),
                "2026-12-06T08:00:00.000000Z",
            )

        with before.database.tx(write=True) as tx:
            as_schema_6(tx)
        before.close()

    upgraded = open_state_store(database_url=state_url)
    try:
        assert upgraded.schema_version() == LATEST
        read = {n.id: n.assignment for n in upgraded.list_nodes()}
        assert read == {"a": shared, "b": shared, "c": own, "d": {}}
        assert set(stored_tables(upgraded)) == {content_named(t)[0] for t in (shared, own, {})}
        upgraded.upsert_node(NodeRecord(id="gone", region="r0", url="http://gone"))  # back: takes its table
        back = upgraded.get_node("gone")
        assert back is not None and back.generation == 9 and back.assignment == own
    finally:
        upgraded.close()


def _reordered(entry: JsonObject) -> str:
    return "{" + ", ".join(f'"{k}": {to_json(entry[k])}' for k in reversed(sorted(entry))) + "}"
