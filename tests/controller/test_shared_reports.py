"""Nodes that report the same modules share the planner's objects for it (`SnapshotBuilder`,
`Planner`): a heartbeat that changes nothing a node runs makes no new entries, and a region of
nodes on one table makes one tuple of entries. At 1,000 nodes the copies were tens of thousands of
objects a pass that the garbage collector's young collections walked on the event loop's time."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from edge.nodeapi import Heartbeat, Running
from reconciler.apply import nodes as nodes_module
from reconciler.apply.noderows import NodeView, view_of
from reconciler.apply.nodes import NodeHub
from reconciler.apply.observe import Seen, SnapshotBuilder
from reconciler.planner import ObservedNode, Planner, Snapshot, plan
from reconciler.planner.planner import Running as Index
from reconciler.planner.planner import node_reports
from reconciler.store.state import StateStore, open_state_store

from ..planner.driver import example
from .test_publish_batches import ENTRY, registered

RUNNING = (("greeter", "1.0.0", "sha256:aa", 100), ("calc", "1.0.0", "sha256:bb", 100))


def view(node_id: str, running: tuple[tuple[str, str, str, int], ...] = RUNNING, beat: float = 1.0) -> NodeView:
    return NodeView(node_id, "us-east", f"http://{node_id}", "Healthy", 10, 1, 1, running, {}, beat, 0.0, 0.0)


def seen(*views: NodeView) -> Seen:
    return Seen(list(views), [None] * len(views), (), ())


def build(builder: SnapshotBuilder, *views: NodeView) -> dict[str, ObservedNode]:
    snapshot = builder.build(example(), (), 10.0, seen(*views))
    return {node.id: node for node in snapshot.nodes}


def test_nodes_reporting_the_same_share_one_tuple_of_entries_and_a_new_report_gets_its_own() -> None:
    builder = SnapshotBuilder()
    nodes = build(builder, view("a"), view("b"), view("c", RUNNING[:1]))
    a, b, c = (nodes[n] for n in "abc")
    assert a.running is b.running
    assert [(e.module, e.version, e.digest, e.weight) for e in a.running] == list(RUNNING)
    assert c.running is not a.running and len(c.running) == 1
    again = build(builder, view("a", beat=2.0), view("b", (*RUNNING[:1], ("calc", "1.1.0", "sha256:cc", 0))))
    assert again["a"] is not a and again["a"].running is a.running  # a new heartbeat, the same report
    assert [e.version for e in again["b"].running] == ["1.0.0", "1.1.0"]


def reports(snapshot: Snapshot) -> Index:
    """What every node runs, derived afresh: what the planner's kept index must equal."""
    index: Index = {}
    for node in snapshot.nodes:
        index.update(node_reports(node)[0])
    return index


def test_a_report_shared_by_nodes_plans_what_the_full_recompute_plans() -> None:
    builder = SnapshotBuilder()
    desired = example()
    views = [view(f"n{i}") for i in range(4)]
    snapshot = builder.build(desired, (), 10.0, seen(*views))
    planner = Planner()
    assert planner.plan(snapshot) == plan(snapshot)
    moved = [view(v.id, RUNNING[:1], beat=2.0) if i % 2 else view(v.id, beat=2.0) for i, v in enumerate(views)]
    snapshot = builder.build(desired, (), 11.0, seen(*moved))
    assert planner.plan(snapshot) == plan(snapshot)  # half the nodes report less, half the same: shared sets differ
    assert planner._running == reports(snapshot)  # the same empty smoke tuple, another report: taken again
    drained = [dataclasses.replace(v, status="Draining") for v in moved]
    snapshot = builder.build(desired, (), 12.0, seen(*drained))
    assert planner.plan(snapshot) == plan(snapshot)  # rows changed, reports did not
    assert planner._running == reports(snapshot)


async def reporting(store: StateStore) -> tuple[NodeHub, list[str]]:
    """A hub with two nodes registered, each of which reported RUNNING in a heartbeat."""
    hub, ids = await registered(store, 2)
    running = tuple(Running(module=m, version=v, digest=d, weight=w) for m, v, d, w in RUNNING)
    for node_id in ids:
        assert await hub.heartbeat(node_id, Heartbeat(generation=0, running=running)) is not None
    return hub, ids


async def test_the_hub_makes_a_heartbeats_view_as_it_comes_and_views_reporting_the_same_share_it(
    tmp_path: Path,
) -> None:
    store = open_state_store(data_dir=tmp_path)
    try:
        hub, ids = await reporting(store)
        made = [hub._views[node_id][1] for node_id in ids]  # made by the heartbeat itself
        a, b = hub.view()
        assert [a, b] == made  # the pass reads the views the heartbeats made
        assert a.running == RUNNING and a.running is b.running
    finally:
        store.close()


def test_reports_no_node_makes_any_longer_are_not_kept() -> None:
    builder, planner = SnapshotBuilder(), Planner()
    desired = example()
    for n in range(20):  # one node reporting something new every time (its module's name, say)
        report = (("greeter", f"1.0.{n}", "sha256:aa", 100),)
        snapshot = builder.build(desired, (), 10.0 + n, seen(view("a", report, beat=n), view("b", beat=n)))
        planner.plan(snapshot)
    assert len(builder._running) == 2 and len(planner._by_running) == 2  # what "a" and "b" report now


async def test_a_publish_gives_the_node_a_view_of_its_new_table_made_from_the_same_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass's publish replaces every row of the fleet (new table, new generation) and not one report:
    the views after it are the views before, with the new generation, not made again from the report
    (a thousand in the turn after a switch). A heartbeat after it makes a view from its own report."""
    store = open_state_store(data_dir=tmp_path)
    try:
        hub, ids = await reporting(store)
        before = {v.id: v for v in hub.view()}
        published = await hub.publish(ids[0], (ENTRY,))  # a change: a new row, a new generation
        assert published is not None and published > before[ids[0]].generation
        made: list[str] = []
        monkeypatch.setattr(nodes_module, "view_of", lambda node, *a: made.append(node.id) or view_of(node, *a))
        after = {v.id: v for v in hub.view()}
        assert made == []  # not one view made again from its report
        assert after[ids[0]].generation == published != before[ids[0]].generation
        assert after[ids[0]] == dataclasses.replace(before[ids[0]], generation=published)
        assert after[ids[0]].running is before[ids[0]].running  # the same report: the same shared tuple
        assert after[ids[1]] is before[ids[1]]  # untouched

        less = (Running(module=RUNNING[0][0], version=RUNNING[0][1], digest=RUNNING[0][2], weight=RUNNING[0][3]),)
        assert await hub.heartbeat(ids[0], Heartbeat(generation=published, running=less)) is not None
        beat = next(v for v in hub.view() if v.id == ids[0])
        assert made == [ids[0]]  # made by the heartbeat, from its report
        assert beat.running == RUNNING[:1] and beat.applied_generation == published
    finally:
        store.close()


async def test_a_pass_reads_a_large_fleets_views_over_several_turns_as_view_gives_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`NodeHub.view_in_turns` (what a pass observes): the views of the nodes that changed since the
    last call, VIEWS_A_TURN nodes a turn, other work between them, the same views and tables as `view`
    in one piece; a node forgotten meanwhile is left out; nothing changed, nothing made again."""
    monkeypatch.setattr(nodes_module, "VIEWS_A_TURN", 4)
    store = open_state_store(data_dir=tmp_path)
    try:
        hub, ids = await registered(store, 10)
        await hub.publish(ids[3], (ENTRY,))
        views, tables = await hub.view_in_turns()
        assert views == hub.view() and tables == [hub.table(v.id) for v in views]
        assert tables[3] is not None and tables[3].generation > 0

        turns: list[int] = []

        async def between() -> None:  # runs on the turns the views leave free
            for turn in range(3):
                turns.append(turn)
                if turn == 0:
                    hub.merge((), [ids[9]])  # forgotten between two slices (another replica deleted it)
                await asyncio.sleep(0)

        await hub.publish_all({node_id: (ENTRY,) for node_id in ids})  # every node's row changes
        other = asyncio.create_task(between())
        views, tables = await hub.view_in_turns()
        await other
        assert turns  # other work ran while the views were made
        assert [v.id for v in views] == sorted(ids[:9])
        assert views == hub.view() and tables == [hub.table(v.id) for v in views]

        again, tables = await hub.view_in_turns()
        assert all(a is v for a, v in zip(again, views, strict=True))  # none made again
        assert tables == [hub.table(v.id) for v in views]
    finally:
        store.close()
