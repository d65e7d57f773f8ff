"""A status of a large fleet is made a slice of nodes a turn (`reconciler.api.control.nodes_json`): the
event loop serves other work between the slices, and the nodes come out as they would in one piece."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge.nodeapi import Heartbeat, Running
from reconciler.api.control import STATUS_NODES_A_TURN, _node_json, nodes_json
from reconciler.store.state import open_state_store
from tests.controller.test_publish_batches import ENTRY, registered


async def test_a_status_of_many_nodes_is_made_over_several_turns_as_it_would_be_in_one(tmp_path: Path) -> None:
    store = open_state_store(data_dir=tmp_path)
    try:
        count = 2 * STATUS_NODES_A_TURN + 1
        hub, ids = await registered(store, count)
        running = (Running(module=ENTRY.module, version=ENTRY.version, digest=ENTRY.digest, weight=100),)
        for node_id in ids[::7]:
            assert await hub.heartbeat(node_id, Heartbeat(generation=0, running=running)) is not None
        await hub.publish(ids[0], (ENTRY,))

        turns = 0
        done = False

        async def count_turns() -> None:
            nonlocal turns
            while not done:
                turns += 1
                await asyncio.sleep(0)

        counter = asyncio.create_task(count_turns())
        await asyncio.sleep(0)
        before = turns
        made = await nodes_json(hub)
        done = True
        await counter
        assert turns - before >= 2  # other work ran between the three slices
        assert made == [_node_json(hub, v) for v in hub.view()]  # what one piece makes
        assert len(made) == count and made[0]["generation"] > 0
        assert {n["id"] for n in made if n["modules"]} == set(ids[::7])
    finally:
        store.close()
