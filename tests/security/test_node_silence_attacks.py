"""Attacks on how the control plane hears its nodes (commits 2d186aa and 92a2cb8): a heartbeat or a
registration counts as contact when it arrives (`NodeHealth.contact`), a new lead or a pass the store
failed waits (bounded) for every node's fresh report (`NodeHub.expect_reports`), and an Unhealthy node
heard within `UNHEALTHY_HOLD_SECONDS` keeps its table (`reconciler.planner.types.holds_its_table`).

The attacker holds a node token (its own node's, or a killed node's), an admin's or viewer's key, or a
local shell that moves the wall clock. Real control planes and edge processes over real HTTP where
the attack is from the outside; a real `NodeHub` on a real SQLite store where the attack needs a held
write or a clock step.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import reconciler.planner.types as planner_types
from edge.nodeapi import NODES_PATH, Heartbeat, NodeStatus
from reconciler.apply.nodehealth import MISSED_HEARTBEATS
from reconciler.apply.nodes import NodeHub
from reconciler.apply.threadbatch import RowBatch
from reconciler.store.errors import BackendError
from reconciler.store.records import JsonObject, NodeRecord
from reconciler.store.state import StateStore, open_state_store
from tests.api.conftest import call
from tests.e2e.cluster import Cluster, poll

from .conftest import NODE

T0 = 1_800_000_000.0
BEAT = 2.0
SILENT = MISSED_HEARTBEATS * BEAT


def _status(cluster: Cluster, node_id: str) -> str | None:
    for view in cluster.plane.hub.view():
        if view.id == node_id:
            return str(view.status)
    return None


def _registration(node_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "region": "us-east", "hostname": node_id, "url": "http://127.0.0.1:9", **extra}


# -- a killed node kept Healthy by calls on its behalf -----------------------------------------------


async def test_rejected_calls_on_a_killed_nodes_behalf_do_not_count_as_contact(cluster: Cluster) -> None:
    # Contact is taken before the store write, so it must come after the token and the body are
    # checked: a call refused with 403 or 400, or a long-poll, must not keep a dead node Healthy.
    url = cluster.url
    own = cluster.plane.mint(NODE, "node")
    other = cluster.plane.mint("edge-elsewhere", "node")
    viewer = cluster.token("viewer")
    cluster.nodes[0].kill()
    answers: set[tuple[str, int]] = set()

    async def attacked_and_still_unhealthy() -> bool:
        beat = f"{NODES_PATH}/{NODE}/heartbeat"
        tries = [
            ("heartbeat, another node's token", "POST", beat, other, {"generation": 0}),
            ("heartbeat, a viewer's key", "POST", beat, viewer, {"generation": 0}),
            ("heartbeat, a body it refuses", "POST", beat, own, {"generation": -1}),
            ("register, another node's token", "POST", NODES_PATH, other, _registration(NODE)),
            ("register, a body it refuses", "POST", NODES_PATH, own, _registration(NODE, generation=-5)),
        ]
        for what, method, path, token, body in tries:
            answer = await call(url, method, path, token=token, json=body)
            answers.add((what, answer.status))
        poll_answer = await call(url, "GET", f"{NODES_PATH}/{NODE}/assignment?after=0", token=own)
        answers.add(("long-poll", poll_answer.status))
        return _status(cluster, NODE) == NodeStatus.UNHEALTHY

    await poll(attacked_and_still_unhealthy, "the killed node to turn Unhealthy under the attack", timeout=20.0)
    assert answers == {
        ("heartbeat, another node's token", 403),
        ("heartbeat, a viewer's key", 403),
        ("heartbeat, a body it refuses", 400),
        ("register, another node's token", 403),
        ("register, a body it refuses", 400),
        ("long-poll", 200),
    }


async def test_a_heartbeat_for_a_deleted_node_is_not_contact(tmp_path: Path) -> None:
    store = open_state_store(data_dir=tmp_path)
    try:
        store.upsert_node(NodeRecord(id="gone", region="us-east", url="http://gone"))
        clock = [T0]
        hub = NodeHub(store, heartbeat_seconds=BEAT, clock=lambda: clock[0])
        assert await hub.delete("gone")
        clock[0] = T0 + 100
        assert await hub.heartbeat("gone", Heartbeat(generation=0)) is None  # 404: register again
        # The same id back as a row with no heartbeat (another replica, a restore): judged by its row.
        hub.merge((NodeRecord(id="gone", region="us-east", url="http://gone", registered_at=_at(T0)),), ())
        assert {v.id: v.status for v in hub.view()} == {"gone": NodeStatus.UNHEALTHY}
    finally:
        store.close()


# -- races between contact and forget -------------------------------------------------------------


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


@dataclass
class LoneNode:
    """A real hub on a SQLite store holding one node, "n" (registered at T0, never heard), and the
    clock the hub reads (set it before the first call)."""

    store: StateStore
    hub: NodeHub
    clock: list[float]


@pytest.fixture
def lone(tmp_path: Path) -> Iterator[LoneNode]:
    store = open_state_store(data_dir=tmp_path)
    try:
        store.upsert_node(NodeRecord(id="n", region="us-east", url="http://n", registered_at=_at(T0)))
        clock = [T0]
        yield LoneNode(store, NodeHub(store, heartbeat_seconds=BEAT, clock=lambda: clock[0]), clock)
    finally:
        store.close()


class HeldWrites:
    """The hub's heartbeat writes, each held until `release` (a store slow to take them)."""

    def __init__(self, hub: NodeHub) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()
        store = hub.store

        def single(beat: tuple[str, JsonObject, datetime]) -> bool:
            self.entered.set()
            assert self.released.wait(30.0)
            return store.record_heartbeat(*beat)

        def bulk(beats: list[tuple[str, JsonObject, datetime]]) -> Sequence[bool]:
            return [single(b) for b in beats]

        hub.heartbeat_writes = RowBatch(bulk, single)


async def test_a_node_deleted_while_its_heartbeat_is_held_keeps_no_contact(lone: LoneNode) -> None:
    hub, clock = lone.hub, lone.clock
    clock[0] = T0 + 100
    held = HeldWrites(hub)
    beat = asyncio.create_task(hub.heartbeat("n", Heartbeat(generation=0)))
    await poll(held.entered.is_set, "the heartbeat's write to start")
    assert await hub.delete("n")  # an admin deletes the node while its heartbeat is in the store
    held.released.set()
    assert await beat is None
    assert not hub.known("n")
    hub.merge((NodeRecord(id="n", region="us-east", url="http://n", registered_at=_at(T0)),), ())
    assert {v.id: v.status for v in hub.view()} == {"n": NodeStatus.UNHEALTHY}


async def test_a_heartbeat_that_lands_while_the_node_is_being_deleted_keeps_no_contact(
    lone: LoneNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, hub, clock = lone.store, lone.hub, lone.clock
    clock[0] = T0 + 100
    entered, released = threading.Event(), threading.Event()
    delete_node = store.delete_node

    def held_delete(node_id: str) -> bool:
        entered.set()
        assert released.wait(30.0)
        return delete_node(node_id)

    monkeypatch.setattr(store, "delete_node", held_delete)
    deleting = asyncio.create_task(hub.delete("n"))
    await poll(entered.is_set, "the delete to reach the store")
    assert await hub.heartbeat("n", Heartbeat(generation=0)) is not None  # the row is still there
    released.set()
    assert await deleting
    assert not hub.known("n")
    hub.merge((NodeRecord(id="n", region="us-east", url="http://n", registered_at=_at(T0)),), ())
    assert {v.id: v.status for v in hub.view()} == {"n": NodeStatus.UNHEALTHY}


# -- clock edges --------------------------------------------------------------------------------------


async def test_a_wall_clock_step_back_does_not_keep_a_dead_node_healthy(lone: LoneNode) -> None:
    # Found by this review: contact kept the largest arrival time ever seen, so after the clock
    # stepped back a dead node stayed Healthy for the size of the step. It keeps the latest arrival.
    hub, clock = lone.hub, lone.clock
    clock[0] = T0 + 3600  # the wall clock an hour ahead ...
    assert await hub.heartbeat("n", Heartbeat(generation=0)) is not None
    clock[0] = T0  # ... stepped back to the right time; the node heartbeats once more, then dies
    assert await hub.heartbeat("n", Heartbeat(generation=0)) is not None
    (view,) = hub.view()
    assert view.last_heartbeat == T0  # the row says: heard at T0
    clock[0] = T0 + SILENT + 1
    assert {v.id: v.status for v in hub.view()} == {"n": NodeStatus.UNHEALTHY}


async def test_a_wall_clock_step_forward_still_lets_a_node_that_speaks_be_healthy(lone: LoneNode) -> None:
    hub, clock = lone.hub, lone.clock
    assert await hub.heartbeat("n", Heartbeat(generation=0)) is not None
    clock[0] = T0 + 3600
    assert {v.id: v.status for v in hub.view()} == {"n": NodeStatus.UNHEALTHY}
    assert await hub.heartbeat("n", Heartbeat(generation=0)) is not None
    assert {v.id: v.status for v in hub.view()} == {"n": NodeStatus.HEALTHY}


# -- stalling passes -------------------------------------------------------------------------------


class FailsOnce:
    """The controller's Git source, whose next read fails as a store that went away does."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failed = False

    @property
    def latest(self) -> Any:
        if not self.failed:
            self.failed = True
            raise BackendError("postgresql://db: terminating connection due to administrator command")
        return self.inner.latest

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_silent_node_that_keeps_registering_delays_but_does_not_stop_passes_after_a_store_failure(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A node-token holder registers and never heartbeats, then keeps registering (contact, but not a
    # report): after a pass the store failed, the next pass waits for its report, boundedly, and the
    # real node's table is not emptied meanwhile.
    controller = cluster.plane.controller
    rogue = "edge-rogue"
    token = cluster.plane.mint(rogue, "node")
    first = await call(cluster.url, "POST", NODES_PATH, token=token, json=_registration(rogue))
    assert first.status == 201, first.body
    table = cluster.plane.hub.table(NODE)
    assert table is not None and any(e.module == "calc" for e in table.modules)
    monkeypatch.setattr(controller, "source", FailsOnce(controller.source))
    failed_at = controller.state.passes
    controller.poke()
    await poll(lambda: controller.state.passes > failed_at, "the pass the store fails")
    assert controller.state.error is not None and "BackendError" in controller.state.error
    after = controller.state.passes
    registrations: set[int] = set()

    async def resumed_while_the_rogue_registers() -> bool:
        answer = await call(cluster.url, "POST", NODES_PATH, token=token, json=_registration(rogue))
        registrations.add(answer.status)
        return controller.state.passes > after and controller.state.error is None

    await poll(resumed_while_the_rogue_registers, "passes to resume without the rogue's report", timeout=30.0)
    assert registrations == {200}
    now = cluster.plane.hub.table(NODE)
    assert now is not None and any(e.module == "calc" for e in now.modules)
    assert cluster.serving("calc")[NODE] == {("1.0.0", 100)}


# -- keeping a table: the hold, and Draining ---------------------------------------------------------


async def test_a_draining_node_is_emptied_at_once_while_it_heartbeats(cluster: Cluster) -> None:
    answer = await call(cluster.url, "POST", f"{NODES_PATH}/{NODE}/drain", headers=cluster.headers())
    assert answer.status == 202, answer.body

    def emptied_and_applied() -> bool:
        table = cluster.plane.hub.table(NODE)
        return (
            _status(cluster, NODE) == NodeStatus.DRAINING
            and table is not None
            and table.modules == ()
            and cluster.serving("calc").get(NODE) == set()
        )

    await poll(emptied_and_applied, "the drained node to be given, and to apply, an empty table", timeout=20.0)


async def test_a_silent_node_that_still_long_polls_is_emptied_once_the_hold_ends(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The node's process is gone, but whoever holds its token long-polls on: a rolled-back or removed
    # release must not stay on it past the hold (2 s here instead of 60 s), even though no event
    # other than the clock happens after it turns Unhealthy.
    monkeypatch.setattr(planner_types, "UNHEALTHY_HOLD_SECONDS", 2.0)
    table = cluster.plane.hub.table(NODE)
    assert table is not None and table.modules != ()
    cluster.nodes[0].kill()
    token = cluster.plane.mint(NODE, "node")
    after = [table.generation]

    async def emptied() -> bool:
        path = f"{NODES_PATH}/{NODE}/assignment?after={after[0]}&wait=20"
        answer = await call(cluster.url, "GET", path, token=token)
        if answer.status == 200:
            after[0] = answer.body["generation"]
            return bool(answer.body["modules"] == [])
        assert answer.status == 204, answer.body
        return False

    await poll(emptied, "an empty table for the silent node", timeout=30.0)
    assert _status(cluster, NODE) == NodeStatus.UNHEALTHY
