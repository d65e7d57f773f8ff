"""The conditions of each module are written to the state store once per pass, only when they changed
(issue 23): an idle pass writes nothing, a restarted controller shows the stored conditions before
its first pass and writes nothing when they still hold, and a replica that does not lead answers
from the store."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from pathlib import Path

import pytest

from edge.nodeapi import Registration
from reconciler.apply.controller import Controller, Role
from reconciler.apply.executor import conditions_json
from reconciler.apply.nodes import NodeHub
from reconciler.apply.registry import Registry
from reconciler.planner import Condition, ConditionType
from reconciler.spec.loader import load_fleet
from reconciler.store.blobs import open_blob_store
from reconciler.store.records import JsonObject
from reconciler.store.state import StateStore
from tests.controller.revisions import Revision, Source
from tests.spec.fleets import write_fleet

NODE = Registration(id="edge-1", region="us-east", hostname="edge-1", url="http://127.0.0.1:9")


class Writes:
    """Every `write_conditions` call the store gets, as (modules changed, modules removed)."""

    def __init__(self, store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[set[str], set[str]]] = []
        write = store.write_conditions

        def spy(
            changed: Mapping[str, list[JsonObject]], removed: Collection[str] = (), at: datetime | None = None
        ) -> None:
            self.calls.append((set(changed), set(removed)))
            write(changed, removed, at)

        monkeypatch.setattr(store, "write_conditions", spy)


@pytest.fixture
def source(tmp_path: Path) -> Source:
    loaded = load_fleet(write_fleet(tmp_path / "fleet"))
    assert loaded.fleet is not None, [str(p) for p in loaded.problems]
    return Source(Revision("a" * 40, loaded.fleet))


def controller_on(store: StateStore, source: Source, tmp_path: Path, role: Role | None = None) -> Controller:
    """A controller (and its hub) as a control plane builds one, on `store`."""
    hub = NodeHub(store, heartbeat_seconds=60)
    registry = Registry(store, open_blob_store(None, tmp_path / "blobs"))
    return Controller(store=store, registry=registry, source=source, hub=hub, role=role)


async def test_a_pass_writes_the_conditions_and_an_unchanged_pass_writes_nothing(
    store: StateStore, source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = Writes(store, monkeypatch)
    controller = controller_on(store, source, tmp_path)
    await controller.reconcile()
    assert writes.calls == [({"adder"}, set())]
    assert controller.state.conditions is not None and controller.state.conditions["adder"]
    assert await controller.executor.stored_conditions() == controller.state.conditions

    await controller.reconcile()
    await controller.reconcile()
    assert writes.calls == [({"adder"}, set())]  # nothing changed: nothing written

    before = controller.state.conditions
    await controller.hub.register(NODE)  # a node to place the module on: its conditions change
    await controller.reconcile()
    assert controller.state.conditions != before
    assert writes.calls[1:] == [({"adder"}, set())]
    assert await controller.executor.stored_conditions() == controller.state.conditions


async def test_the_leader_and_the_store_give_the_same_answer(store: StateStore, source: Source, tmp_path: Path) -> None:
    controller = controller_on(store, source, tmp_path)
    await controller.reconcile()
    follower = controller_on(store, source, tmp_path, Role("b", leading=False))
    assert dict(await follower.conditions()) == dict(await controller.conditions())
    assert await follower.conditions_of("adder") == await controller.conditions_of("adder")
    assert await follower.conditions_of("ghost") == ()


async def test_a_restarted_controller_shows_the_stored_conditions_and_writes_nothing_when_they_hold(
    store: StateStore, source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = controller_on(store, source, tmp_path)
    await first.reconcile()
    shown = await first.conditions()
    # A module an earlier leader reported that this fleet no longer has.
    store.write_conditions({"retired": conditions_json((Condition(ConditionType.READY, True, "Available", "x"),))})

    writes = Writes(store, monkeypatch)
    restarted = controller_on(store, source, tmp_path)
    assert restarted.state.conditions is None
    assert (await restarted.conditions())["adder"] == shown["adder"]  # before its first pass
    await restarted.reconcile()
    assert writes.calls == [(set(), {"retired"})]  # the unchanged module is not written again
    assert set(await restarted.executor.stored_conditions()) == {"adder"}


async def test_a_replica_that_becomes_leader_compares_with_the_store_not_with_its_memory(
    store: StateStore, source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller = controller_on(store, source, tmp_path)
    await controller.reconcile()
    ours = await controller.conditions_of("adder")
    controller.role.follow()
    # Meanwhile another leader wrote other conditions for the module.
    other = (Condition(ConditionType.READY, False, "Progressing", "another leader's words"),)
    store.write_conditions({"adder": conditions_json(other)})
    assert await controller.conditions_of("adder") == other  # a follower answers from the store

    writes = Writes(store, monkeypatch)
    controller.forget()  # what Replicas does before leading
    controller.role.lead()
    assert await controller.conditions_of("adder") == other  # no pass of its own yet
    await controller.reconcile()
    assert writes.calls == [({"adder"}, set())]
    assert await controller.executor.stored_conditions("adder") == {"adder": ours}
    assert await controller.conditions_of("adder") == ours


async def test_a_pass_says_how_long_each_of_its_steps_took(store: StateStore, source: Source, tmp_path: Path) -> None:
    controller = controller_on(store, source, tmp_path)
    assert controller.state.steps_ms == {}
    await controller.reconcile()
    assert list(controller.state.steps_ms) == [name for name, _ in controller.steps]
    assert all(ms >= 0 for ms in controller.state.steps_ms.values())
    assert sum(controller.state.steps_ms.values()) <= controller.state.duration_ms
