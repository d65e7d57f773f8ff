"""A healthy node is always given its table: a node deleted and registered again does not leave the
control plane believing the node has a table that the node's long-poll never gets."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.nodeapi import Registration
from reconciler.approvals import Approval
from reconciler.controller import Controller
from reconciler.nodes import NodeHub
from reconciler.registry import Registry
from reconciler.spec.fleet import DesiredFleet
from reconciler.spec.loader import load_fleet
from reconciler.store.blobs import open_blob_store
from reconciler.store.state import StateStore, open_state_store
from tests.spec.fleets import write_fleet

NODE = Registration(id="edge-1", region="us-east", hostname="edge-1", url="http://127.0.0.1:9")


@dataclass
class Revision:
    sha: str
    fleet: DesiredFleet | None
    approvals: tuple[Approval, ...] = ()


@dataclass
class Source:
    latest: Revision | None = None

    def fleet_at(self, sha: str) -> DesiredFleet | None:
        return self.latest.fleet if self.latest is not None and self.latest.sha == sha else None


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    state = open_state_store(data_dir=tmp_path / "state")
    try:
        yield state
    finally:
        state.close()


@pytest.fixture
def plane(tmp_path: Path, store: StateStore) -> tuple[NodeHub, Controller]:
    """A hub and a controller on a fleet of one module (adder, deployed at once on every node)."""
    loaded = load_fleet(write_fleet(tmp_path / "fleet"))
    assert loaded.fleet is not None, [str(p) for p in loaded.problems]
    hub = NodeHub(store, heartbeat_seconds=60)
    registry = Registry(store, open_blob_store(None, tmp_path / "blobs"))
    source = Source(Revision("a" * 40, loaded.fleet))
    return hub, Controller(store=store, registry=registry, source=source, hub=hub)


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
