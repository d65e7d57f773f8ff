"""`NodeHealth` on its own (the hub's health judgement, `reconciler.apply.nodehealth`): a node heard
here is judged by the clock; one heard by another replica as of the last read of its row, due for a
read by the clock and asked for once a heartbeat, Unhealthy only when a read still shows it silent."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.nodeapi import Heartbeat, NodeStatus, Registration
from reconciler.apply.nodehealth import MISSED_HEARTBEATS, NodeHealth
from reconciler.apply.nodes import NodeHub
from reconciler.apply.threadbatch import RowBatch
from reconciler.store.errors import BackendError
from reconciler.store.nodes import SharedHeartbeat
from reconciler.store.records import JsonObject, NodeRecord
from reconciler.store.state import open_state_store

T0 = 1_800_000_000.0
BEAT = 2.0
LATE = T0 + MISSED_HEARTBEATS * BEAT + 1  # past the missed heartbeats of a node last heard at T0


class Replicas:
    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    def heartbeat_row(
        self, node_id: str, region: str, reported: JsonObject, at: datetime, beat: Heartbeat
    ) -> SharedHeartbeat:
        raise AssertionError("the health judgement stores nothing")

    def announce(self, node_id: str) -> None:
        raise AssertionError("the health judgement announces nothing")

    def recheck(self, node_ids: Iterable[str]) -> None:
        self.asked.append(list(node_ids))


def node(node_id: str, heard: float, status: NodeStatus = NodeStatus.HEALTHY) -> NodeRecord:
    return NodeRecord(
        id=node_id,
        region="us-east",
        url=f"http://{node_id}",
        status=status,
        last_heartbeat_at=datetime.fromtimestamp(heard, UTC),
    )


def test_a_node_heard_here_is_judged_by_the_clock() -> None:
    clock = [T0]
    nodes = {"a": node("a", T0), "d": node("d", T0, NodeStatus.DRAINING)}
    health = NodeHealth(nodes, heartbeat_seconds=BEAT, clock=lambda: clock[0], peers=None, read_at=T0)
    assert health.check() == ["a", "d"]  # the first look judges every node
    assert health.status_of(nodes["a"], T0) == NodeStatus.HEALTHY
    assert not health.judge(nodes["a"], T0)  # as judged already
    clock[0] = LATE
    assert health.silent(LATE) == ["a"] and health.due(LATE) == []  # draining is never silent
    assert health.check() == ["a"] and health.status_of(nodes["a"], LATE) == NodeStatus.UNHEALTHY
    nodes["a"] = node("a", LATE)
    assert health.judge(nodes["a"], LATE) and health.status_of(nodes["a"], LATE) == NodeStatus.HEALTHY


def test_a_node_heard_elsewhere_is_judged_as_of_the_last_read_of_its_row() -> None:
    clock = [T0]
    replicas = Replicas()
    nodes = {"far": node("far", T0)}
    health = NodeHealth(nodes, heartbeat_seconds=BEAT, clock=lambda: clock[0], peers=replicas, read_at=T0)
    assert health.check() == ["far"]
    clock[0] = LATE
    assert health.status_of(nodes["far"], LATE) == NodeStatus.HEALTHY  # the read at T0 did not show it silent
    assert health.silent(LATE) == ["far"] and health.due(LATE) == ["far"]
    assert health.check() == [] and replicas.asked == [["far"]]  # due: its row is asked for, once a heartbeat
    assert health.check() == [] and replicas.asked == [["far"]]
    assert health.next_change() == BEAT
    health.read("far", LATE, T0, T0)  # the same heartbeat, read after it was due
    assert health.due(LATE) == [] and health.check() == ["far"]
    assert health.status_of(nodes["far"], LATE) == NodeStatus.UNHEALTHY
    nodes["far"] = node("far", LATE)
    health.read("far", LATE, LATE, T0)  # another replica heard it since
    assert health.check(["far"]) == ["far"] and health.status_of(nodes["far"], LATE) == NodeStatus.HEALTHY
    health.heard_here("far")  # from now on judged by this replica's clock
    clock[0] = LATE + MISSED_HEARTBEATS * BEAT + 1
    assert health.due(clock[0]) == [] and health.check() == ["far"]


def test_a_node_that_spoke_here_is_not_silent_while_the_store_has_not_taken_its_heartbeat() -> None:
    # A store restart holds the heartbeat writes, then fails them: the rows keep the heartbeat from
    # before it, and the nodes' agents register again instead. A node that spoke meanwhile is alive.
    clock = [T0]
    nodes = {"a": node("a", T0), "b": node("b", T0)}
    health = NodeHealth(nodes, heartbeat_seconds=BEAT, clock=lambda: clock[0], peers=None, read_at=T0)
    health.contact("a", LATE - 1)  # arrived; its write never lands
    clock[0] = LATE
    assert health.silent(LATE) == ["b"]
    assert health.check() == ["a", "b"]
    assert health.status_of(nodes["a"], LATE) == NodeStatus.HEALTHY
    assert health.status_of(nodes["b"], LATE) == NodeStatus.UNHEALTHY
    # A row with a later heartbeat counts from then; an older contact takes nothing back.
    nodes["a"] = node("a", LATE + 2)
    health.contact("a", LATE)
    assert health.last_heard(nodes["a"], LATE + 2) == LATE + 2
    # Silent again once the missed heartbeats pass after the last word, and a node forgotten and
    # known again is judged by its row alone.
    later = LATE + 2 + MISSED_HEARTBEATS * BEAT + 1
    assert health.status_of(nodes["a"], later) == NodeStatus.UNHEALTHY
    health.contact("b", later)
    health.forget("b")
    assert health.status_of(nodes["b"], later) == NodeStatus.UNHEALTHY


async def test_a_heartbeat_or_registration_the_store_fails_still_counts_as_the_node_speaking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_state_store(data_dir=tmp_path)
    try:
        for node_id in ("a", "b"):
            store.upsert_node(node(node_id, T0))
        clock = [T0]
        hub = NodeHub(store, heartbeat_seconds=BEAT, clock=lambda: clock[0])

        def down(*args: object) -> NoReturn:
            raise BackendError("postgresql://db: terminating connection due to administrator command")

        hub.heartbeat_writes = RowBatch(down, down)
        monkeypatch.setattr(store, "upsert_node", down)
        clock[0] = LATE - 1
        with pytest.raises(BackendError):  # the node is answered 503 ...
            await hub.heartbeat("a", Heartbeat(generation=0))
        with pytest.raises(BackendError):  # ... and its agent registers again
            await hub.register(Registration(id="b", region="us-east", hostname="b", url="http://b"))
        clock[0] = LATE
        assert {v.id: v.status for v in hub.view()} == {"a": "Healthy", "b": "Healthy"}  # ... but it spoke
        clock[0] = LATE - 1 + MISSED_HEARTBEATS * BEAT + 1
        assert {v.id: v.status for v in hub.view()} == {"a": "Unhealthy", "b": "Unhealthy"}
    finally:
        store.close()


def _next_change_by_definition(health: NodeHealth) -> float:
    """`NodeHealth.next_change` as its docstring defines it, one `status_of` and `last_heard` a node."""
    now = health.clock()
    soonest = float("inf")
    for n in health._nodes.values():
        if health.status_of(n, now) != NodeStatus.HEALTHY:
            continue
        at = health.last_heard(n, now) + health.silent_after
        if at <= now and n.id in health._read_at:
            at = health._asked.get(n.id, now - health.heartbeat_seconds) + health.heartbeat_seconds
        soonest = min(soonest, at - now)
    return max(soonest if soonest != float("inf") else health.heartbeat_seconds, 0.05)


_OFFSET = st.floats(min_value=-4 * MISSED_HEARTBEATS * BEAT, max_value=BEAT, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["heartbeat", "registered only", "neither"]),
            _OFFSET,  # when it was heard (or registered), from now
            st.booleans(),  # draining
            st.none() | _OFFSET,  # another replica's row, read this long from now
            st.none() | _OFFSET,  # asked to read it again, this long from now
            st.none() | _OFFSET,  # spoke to this replica, this long from now
        ),
        max_size=12,
    ),
    st.booleans(),
)
def test_the_next_health_change_is_the_soonest_of_every_nodes_by_its_definition(
    fleet: list[tuple[str, float, bool, float | None, float | None, float | None]], with_peers: bool
) -> None:
    """`next_change` judges each node inline (it walks the fleet at every wake of the controller's loop):
    the same answer as `status_of` and `last_heard` node by node, whatever the mix of heartbeats, rows
    read from another replica, asks, contacts and drains."""
    now = T0
    nodes: dict[str, NodeRecord] = {}
    for i, (kind, heard, draining, _, _, _) in enumerate(fleet):
        at = datetime.fromtimestamp(now + heard, UTC)
        nodes[f"n{i}"] = NodeRecord(
            id=f"n{i}",
            region="r",
            url=f"http://n{i}",
            status=NodeStatus.DRAINING if draining else NodeStatus.HEALTHY,
            last_heartbeat_at=at if kind == "heartbeat" else None,
            registered_at=at if kind == "registered only" else None,
        )
    peers = Replicas() if with_peers else None
    health = NodeHealth(nodes, heartbeat_seconds=BEAT, clock=lambda: now, peers=peers, read_at=now)
    for i, (_, _, _, read, asked, contact) in enumerate(fleet):
        if read is None and with_peers:
            health.heard_here(f"n{i}")
        elif read is not None and with_peers:
            health._read_at[f"n{i}"] = now + read
        if asked is not None and with_peers:
            health._asked[f"n{i}"] = now + asked
        if contact is not None:
            health.contact(f"n{i}", now + contact)
            if read is not None and with_peers:
                health._read_at[f"n{i}"] = now + read  # contact() forgets it: some keep both
    assert health.next_change() == _next_change_by_definition(health)
