"""A node heard by another replica is judged from its row, as that replica wrote it, on real PostgreSQL:
the leader's clock makes it due for a read of its row, never Unhealthy on the leader's memory alone;
only a read that still shows its heartbeats missing turns it Unhealthy. A node heard by this replica
is judged by this replica's clock, as before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.nodeapi import Heartbeat
from reconciler.apply.leader import Replicas
from reconciler.apply.nodehealth import MISSED_HEARTBEATS
from reconciler.apply.nodes import NodeHub
from reconciler.store.records import NodeRecord
from reconciler.store.state import SharedHeartbeat, StateStore, open_state_store
from tests.e2e.cluster import poll
from tests.ha.replicas import leading_controller

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC).timestamp()
BEAT = 1.0  # heartbeat seconds: silent after MISSED_HEARTBEATS of them


@dataclass
class Leader:
    store: StateStore
    hub: NodeHub
    replicas: Replicas
    clock: list[float]
    pokes: list[int]

    def status(self, node_id: str) -> str:
        return next(v.status for v in self.hub.view() if v.id == node_id)

    def heard_elsewhere(self, node_id: str, at: float) -> None:
        """The other replica stores a heartbeat it received at `at` (its NOTIFY never reaches us)."""
        beat = SharedHeartbeat("other", node_id, "us-east", {"generation": 0}, datetime.fromtimestamp(at, UTC), [])
        assert self.store.record_shared_heartbeat(beat)


@pytest.fixture
async def leader(database_url: str, tmp_path: Path) -> AsyncIterator[Leader]:
    store = open_state_store(database_url=database_url)
    clock = [T0]
    for node_id in ("far", "near"):
        at = datetime.fromtimestamp(T0, UTC)
        store.upsert_node(NodeRecord(id=node_id, region="us-east", url=f"http://{node_id}", last_heartbeat_at=at))
    replicas = Replicas(store, database_url, clock=lambda: clock[0])
    pokes: list[int] = []
    hub = NodeHub(store, heartbeat_seconds=BEAT, clock=lambda: clock[0], peers=replicas, poke=lambda: pokes.append(1))
    leading_controller(store, hub, replicas, tmp_path)
    try:
        yield Leader(store, hub, replicas, clock, pokes)
    finally:
        store.close()


async def test_a_node_heard_by_another_replica_is_unhealthy_only_once_its_row_says_so(leader: Leader) -> None:
    hub, clock = leader.hub, leader.clock
    assert hub.status_of(hub._nodes["far"], T0) == "Healthy"  # both rows came from the store at T0
    hub.check_health()
    # The other replica keeps hearing "far", but this busy leader has not read its NOTIFY: by its
    # memory, the node's last heartbeat was T0, more than three heartbeats ago.
    leader.heard_elsewhere("far", T0 + 3.0)
    clock[0] = T0 + MISSED_HEARTBEATS * BEAT + 0.5
    assert hub.silent(clock[0]) == ["far", "near"]  # overdue by memory ...
    assert hub.due(clock[0]) == ["far", "near"]  # ... so due for a read of their rows
    assert leader.status("far") == "Healthy"  # ... but not Unhealthy on memory alone
    assert not hub.check_health()  # no health change, no poke; the timer's check asks for the rows
    assert hub.next_health_change() == pytest.approx(BEAT)  # asked: asked again after one heartbeat
    # The read shows "far" heard half a second ago (by the other replica's clock) and "near" silent.
    await poll(lambda: not hub.due(clock[0]), "the due rows to be read")
    assert leader.status("far") == "Healthy"
    assert leader.status("near") == "Unhealthy"
    assert leader.pokes  # "near" changed status
    assert hub.next_health_change() == pytest.approx(T0 + 3.0 + MISSED_HEARTBEATS * BEAT - clock[0])

    # Time passes and nothing more reaches the store: due again, and Unhealthy once a read confirms it.
    clock[0] = T0 + 3.0 + MISSED_HEARTBEATS * BEAT + 0.25
    assert leader.status("far") == "Healthy" and hub.due(clock[0]) == ["far"]
    await leader.replicas._recheck_silent()  # what a pass does first
    assert leader.status("far") == "Unhealthy"
    # A later heartbeat the other replica heard brings it back when its row is read (its NOTIFY).
    leader.heard_elsewhere("far", clock[0])
    leader.replicas.recheck(["far"])
    await poll(lambda: leader.status("far") == "Healthy", "far to be Healthy again")


async def test_a_node_heard_here_is_judged_by_this_replicas_clock(leader: Leader) -> None:
    hub, clock = leader.hub, leader.clock
    answer = await hub.heartbeat("near", Heartbeat(generation=0))
    assert answer is not None
    assert hub.due(clock[0]) == []
    leader.heard_elsewhere("far", T0)
    clock[0] = T0 + MISSED_HEARTBEATS * BEAT + 0.5
    assert leader.status("near") == "Unhealthy"  # this replica heard it last: its own clock says so
    assert hub.due(clock[0]) == ["far"]  # the other one is not judged before its row is read
    assert hub.check_health()  # "near" turned Unhealthy
