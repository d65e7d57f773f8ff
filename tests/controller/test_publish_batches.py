"""A pass's tables go to the store in one write (`NodeHub.table_writes`, up to `TABLE_BATCH_LIMIT`), not
in turns of 256: each turn waited behind the answers and heartbeats the one before had woken, which
doubled the `apply` step of a 1,000-node switch (bench/RESULTS.md, 2026-12-05 morning)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from edge.nodeapi import Registration
from edge.protocol import ModuleEntry
from reconciler.apply import nodes as nodes_module
from reconciler.apply.nodes import TABLE_BATCH_LIMIT, WAKE_SLICE_MIN, WAKE_TURNS, NodeHub
from reconciler.apply.threadbatch import BATCH_LIMIT, RowBatch
from reconciler.store.state import StateStore, open_state_store

NODES = 600  # more than a heartbeat batch holds


ENTRY = ModuleEntry(module="greeter", version="1.0.0", digest="sha256:" + "0" * 64, weight=100)


async def registered(store: StateStore, nodes: int = NODES) -> tuple[NodeHub, list[str]]:
    """A hub over `store` with `nodes` nodes registered (region "r"), and their ids."""
    hub = NodeHub(store, heartbeat_seconds=5.0)
    ids = [f"n{i}" for i in range(nodes)]
    for node_id in ids:
        await hub.register(Registration(id=node_id, region="r", hostname=node_id, url=f"http://{node_id}:8080"))
    return hub, ids


async def test_a_fleets_tables_published_together_are_one_write(tmp_path: Path) -> None:
    assert NODES > BATCH_LIMIT and TABLE_BATCH_LIMIT >= 5000  # a 5,000-node pass is one write too
    store = open_state_store(data_dir=tmp_path)
    try:
        hub, ids = await registered(store)
        before = hub.table_writes.batches
        generations = await asyncio.gather(*(hub.publish(node_id, (ENTRY,)) for node_id in ids))
        assert hub.table_writes.batches == before + 1
        assert all(g is not None and g > 0 for g in generations)
        assert {store.get_node(node_id).generation for node_id in ids} == set(generations)  # type: ignore[union-attr]
    finally:
        store.close()


async def test_a_pass_wakes_the_long_polls_of_its_tables_once_it_has_run(tmp_path: Path) -> None:
    """Within `wakes_held` (a reconcile pass), a published table does not wake its node's long-poll; the
    block's end does, every one of them. A registration's wake is not held."""
    store = open_state_store(data_dir=tmp_path)
    try:
        hub = NodeHub(store, heartbeat_seconds=5.0)
        for node_id in ("a", "b"):
            await hub.register(Registration(id=node_id, region="r", hostname=node_id, url=f"http://{node_id}:8080"))
        polls = {n: asyncio.create_task(hub.wait_assignment(n, 0, 30)) for n in ("a", "b")}
        with hub.wakes_held():
            assert await hub.publish("a", (ENTRY,)) == 1
            with hub.wakes_held():  # nested: the outer block decides
                assert await hub.publish("b", (ENTRY,)) == 1
            for _ in range(5):  # turns of the loop: a woken poll answers within two
                await asyncio.sleep(0)
            assert not any(p.done() for p in polls.values()), "a poll was answered before the pass ended"
        tables = await asyncio.gather(*polls.values())
        assert [t.generation if t is not None else None for t in tables] == [1, 1]
    finally:
        store.close()


async def test_a_fleets_answers_go_out_over_a_few_turns_of_the_loop(tmp_path: Path) -> None:
    """At the end of `wakes_held`, WAKE_SLICE_MIN long-polls (or 1/WAKE_TURNS of them, if more) are woken
    at once and the rest on the loop's next turns: no turn writes a whole fleet's answers, and every node
    is answered within WAKE_TURNS turns."""
    store = open_state_store(data_dir=tmp_path)
    try:
        hub, ids = await registered(store)
        polls = [asyncio.create_task(hub.wait_assignment(node_id, 0, 30)) for node_id in ids]
        await asyncio.sleep(0)  # every poll waiting
        with hub.wakes_held():
            await asyncio.gather(*(hub.publish(node_id, (ENTRY,)) for node_id in ids))
        answered = []
        for _ in range(WAKE_TURNS + 2):
            await asyncio.sleep(0)
            answered.append(sum(p.done() for p in polls))
        assert WAKE_SLICE_MIN < NODES <= WAKE_SLICE_MIN * WAKE_TURNS
        assert answered[0] == WAKE_SLICE_MIN, answered  # one turn: one slice of answers
        assert answered[-1] == NODES, answered  # and every one within a few turns
        assert [t.generation for t in await asyncio.gather(*polls) if t is not None] == [1] * NODES
    finally:
        store.close()


async def test_a_pass_publishes_a_fleet_in_one_write_and_takes_it_a_slice_a_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`NodeHub.publish_all` (a pass's `apply`): one write, then the hub's part PUBLISH_SLICE nodes a turn
    of the event loop, with other work running between slices (a publish from a task a node each woke
    thousands of tasks in one turn). It answers the table each node holds; the same table again is
    no write; a node with no row is left out."""
    monkeypatch.setattr(nodes_module, "PUBLISH_SLICE", 100)
    store = open_state_store(data_dir=tmp_path)
    try:
        hub, ids = await registered(store)
        done: list[int] = []  # how many nodes hold the new table, each time the other work ran
        published = asyncio.Event()

        async def other_work() -> None:
            while not published.is_set():
                done.append(len([n for n in ids if (table := hub.table(n)) is not None and table.generation == 1]))
                await asyncio.sleep(0)

        watcher = asyncio.create_task(other_work())
        await asyncio.sleep(0)
        before = hub.table_writes.batches
        held = await hub.publish_all({**{n: (ENTRY,) for n in ids}, "never-registered": (ENTRY,)})
        published.set()
        await watcher
        assert hub.table_writes.batches == before + 1
        assert held == {n: hub.table(n) for n in ids} and {t.generation for t in held.values()} == {1}
        assert {store.get_node(n).generation for n in ids} == {1}  # type: ignore[union-attr]
        slices = sorted({d for d in done if 0 < d < NODES})
        assert slices == list(range(100, NODES, 100)), done  # seen between every slice, never within one

        again = await hub.publish_all({n: (ENTRY,) for n in ids})
        assert hub.table_writes.batches == before + 1 and again == held
    finally:
        store.close()


async def test_a_failed_write_in_a_pass_is_raised_once_the_others_are_published(tmp_path: Path) -> None:
    store = open_state_store(data_dir=tmp_path)
    try:
        hub, ids = await registered(store, 3)
        real = store.publish_assignments
        bad = ids[1]

        def publish_assignments(rows: list[tuple[str, dict[str, Any]]]) -> list[int | None]:
            if any(node_id == bad for node_id, _ in rows):
                raise OSError("the store said no")  # the batch, then each row on its own
            return real(rows)

        original = store.publish_assignment

        def publish_assignment(node_id: str, assignment: dict[str, Any]) -> int | None:
            if node_id == bad:
                raise OSError(f"the store said no to {node_id}")
            return original(node_id, assignment)

        hub.table_writes = RowBatch(publish_assignments, lambda row: publish_assignment(*row), limit=TABLE_BATCH_LIMIT)
        with pytest.raises(OSError, match="no to n1"):
            await hub.publish_all({n: (ENTRY,) for n in ids})
        assert [hub.table(n).generation for n in ids] == [1, 0, 1]  # type: ignore[union-attr]
    finally:
        store.close()
