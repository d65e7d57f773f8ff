"""Edge nodes as the control plane knows them: registration, heartbeats (one, a batch, or shared
between replicas with their metric deltas) and the module table published to each node.

Where it sits: the node hub (reconciler.apply.nodes) registers nodes, records heartbeats and publishes
assignments here, in batches of one transaction each; the leader (reconciler.apply.leader) reads other
replicas' nodes and metric deltas from it. Consumers take the narrow `NodeStore` Protocol;
`SqlNodes` is its implementation over a `Database` (`StateStore` offers the same methods too).

A table is stored once per content. The many nodes of a region run the same table, so a node's row
names its table (`table_sha`, the SHA-256 of its canonical JSON) and the table is one row of
`node_tables`. A pass that gives 5,000 nodes a new table writes a few tables and 5,000 names, not 5,000
copies of 4 KB each (20 MB with PostgreSQL's TOAST and WAL), and a replica that reads those rows back
parses each distinct table once: records read share one object per table (never change it). A table
no row names is deleted once no write has named it for TABLE_KEEP (`prune_tables`; publishes do it
every TABLE_PRUNE_EVERY, after their own commit): a write naming it meanwhile sets its `used_at`
under a row lock. On PostgreSQL the prune skips the rows a write holds (`FOR UPDATE SKIP LOCKED`)
rather than wait for them, and rechecks `used_at` on a row a write changed since its snapshot; so it
never deletes a table a write names, and never holds a table's row while it waits for another (a
prune waiting inside a publish, which holds nodes' rows, deadlocked with a publish holding the table
and waiting for those rows). The replicas' clocks must agree within TABLE_KEEP.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol, TypeVar, cast

from edge.nodeapi import NodeStatus
from edge.protocol import MAX_GENERATION
from reconciler.store.database import Database, Table, Tx
from reconciler.store.errors import StoreError
from reconciler.store.records import JsonObject, NodeRecord
from reconciler.store.rows import content_named, dt, dt_or_none, marks, required, to_json, ts, ts_or_none

__all__ = ["MetricDelta", "NodeStore", "SharedHeartbeat", "SqlNodes"]

T = TypeVar("T")
log = logging.getLogger(__name__)
# Where a registration may start or renumber a row at most: a node token holder can register with any
# generation a node takes (MAX_GENERATION); the 2**32 publishes left above this keep every table the
# control plane numbers after it within that bound too.
MAX_ROW_GENERATION = MAX_GENERATION - 2**32
TABLE_KEEP = timedelta(hours=1)  # a table no row names is kept this long after a write last named it
TABLE_PRUNE_EVERY = timedelta(minutes=10)  # publishes delete the tables past TABLE_KEEP this often
TABLE_CACHE = 4096  # parsed tables a store keeps by name (a fleet runs a few per region)
READ_TRIES = 3  # reads of rows whose table was deleted between the two statements of a read
# The table of a node just registered: stored by migration 8 and never deleted, so a registration
# writes no table row (thousands of registrations at once would queue on that one row's lock).
EMPTY_TABLE = content_named({})


class DeletedNode(NamedTuple):
    """What is kept of a deleted node's row (`SqlNodes.delete_node`): its last generation and table."""

    id: str
    generation: int
    table_sha: str  # its table's name in node_tables
    deleted_at: datetime


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
        self._tables: dict[str, JsonObject] = {}  # node_tables' bodies by name, parsed: shared by records
        self._pruned: datetime | None = None  # when a publish last deleted the tables no row names

    def upsert_node(self, node: NodeRecord) -> NodeRecord:
        """Register a node or update its region, url, status and capacity. A re-registering node keeps
        its row's assignment and report, and its generation unless the node has applied a later one
        (a store restored from a backup, say): then the row numbers on past the node's, so the node
        takes its table again as a newer one (a node pinned to the control plane's key refuses a
        table numbered at or below the one it applied: edge.agent). A row starts, or is renumbered,
        at most at MAX_ROW_GENERATION; but a row made for a node that was deleted starts no lower than
        the deleted row's generation (`delete_node`), with its table: the control plane numbered that
        one itself, and the node may have applied it (and under that number, no other table is ever
        given to it)."""
        now = ts(self.db.clock())
        sha, body = content_named(node.assignment)
        with self.db.tx(write=True) as tx:
            if sha != EMPTY_TABLE[0]:
                self._put_tables(tx, {sha: (body, node.assignment)})
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
                    min(node.generation, MAX_ROW_GENERATION),
                    sha,
                    to_json(node.reported),
                ),
                update=("region", "url", "status", "max_modules"),
            )
            row = required(_NODES.get(tx, node.id))
            deleted = tx.one("SELECT generation, table_sha FROM deleted_node_generations WHERE id = ?", node.id)
            if deleted is not None:  # the row was made just now: it takes the deleted row's numbering over
                tx.run("DELETE FROM deleted_node_generations WHERE id = ?", node.id)
                if deleted[0] > row.generation:  # and its table: its number is never another table's
                    tx.run("UPDATE nodes SET generation = ?, table_sha = ? WHERE id = ?", *deleted, node.id)
                    row = required(_NODES.get(tx, node.id))
            renumbered = min(node.generation + 1, MAX_ROW_GENERATION)  # a token holder's 2**53 too
            if node.generation > row.generation and renumbered > row.generation:
                tx.run("UPDATE nodes SET generation = ? WHERE id = ?", renumbered, node.id)
                row = required(_NODES.get(tx, node.id))
            return required(self._with_tables(tx, [row]))[0]

    def get_node(self, node_id: str) -> NodeRecord | None:
        found = self.db.read(self._read, "WHERE id = ?", node_id)
        return found[0] if found else None

    def get_nodes(self, node_ids: Iterable[str]) -> list[NodeRecord]:
        """The nodes among `node_ids` that exist, by id."""
        wanted = sorted(set(node_ids))
        if not wanted:
            return []
        return self.db.read(self._read, f"WHERE id IN ({marks(wanted)}) ORDER BY id", *wanted)

    def list_nodes(self, region: str | None = None) -> list[NodeRecord]:
        if region is None:
            return self.db.read(self._read, "ORDER BY id")
        return self.db.read(self._read, "WHERE region = ? ORDER BY id", region)

    def _read(self, tx: Tx, rest: str, *params: Any) -> list[NodeRecord]:
        """The records of `SELECT ... FROM nodes rest`, each with its table. A table deleted between
        the rows' read and the tables' (its row was given another meanwhile) reads the rows again."""
        for _ in range(READ_TRIES):
            found = self._with_tables(tx, _NODES.select(tx, rest, *params))
            if found is not None:
                return found
        raise StoreError(
            f"a read of nodes found a row naming a table that node_tables does not hold, {READ_TRIES} times "
            "in a row (deleted while read each time, or a row written by hand)"
        )

    def _with_tables(self, tx: Tx, rows: list[NodeRecord]) -> list[NodeRecord] | None:
        """`rows`, read with their table's name in `assignment`, with the table itself: from this
        store's cache, or read once per name. None when one is gone (`_read` reads again)."""
        names = {cast(str, row.assignment) for row in rows}
        found = {name: table for name in names if (table := self._tables.get(name)) is not None}
        missing = sorted(names - found.keys())
        for chunk in _chunks(missing):
            for name, body in tx.all(f"SELECT sha, body FROM node_tables WHERE sha IN ({marks(chunk)})", *chunk):
                found[name] = json.loads(body)
        if len(found) < len(names):
            return None
        self._remember({name: found[name] for name in missing})
        return [replace(row, assignment=found[cast(str, row.assignment)]) for row in rows]

    def _remember(self, tables: Mapping[str, JsonObject]) -> None:
        if not tables:
            return
        if len(self._tables) + len(tables) > TABLE_CACHE:  # a new fleet's worth: start again
            self._tables = {}
        self._tables.update(tables)

    def _put_tables(self, tx: Tx, tables: Mapping[str, tuple[str, JsonObject]]) -> None:
        """Store each table (name -> its JSON and itself) unless stored, and note it named now. In name
        order: two replicas writing overlapping sets lock the rows the same way."""
        now = ts(self.db.clock())
        rows = [(name, body, now) for name, (body, _) in sorted(tables.items())]
        for chunk in _chunks(rows):
            values, params = _values(chunk)
            tx.run(
                f"INSERT INTO node_tables (sha, body, used_at) {values} "
                "ON CONFLICT (sha) DO UPDATE SET used_at = excluded.used_at",
                *params,
            )
        self._remember({name: table for name, (_, table) in tables.items() if name not in self._tables})

    def prune_tables(self, before: datetime) -> int:
        """Delete the tables that no node's row names, nor a deleted node's, and that no write has
        named since `before` (never EMPTY_TABLE); returns how many."""
        with self.db.tx(write=True) as tx:
            return self._prune_tables(tx, before)

    def _prune_tables(self, tx: Tx, before: datetime) -> int:
        unnamed = (
            "SELECT sha FROM node_tables WHERE used_at < ? AND sha <> ? AND sha NOT IN (SELECT table_sha FROM nodes) "
            "AND sha NOT IN (SELECT table_sha FROM deleted_node_generations)"
        )
        if self.db.dialect.name == "postgresql":  # SQLite runs one write transaction at a time
            unnamed += " FOR UPDATE SKIP LOCKED"
        return tx.run(f"DELETE FROM node_tables WHERE sha IN ({unnamed})", ts(before), EMPTY_TABLE[0])

    def set_node_status(self, node_id: str, status: str) -> bool:
        with self.db.tx(write=True) as tx:
            return tx.run("UPDATE nodes SET status = ? WHERE id = ?", status, node_id) == 1

    def delete_node(self, node_id: str) -> bool:
        """Delete the node's row, keeping its generation for the row made if the node registers again
        (`upsert_node`); whether there was a row."""
        with self.db.tx(write=True) as tx:
            # Locked on PostgreSQL: a table published meanwhile waits, or is in what is kept.
            lock = " FOR UPDATE" if self.db.dialect.name == "postgresql" else ""
            found = tx.one(f"SELECT generation, table_sha FROM nodes WHERE id = ?{lock}", node_id)
            if found is None:
                return False
            deleted = (node_id, found[0], found[1], ts(self.db.clock()))
            _DELETED.upsert(tx, deleted, update=("generation", "table_sha", "deleted_at"))
            return tx.run("DELETE FROM nodes WHERE id = ?", node_id) == 1

    # -- heartbeats -----------------------------------------------------------------------------

    def record_heartbeat(self, node_id: str, reported: JsonObject, at: datetime | None = None) -> bool:
        """Store what a node says it runs and when it said so; False for an unknown node."""
        return self.record_heartbeats([(node_id, reported, at or self.db.clock())])[0]

    def record_heartbeats(self, beats: Sequence[tuple[str, JsonObject, datetime]]) -> list[bool]:
        """`record_heartbeat` for each (node id, reported, at) in ONE transaction: all or none."""
        with self.db.tx(write=True) as tx:
            found = self._heartbeats(tx, beats)
        return [node_id in found for node_id, _, _ in beats]

    def record_shared_heartbeat(self, beat: SharedHeartbeat) -> bool:
        """`record_heartbeat` and the heartbeat's metric deltas in one transaction; False (nothing
        written) for an unknown node."""
        return self.record_shared_heartbeats([beat])[0]

    def record_shared_heartbeats(self, beats: Sequence[SharedHeartbeat]) -> list[bool]:
        """`record_shared_heartbeat` for each in ONE transaction: all or none. A replica at thousands
        of nodes must not spend a commit per heartbeat: its queue grows, heartbeats reach the leader
        late, and the leader takes nodes for lost."""
        with self.db.tx(write=True) as tx:
            found = self._heartbeats(tx, [(b.node_id, b.reported, b.at) for b in beats])
            deltas = [
                (b.replica, b.node_id, b.region, ts(b.at), to_json(b.metrics))
                for b in beats
                if b.metrics and b.node_id in found
            ]
            for chunk in _chunks(deltas):
                values, params = _values(chunk)
                tx.run(f"INSERT INTO metric_deltas (replica, node_id, region, at, metrics) {values}", *params)
        return [b.node_id in found for b in beats]

    def _heartbeats(self, tx: Tx, beats: Sequence[tuple[str, JsonObject, datetime]]) -> dict[str, tuple[Any, ...]]:
        """Write each node's last heartbeat of `beats`, as writing them one by one in order leaves it;
        the returned rows of the nodes found, by id."""
        last = {node_id: (node_id, to_json(reported), ts(at)) for node_id, reported, at in beats}
        return self._update_from(tx, _HEARTBEATS, [last[node_id] for node_id in sorted(last)])

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
        """`publish_assignment` for each (node id, assignment) in ONE transaction: all or none. Each
        distinct table is stored once (the module docstring); the same object given for many nodes is
        encoded once."""
        ids = [node_id for node_id, _ in tables]
        named: dict[int, str] = {}  # id() of each table object -> its name
        distinct: dict[str, tuple[str, JsonObject]] = {}  # name -> its JSON and the table
        for _, table in tables:
            if id(table) not in named:
                name, body = content_named(table)
                named[id(table)], distinct[name] = name, (body, table)
        names = [named[id(table)] for _, table in tables]
        with self.db.tx(write=True) as tx:
            self._put_tables(tx, distinct)
            if len(set(ids)) < len(ids):  # a node twice: each of its tables bumps its generation, in order
                generations: list[int | None] = [None] * len(tables)
                self._lock(tx, ids)
                for i in _lock_order(ids):
                    row = tx.one(_PUBLISH, names[i], ids[i])
                    generations[i] = int(row[0]) if row else None
            else:
                found = self._update_from(tx, _PUBLISHES, list(zip(ids, names, strict=True)))
                generations = [int(found[node_id][1]) if node_id in found else None for node_id in ids]
        now = self.db.clock()
        if self._pruned is None or now - self._pruned >= TABLE_PRUNE_EVERY:
            self._pruned = now
            try:  # the tables are published: a failed prune is tried again at a later publish
                self.prune_tables(now - TABLE_KEEP)
            except StoreError as exc:
                self._pruned = None
                log.warning("could not delete the node tables no node names: %s", exc)
        return generations

    def _lock(self, tx: Tx, node_ids: Iterable[str]) -> None:
        """On PostgreSQL, lock the nodes' rows in node id order before a bulk write changes them (see
        `_lock_order`); SQLite locks the whole database for a write."""
        if self.db.dialect.name != "postgresql":
            return
        for chunk in _chunks(sorted(set(node_ids))):
            tx.all(f"SELECT id FROM nodes WHERE id IN ({marks(chunk)}) ORDER BY id FOR UPDATE", *chunk)

    def _update_from(self, tx: Tx, update: str, rows: Sequence[tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
        """Run `update` (an UPDATE of nodes FROM `{values}` AS v, each row's first value its node id,
        RETURNING the id first) over `rows`, BULK_ROWS rows a statement: a round trip for many rows,
        not one each. The rows it returned, by node id."""
        self._lock(tx, [row[0] for row in rows])
        found: dict[str, tuple[Any, ...]] = {}
        for chunk in _chunks(rows):
            values, params = _values(chunk)
            for returned in tx.all(update.format(values=f"({values})"), *params):
                found[returned[0]] = tuple(returned)
        return found


def _chunks(rows: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(rows), BULK_ROWS):
        yield rows[start : start + BULK_ROWS]


def _values(rows: Sequence[tuple[Any, ...]]) -> tuple[str, list[Any]]:
    """`VALUES (?, ?), (?, ?)...` for `rows`, and their values in that order."""
    return "VALUES " + ", ".join(f"({marks(row)})" for row in rows), [value for row in rows for value in row]


def _lock_order(node_ids: Sequence[str]) -> list[int]:
    """The positions of a batch's rows in node id order (stable: a node twice keeps its order): the
    order a table batch naming a node twice is written in, row by row. The row locks are taken before,
    by `SqlNodes._lock`, in the database's own order of ids (its collation's, which may differ from
    this one): every write of several nodes takes them that one way, so two replicas writing
    overlapping batches at once (heartbeats on one, tables on the other) wait for each other instead
    of deadlocking."""
    return sorted(range(len(node_ids)), key=node_ids.__getitem__)


_PUBLISH = "UPDATE nodes SET table_sha = ?, generation = generation + 1 WHERE id = ? RETURNING generation"
# The bulk writes: `{values}` is a VALUES list of (id, ...) rows, whose columns both back ends name
# column1, column2...
_HEARTBEATS = (
    "UPDATE nodes SET reported = v.column2, last_heartbeat_at = v.column3 FROM {values} AS v "
    "WHERE nodes.id = v.column1 RETURNING id"
)
_PUBLISHES = (
    "UPDATE nodes SET table_sha = v.column2, generation = generation + 1 FROM {values} AS v "
    "WHERE nodes.id = v.column1 RETURNING id, generation"
)
BULK_ROWS = 2000  # rows in one statement: at most 5 parameters each, far under SQLite's 32,766


_NODES = Table.of(
    "nodes",
    NodeRecord,
    "id, region, url, status, max_modules, registered_at, last_heartbeat_at, generation, table_sha, reported",
    renamed={"table_sha": "assignment"},  # read as the table's name; `SqlNodes._read` puts the table there
    status=NodeStatus,
    max_modules=int,
    registered_at=dt,
    last_heartbeat_at=dt_or_none,
    generation=int,
    reported=json.loads,
)
_DELETED = Table.of(
    "deleted_node_generations",
    DeletedNode,
    "id, generation, table_sha, deleted_at",
    generation=int,
    deleted_at=dt,
)
