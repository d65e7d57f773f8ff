"""A healthy node is always given its table: neither a registration whose row was read before a
publish, nor a node deleted and registered again, leaves the control plane believing the node has a
table that the node's long-poll never gets.

Seen in CI on a busy machine: an edge agent registers from both of its loops at start, and the
second registration's row, read in a worker thread before the first pass published the node's table,
was applied after it: the hub took the node back to generation 0, while the controller still held
the published table as the node's and never published it again (`generation 0/0` for good).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.nodeapi import Registration
from edge.protocol import ModuleEntry
from reconciler.apply.controller import Controller
from reconciler.apply.nodes import NodeHub
from reconciler.apply.registry import Registry
from reconciler.spec.loader import load_fleet
from reconciler.store.blobs import open_blob_store
from reconciler.store.records import NodeRecord
from reconciler.store.state import StateStore
from tests.controller.revisions import Revision, Source
from tests.spec.fleets import write_fleet

NODE = Registration(id="edge-1", region="us-east", hostname="edge-1", url="http://127.0.0.1:9")


@pytest.fixture
def plane(tmp_path: Path, store: StateStore) -> tuple[NodeHub, Controller]:
    """A hub and a controller on a fleet of one module (adder, deployed at once on every node)."""
    loaded = load_fleet(write_fleet(tmp_path / "fleet"))
    assert loaded.fleet is not None, [str(p) for p in loaded.problems]
    hub = NodeHub(store, heartbeat_seconds=60)
    registry = Registry(store, open_blob_store(None, tmp_path / "blobs"))
    source = Source(Revision("a" * 40, loaded.fleet))
    return hub, Controller(store=store, registry=registry, source=source, hub=hub)


class StalledRegistration:
    """The hub's registration thread loses the CPU after it read the node's row, until `release()`."""

    def __init__(self, hub: NodeHub, monkeypatch: pytest.MonkeyPatch) -> None:
        self._read = threading.Event()
        self._go = threading.Event()
        register: Callable[[NodeRecord], NodeRecord] = hub._register

        def stalled(record: NodeRecord) -> NodeRecord:
            row = register(record)
            self._read.set()
            self._go.wait(10)
            return row

        monkeypatch.setattr(hub, "_register", stalled)

    async def row_read(self) -> None:
        assert await asyncio.to_thread(self._read.wait, 10)

    def release(self) -> None:
        self._go.set()


async def test_a_registration_read_before_a_publish_does_not_take_the_table_back(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = NodeHub(store)
    await hub.register(NODE)  # the agent's assignment loop
    stall = StalledRegistration(hub, monkeypatch)
    again = asyncio.create_task(hub.register(NODE))  # its heartbeat loop, at the same time
    await stall.row_read()
    entry = ModuleEntry(module="adder", version="1.0.0", digest="sha256:" + "0" * 64, weight=100)
    assert await hub.publish("edge-1", (entry,)) == 1
    stall.release()
    answer = await again
    table = hub.table("edge-1")
    assert table is not None and (table.generation, table.modules) == (1, (entry,))
    assert answer.generation == 1
    assert next(v for v in hub.view() if v.id == "edge-1").generation == 1
    polled = await hub.wait_assignment("edge-1", 0, 0.1)  # the node's long-poll gets it
    assert polled is not None and polled.modules == (entry,)


async def test_both_loops_registering_while_the_first_table_goes_out_still_deliver_it(
    plane: tuple[NodeHub, Controller], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub, controller = plane
    await hub.register(NODE)
    stall = StalledRegistration(hub, monkeypatch)
    again = asyncio.create_task(hub.register(NODE))
    await stall.row_read()
    await controller.reconcile()  # the pass the first registration woke publishes the node's table
    stall.release()
    await again
    await controller.reconcile()  # every later pass: the node is healthy and must have its table
    polled = await hub.wait_assignment("edge-1", 0, 0.1)
    assert polled is not None and [(e.module, e.version) for e in polled.modules] == [("adder", "1.0.0")]


async def test_a_node_deleted_and_started_again_from_nothing_is_given_its_table_again(
    plane: tuple[NodeHub, Controller],
) -> None:
    hub, controller = plane
    await hub.register(NODE)
    await controller.reconcile()
    first = hub.table("edge-1")
    assert first is not None and first.generation == 1 and first.modules
    assert await hub.delete("edge-1")
    await hub.register(NODE)  # a new process under the same id: it applied nothing (generation 0)
    await controller.reconcile()
    polled = await hub.wait_assignment("edge-1", 0, 0.1)
    assert polled is not None and polled.modules == first.modules
