"""Thousands of long-polls woken at once (a switch's tables, or rows another replica published) are
answered a slice per event-loop turn (`reconciler.apply.nodes.WAKE_SLICE`): every one is answered,
within a few turns, and the loop turns in between, so a heartbeat waits for a slice, not the burst."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from edge.protocol import ModuleEntry
from reconciler.apply.nodes import WAKE_SLICE, NodeHub
from reconciler.store.records import NodeRecord
from reconciler.store.state import open_state_store

NODES = 5 * WAKE_SLICE + 7


async def test_long_polls_woken_together_are_answered_a_slice_per_turn(tmp_path: Path) -> None:
    store = open_state_store(data_dir=tmp_path)
    try:
        ids = [f"n{i:04d}" for i in range(NODES)]
        for node_id in ids:
            store.upsert_node(NodeRecord(id=node_id, region="us-east", url=f"http://{node_id}"))
        hub = NodeHub(store)
        turn = 0
        answered_in: Counter[int] = Counter()

        async def poll(node_id: str) -> None:
            table = await hub.wait_assignment(node_id, 0, 30)
            assert table is not None and table.generation == 1
            answered_in[turn] += 1

        polls = [asyncio.create_task(poll(node_id)) for node_id in ids]
        await asyncio.sleep(0.05)  # every long-poll waits
        entry = ModuleEntry(module="greeter", version="1.0.0", digest="sha256:" + "0" * 64, weight=100)
        row = entry.model_dump(mode="json", by_alias=True)
        rows = [
            NodeRecord(id=i, region="us-east", url=f"http://{i}", generation=1, assignment={"modules": [row]})
            for i in ids
        ]
        hub.merge(rows, ())  # another replica published a table for every node at once
        while not all(p.done() for p in polls):
            await asyncio.sleep(0)
            turn += 1
            assert turn < 10 * NODES // WAKE_SLICE, "the long-polls were not all answered"
        await asyncio.gather(*polls)
        assert sum(answered_in.values()) == NODES
        assert max(answered_in.values()) <= WAKE_SLICE  # never the whole burst in one turn
        assert len(answered_in) >= NODES // WAKE_SLICE  # but a slice in each of a few turns
        assert turn <= NODES // WAKE_SLICE + 3
    finally:
        store.close()
