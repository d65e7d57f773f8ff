"""Edge nodes as the control plane knows them: registration, heartbeats (one, a batch, or shared
between replicas with their metric deltas) and the module table published to each node.

Where it sits: the node hub (reconciler.apply.nodes) registers nodes, records heartbeats and publishes
assignments here, in batches of one transaction each; the leader (reconciler.apply.leader) reads other
replicas' nodes and metric deltas from it. Consumers take the narrow `NodeStore` Protocol;
`SqlNodes` is its implementation over a `Database` (`StateStore` offers the same methods too).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import NamedTuple, Protocol

from edge.nodeapi import NodeStatus
from reconciler.store.database import Database, Table
from reconciler.store.records import JsonObject, NodeRecord
from reconciler.store.rows import dt, dt_or_none, marks, required, to_json, ts, ts_or_none

__all__ = ["MetricDelta", "NodeStore", "SharedHeartbeat", "SqlNodes"]


class SharedHeartbeat(NamedTuple):
    """A heartbeat as a replica writes it to a shared store (`NodeStore.record_shared_heartbeat`)."""

    replica: str
    node_id: str
    region: str
    reported: JsonObject
    at: datetime
    metrics: list[JsonObject]  # the heartbeat's metric deltas, as the wire has them


class MetricDelta(NamedTuple):
    """One heartbeat's metric deltas, as some replica received them."""

    seq: int
    replica: str
    node_id: str
    region: str
    at: datetime
    metrics: list[JsonObject]


class NodeStore(Protocol):
    """What a consumer of node rows needs."""

    def upsert_node(self, node: NodeRecord) -> NodeRecord: ...

    def get_node(self, node_id: str) -> NodeRecord | None: ...

    def get_nodes(self, node_ids: Iterable[str]) -> list[NodeRecord]: ...

    def list_nodes(self, region: str | None = None) -> list[NodeRecord]: ...

    def set_node_status(self, node_id: str, status: str) -> bool: ...

    def delete_node(self, node_id: str) -> bool: ...

    def record_heartbeat(self, node_id: str, reported: JsonObject, at: datetime | None = None) -> bool: ...

    def record_heartbeats(self, beats: Sequence[tuple[str, JsonObject, datetime]]) -> list[bool]: ...

    def record_shared_heartbeat(self, beat: SharedHeartbeat) -> bool: ...

    def record_shared_heartbeats(self, beats: Sequence[SharedHeartbeat]) -> list[bool]: ...

    def publish_assignment(self, node_id: str, assignment: JsonObject) -> int | None: ...

    def publish_assignments(self, tables: Sequence[tuple[str, JsonObject]]) -> list[int | None]: ...

    def metric_deltas_since(self, since: datetime, *, exclude_replica: str = "") -> list[MetricDelta]: ...

    def prune_metric_deltas(self, before: datetime) -> int: ...


class SqlNodes:
    """The `nodes` and `metric_deltas` tables of `db`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def upsert_node(self, node: NodeRecord) -> NodeRecord:
        """Register a node or update its region, url, status and capacity (a re-registering node
        keeps its generation, assignment and report)."""
        now = ts(self.db.clock())
        with self.db.tx(write=True) as tx:
            _NODES.upsert(
                tx,
                (
                    node.id,
                    node.region,
                    node.url,
                    node.status,
                    node.max_modules,
                    ts(node.registered_at) if node.registered_at else now,
                    ts_or_none(node.last_heartbeat_at),
                    node.generation,
                    to_json(node.assignment),
                    to_json(node.reported),
                ),
                update=("region", "url", "status", "max_modules"),
            )
            return required(_NODES.get(tx, node.id))

    def get_node(self, node_id: str) -> NodeRecord | None:
        return self.db.read(_NODES.get, node_id)

    def get_nodes(self, node_ids: Iterable[str]) -> list[NodeRecord]:
        """The nodes among `node_ids` that exist, by id."""
        wanted = sorted(set(node_ids))
        if not wanted:
            return []
        return self.db.read(_NODES.select, f"WHERE id IN ({marks(wanted)}) ORDER BY id", *wanted)

    def list_nodes(self, region: str | None = None) -> list[NodeRecord]:
        return self.db.read(_NODES.matching, "id", region=region)

    def set_node_status(self, node_id: str, status: str) -> bool:
        with self.db.tx(write=True) as tx:
            return tx.run("UPDATE nodes SET status = ? WHERE id = ?", status, node_id) == 1

    def delete_node(self, node_id: str) -> bool:
        with self.db.tx(write=True) as tx:
            return tx.run("DELETE FROM nodes WHERE id = ?", node_id) == 1

    # -- heartbeats -----------------------------------------------------------------------------

    def record_heartbeat(self, node_id: str, reported: JsonObject, at: datetime | None = None) -> bool:
        """Store what a node says it runs and when it said so; False for an unknown node."""
        return self.record_heartbeats([(node_id, reported, at or self.db.clock())])[0]

    def record_heartbeats(self, beats: Sequence[tuple[str, JsonObject, datetime]]) -> list[bool]:
        """`record_heartbeat` for each (node id, reported, at) in ONE transaction: all or none."""
        heard = [False] * len(beats)
        with self.db.tx(write=True) as tx:
            for i in _lock_order([node_id for node_id, _, _ in beats]):
                node_id, reported, at = beats[i]
                heard[i] = tx.run(_HEARTBEAT, to_json(reported), ts(at), node_id) == 1
        return heard

    def record_shared_heartbeat(self, beat: SharedHeartbeat) -> bool:
        """`record_heartbeat` and the heartbeat's metric deltas in one transaction; False (nothing
        written) for an unknown node."""
        return self.record_shared_heartbeats([beat])[0]

    def record_shared_heartbeats(self, beats: Sequence[SharedHeartbeat]) -> list[bool]:
        """`record_shared_heartbeat` for each in ONE transaction: all or none. A replica at thousands
        of nodes must not spend a commit per heartbeat: its queue grows, heartbeats reach the leader
        late, and the leader takes nodes for lost."""
        heard = [False] * len(beats)
        with self.db.tx(write=True) as tx:
            for i in _lock_order([beat.node_id for beat in beats]):
                beat = beats[i]
                found = heard[i] = tx.run(_HEARTBEAT, to_json(beat.reported), ts(beat.at), beat.node_id) == 1
                if found and beat.metrics:
                    tx.run(
                        "INSERT INTO metric_deltas (replica, node_id, region, at, metrics) VALUES (?, ?, ?, ?, ?)",
                        beat.replica,
                        beat.node_id,
                        beat.region,
                        ts(beat.at),
                        to_json(beat.metrics),
                    )
        return heard

    def metric_deltas_since(self, since: datetime, *, exclude_replica: str = "") -> list[MetricDelta]:
        """Metric deltas received at or after `since` by replicas other than `exclude_replica`, by time."""
        with self.db.tx(write=False) as tx:
            rows = tx.all(
                "SELECT seq, replica, node_id, region, at, metrics FROM metric_deltas "
                "WHERE at >= ? AND replica <> ? ORDER BY at, seq",
                ts(since),
                exclude_replica,
            )
        return [MetricDelta(int(r[0]), r[1], r[2], r[3], dt(r[4]), json.loads(r[5])) for r in rows]

    def prune_metric_deltas(self, before: datetime) -> int:
        """Forget metric deltas received before `before`; returns how many."""
        with self.db.tx(write=True) as tx:
            return tx.run("DELETE FROM metric_deltas WHERE at < ?", ts(before))

    # -- assignments ----------------------------------------------------------------------------

    def publish_assignment(self, node_id: str, assignment: JsonObject) -> int | None:
        """Replace a node's module table, bumping its generation; returns the new generation, or
        None for an unknown node. Publishing the same table again still bumps (callers compare first)."""
        return self.publish_assignments([(node_id, assignment)])[0]

    def publish_assignments(self, tables: Sequence[tuple[str, JsonObject]]) -> list[int | None]:
        """`publish_assignment` for each (node id, assignment) in ONE transaction: all or none."""
        generations: list[int | None] = [None] * len(tables)
        with self.db.tx(write=True) as tx:
            for i in _lock_order([node_id for node_id, _ in tables]):
                node_id, assignment = tables[i]
                row = tx.one(_PUBLISH, to_json(assignment), node_id)
                generations[i] = int(row[0]) if row else None
        return generations


def _lock_order(node_ids: Sequence[str]) -> list[int]:
    """The positions of a batch's rows in node id order (stable: a node twice keeps its order). Every
    bulk write takes its row locks in this one order, so two replicas writing overlapping batches at
    once (heartbeats on one, tables on the other) wait for each other instead of deadlocking."""
    return sorted(range(len(node_ids)), key=node_ids.__getitem__)


_HEARTBEAT = "UPDATE nodes SET reported = ?, last_heartbeat_at = ? WHERE id = ?"
_PUBLISH = "UPDATE nodes SET assignment = ?, generation = generation + 1 WHERE id = ? RETURNING generation"


_NODES = Table.of(
    "nodes",
    NodeRecord,
    "id, region, url, status, max_modules, registered_at, last_heartbeat_at, generation, assignment, reported",
    status=NodeStatus,
    max_modules=int,
    registered_at=dt,
    last_heartbeat_at=dt_or_none,
    generation=int,
    assignment=json.loads,
    reported=json.loads,
)
