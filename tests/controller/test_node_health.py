"""`NodeHealth` on its own (the hub's health judgement, `reconciler.apply.nodehealth`): a node heard
here is judged by the clock; one heard by another replica as of the last read of its row, due for a
read by the clock and asked for once a heartbeat, Unhealthy only when a read still shows it silent."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from edge.nodeapi import Heartbeat, NodeStatus
from reconciler.apply.nodehealth import MISSED_HEARTBEATS, NodeHealth
from reconciler.store.nodes import SharedHeartbeat
from reconciler.store.records import JsonObject, NodeRecord

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
