"""A pass reads the fleet's views incrementally (`NodeHub.view_in_turns`: only the nodes a watcher of
the hub's own saw change since the last pass are viewed again). Whatever happens between passes
(registrations, heartbeats with the same report or another, the clock running past missed
heartbeats, drains, deletes here or by another replica, rows another replica wrote, tables
published, health checks), it gives the same views and tables as `NodeHub.view` made from scratch."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.nodeapi import Heartbeat, Registration, Running
from edge.protocol import ModuleEntry
from reconciler.apply import nodes as nodes_module
from reconciler.apply.nodehealth import MISSED_HEARTBEATS
from reconciler.apply.nodes import NodeHub
from reconciler.store.state import open_state_store

T0 = 1_800_000_000.0
BEAT = 2.0
IDS = [f"n{i}" for i in range(6)]
ENTRY = ModuleEntry(module="greeter", version="1.0.0", digest="sha256:" + "0" * 64, weight=100)
RUNNING = (Running(module="greeter", version="1.0.0", digest="sha256:" + "0" * 64, weight=100),)

node = st.sampled_from(IDS)
OPS = st.one_of(
    st.tuples(st.just("register"), node),
    st.tuples(st.just("beat"), node, st.booleans()),
    st.tuples(st.just("advance"), st.floats(min_value=0, max_value=3 * MISSED_HEARTBEATS * BEAT)),
    st.tuples(st.just("drain"), node, st.booleans()),
    st.tuples(st.just("delete"), node),
    st.tuples(st.just("deleted elsewhere"), node),
    st.tuples(st.just("row from elsewhere"), node, st.floats(min_value=-10, max_value=10)),
    st.tuples(st.just("publish"), node, st.booleans()),
    st.tuples(
        st.just("check"),
    ),
)


async def _scenario(ops: list[tuple[tuple[object, ...], bool]], data_dir: Path) -> None:
    """Run `ops`, each followed by a pass when its flag says so, and a pass at the end."""
    store = open_state_store(data_dir=data_dir)
    clock = [T0]
    try:
        hub = NodeHub(store, heartbeat_seconds=BEAT, clock=lambda: clock[0])

        async def a_pass() -> None:
            views, tables = await hub.view_in_turns(clock[0])
            assert views == hub.view(clock[0])
            assert tables == [hub.table(v.id) for v in views]

        for op, then_a_pass in ops:
            kind, *args = op
            known = bool(args) and isinstance(args[0], str) and hub.known(args[0])
            if kind == "register":
                node_id = str(args[0])
                url = f"http://{node_id}:8080"
                await hub.register(Registration(id=node_id, region="r", hostname=node_id, url=url, max_modules=4))
            elif kind == "beat" and known:
                running = RUNNING if args[1] else ()
                await hub.heartbeat(str(args[0]), Heartbeat(generation=0, running=running))
            elif kind == "advance":
                clock[0] += float(args[0])  # type: ignore[arg-type]
            elif kind == "drain" and known:
                await hub.set_draining(str(args[0]), bool(args[1]))
            elif kind == "delete" and known:
                await hub.delete(str(args[0]))
            elif kind == "deleted elsewhere" and known:
                hub.merge((), [str(args[0])])
            elif kind == "row from elsewhere" and known:
                row = store.get_node(str(args[0]))
                assert row is not None
                heard = datetime.fromtimestamp(clock[0] + float(args[1]), UTC)  # type: ignore[arg-type]
                hub.merge([dataclasses.replace(row, last_heartbeat_at=heard, reported={"generation": 0})], ())
            elif kind == "publish" and known:
                await hub.publish(str(args[0]), (ENTRY,) if args[1] else ())
            elif kind == "check":
                hub.check_health()
            if then_a_pass:
                await a_pass()
        await a_pass()
    finally:
        store.close()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(OPS, st.booleans()), max_size=30))
def test_a_pass_views_the_fleet_as_a_view_from_scratch_would(ops: list[tuple[tuple[object, ...], bool]]) -> None:
    saved = nodes_module.VIEWS_A_TURN
    nodes_module.VIEWS_A_TURN = 2  # several turns for a few nodes
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            asyncio.run(_scenario(ops, Path(data_dir)))
    finally:
        nodes_module.VIEWS_A_TURN = saved
