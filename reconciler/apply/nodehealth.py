"""Which nodes are healthy: a node that missed three heartbeats is Unhealthy until it speaks again.

Where it sits: inside `reconciler.apply.nodes.NodeHub`, which builds one `NodeHealth` over its node
rows and keeps it up to date (a heartbeat here, a row another replica wrote, a node gone); the hub's
`status_of`, `silent`, `due`, `check_health` and `next_health_change` are this object's, and a
watcher of the fleet (`reconciler.apply.nodechanges.NodeChanges`) reads when a node's heartbeats
come due from it.

With other replicas on the same store (`Peers`), a node's health is judged from its row's heartbeat
time as the replica that heard it wrote it, and as of when the hub last read that row: a node heard
elsewhere is not called Unhealthy on this hub's memory alone (the other replica's announcement may be
late), only once a read of its row, made after its heartbeats were due, still shows them missing.
The clock makes such a node due for that read (`Peers.recheck`), not Unhealthy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Protocol

from edge.nodeapi import Heartbeat, NodeStatus
from reconciler.store.nodes import SharedHeartbeat
from reconciler.store.records import JsonObject, NodeRecord

__all__ = ["MISSED_HEARTBEATS", "NodeHealth", "Peers"]

MISSED_HEARTBEATS = 3


class Peers(Protocol):
    """Other control-plane replicas on the same store (`reconciler.apply.leader.Replicas`); None when alone."""

    def heartbeat_row(
        self, node_id: str, region: str, reported: JsonObject, at: datetime, beat: Heartbeat
    ) -> SharedHeartbeat:
        """The row the hub stores for this heartbeat (with its metric deltas, for the leader)."""
        ...

    def announce(self, node_id: str) -> None:
        """Tell the other replicas that this node's row changed (returns at once)."""
        ...

    def recheck(self, node_ids: Iterable[str]) -> None:
        """Read these nodes' rows again soon and `merge` them (returns at once): nodes heard by
        another replica whose heartbeats look overdue here."""
        ...


class NodeHealth:
    """The health of the hub's nodes (`nodes`: the hub's own map of rows, which it keeps current).

    `read_at`: when the hub read the rows it starts with; with `peers`, those nodes are judged as of
    then until a heartbeat here or a later read of their row."""

    def __init__(
        self,
        nodes: Mapping[str, NodeRecord],
        *,
        heartbeat_seconds: float,
        clock: Callable[[], float],
        peers: Peers | None,
        read_at: float,
    ) -> None:
        self._nodes = nodes
        self.heartbeat_seconds = heartbeat_seconds
        self.clock = clock
        self.peers = peers
        self.silent_after = MISSED_HEARTBEATS * heartbeat_seconds
        self._health: dict[str, NodeStatus] = {}  # each node's status as last judged
        # With peers: nodes whose last heartbeat the hub knows from a row another replica wrote ->
        # when the hub last read that row (the time their health is judged at), and when it last
        # asked to read it again (`Peers.recheck`). A node that heartbeats here leaves both.
        self._read_at: dict[str, float] = dict.fromkeys(nodes, read_at) if peers is not None else {}
        self._asked: dict[str, float] = {}
        # When each node last spoke to this replica, whether or not the store took what it said.
        self._contact: dict[str, float] = {}

    # -- what the hub tells it --------------------------------------------------------------------

    def heard_here(self, node_id: str) -> None:
        """The node spoke to this replica: its health is judged by this hub's clock from now on."""
        self._read_at.pop(node_id, None)
        self._asked.pop(node_id, None)

    def contact(self, node_id: str, at: float) -> None:
        """The node spoke to this replica at `at` (a heartbeat or a registration, as it arrives): it is
        not silent, even while the store is slow to take its heartbeat or fails to. Else a store
        restart, whose writes hang and then fail, silences every node and a pass meanwhile empties
        their tables (tests/chaos/test_postgres_restart.py). The latest arrival, not the largest time:
        after the wall clock steps back, an hour-ahead contact must not keep a dead node Healthy."""
        self._contact[node_id] = at
        self.heard_here(node_id)

    def read(self, node_id: str, read_at: float, heard: float, known: float) -> None:
        """A read of the node's row, begun at `read_at`, found its last heartbeat at `heard` where the
        hub knew `known` (-inf for a node new to it): a newer heartbeat (another replica heard it) is
        judged as of `read_at` from now on; the same one, as of the latest read that showed it."""
        self._asked.pop(node_id, None)
        if heard > known:
            self._read_at[node_id] = read_at
        elif heard == known and node_id in self._read_at:
            self._read_at[node_id] = max(self._read_at[node_id], read_at)

    def forget(self, node_id: str) -> None:
        """The hub dropped the node (its status goes at the next `check` of it)."""
        self._read_at.pop(node_id, None)
        self._asked.pop(node_id, None)
        self._contact.pop(node_id, None)

    # -- judging ----------------------------------------------------------------------------------

    def last_heard(self, node: NodeRecord, now: float) -> float:
        heard = node.heard_at or now
        contact = self._contact.get(node.id)
        return heard if contact is None or contact < heard else contact

    def status_of(self, node: NodeRecord, now: float) -> NodeStatus:
        """Draining, or Unhealthy when its heartbeats are missing as of `now`; for a node heard by
        another replica, as of when the hub last read its row (`read`), which the clock does not move."""
        if node.status == NodeStatus.DRAINING:
            return NodeStatus.DRAINING
        read_at = self._read_at.get(node.id)
        if read_at is not None and read_at < now:
            now = read_at
        silent = now - self.last_heard(node, now) > self.silent_after
        return NodeStatus.UNHEALTHY if silent else NodeStatus.HEALTHY

    def judge(self, node: NodeRecord, now: float) -> bool:
        """Judge one node's health as of `now` (it just heartbeat); whether its status changed."""
        status = self.status_of(node, now)
        if self._health.get(node.id) == status:
            return False
        self._health[node.id] = status
        return True

    def silent(self, now: float) -> list[str]:
        """Nodes whose last heartbeat, as the hub knows it, is older than the missed heartbeats allow
        as of `now` (whether or not a read of their row confirmed it)."""
        return [
            n.id
            for n in self._nodes.values()
            if n.status != NodeStatus.DRAINING and now - self.last_heard(n, now) > self.silent_after
        ]

    def due(self, now: float) -> list[str]:
        """Nodes heard by another replica that look silent by the clock, while the last read of their
        row did not show it: their row must be read again before they can be judged Unhealthy."""
        limit = self.silent_after
        out = []
        for node_id, read_at in self._read_at.items():
            node = self._nodes[node_id]
            if node.status == NodeStatus.DRAINING:
                continue
            last = self.last_heard(node, now)
            if now - last > limit and read_at - last <= limit:
                out.append(node_id)
        return out

    def check(self, node_ids: Iterable[str] | None = None) -> list[str]:
        """Recompute node health (of `node_ids` only: the rows that just changed; None: every node);
        the nodes whose status changed. With peers, checking every node also asks them to read again
        the rows of nodes that are `due`."""
        now = self.clock()
        changed: list[str] = []
        if node_ids is None:
            health = {node.id: self.status_of(node, now) for node in self._nodes.values()}
            if health != self._health:
                changed = [i for i, s in health.items() if self._health.get(i) != s]
                changed += [i for i in self._health if i not in health]
            self._health = health
            self._ask_again(now)
        else:
            for node_id in node_ids:
                node = self._nodes.get(node_id)
                status = self.status_of(node, now) if node is not None else None
                if self._health.get(node_id) != status:
                    changed.append(node_id)
                    if status is None:
                        self._health.pop(node_id, None)
                    else:
                        self._health[node_id] = status
        return changed

    def _ask_again(self, now: float) -> None:
        if self.peers is None or not self._read_at:
            return
        again = [i for i in self.due(now) if now - self._asked.get(i, float("-inf")) >= self.heartbeat_seconds]
        if again:
            for node_id in again:
                self._asked[node_id] = now
            self.peers.recheck(again)

    def next_change(self) -> float:
        """Seconds until the next healthy node would turn Unhealthy without a heartbeat (or, heard by
        another replica, would be due for a read of its row, or due again after one asked for)."""
        now = self.clock()
        limit = self.silent_after
        soonest = float("inf")
        for n in self._nodes.values():  # `status_of` inline: this walks the fleet at every wake of the loop
            if n.status == NodeStatus.DRAINING:
                continue
            read_at = self._read_at.get(n.id)
            judged = read_at if read_at is not None and read_at < now else now
            last = self.last_heard(n, judged)
            if judged - last > limit:  # Unhealthy
                continue
            at = (last if n.heard_at else self.last_heard(n, now)) + limit
            if at <= now and read_at is not None:  # due: when it may be asked (again)
                at = self._asked.get(n.id, now - self.heartbeat_seconds) + self.heartbeat_seconds
            soonest = min(soonest, at - now)
        return max(soonest if soonest != float("inf") else self.heartbeat_seconds, 0.05)
