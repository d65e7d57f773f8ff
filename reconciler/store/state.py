"""The state store: the control plane's memory of modules, nodes, rollouts, revisions, approvals,
interfaces and its audit log, in SQLite (embedded default) or PostgreSQL (production).

Who uses it: the registry writes modules; the Git source records revisions and approvals; the
executor publishes node assignments and records rollout progress; heartbeats land on nodes; the API
reads everything. The methods are synchronous and thread-safe (a small connection pool): async code
calls them through `asyncio.to_thread`. Every method is one transaction.

    store = open_state_store(data_dir=Path("data"))            # SQLite, data/state.db
    store = open_state_store(database_url="postgresql://...")  # PostgreSQL
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from reconciler.store import dialect as dialects
from reconciler.store.dialect import Connection, Dialect
from reconciler.store.errors import (
    BackendError,
    ConflictError,
    ModuleConflictError,
    SchemaTooNewError,
    StaleRecordError,
    StoreConfigError,
)
from reconciler.store.lease import Lease
from reconciler.store.migrations import MIGRATIONS, Migration
from reconciler.store.records import (
    ApprovalRecord,
    AuditEntry,
    BuildInfo,
    ExportRef,
    ImportRef,
    InterfaceRecord,
    JsonObject,
    ModuleRecord,
    NodeRecord,
    RevisionRecord,
    RolloutRecord,
    RolloutStepRecord,
)

Clock = Callable[[], datetime]


class SharedHeartbeat(NamedTuple):
    """A heartbeat as a replica writes it to a shared store (`StateStore.record_shared_heartbeat`)."""

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


_T = TypeVar("_T")
STATE_FILE = "state.db"


def utcnow() -> datetime:
    return datetime.now(UTC)


def open_state_store(
    *, database_url: str | None = None, data_dir: Path | None = None, clock: Clock = utcnow
) -> StateStore:
    """The store the command line asks for, migrated: `--database-url` (postgresql:// or
    sqlite:PATH) wins, else SQLite at `<data-dir>/state.db`."""
    store = connect_state_store(database_url=database_url, data_dir=data_dir, clock=clock)
    store.migrate()
    return store


def connect_state_store(
    *, database_url: str | None = None, data_dir: Path | None = None, clock: Clock = utcnow
) -> StateStore:
    """As `open_state_store`, without running migrations."""
    if database_url:
        if database_url.startswith("sqlite:"):
            found = dialects.sqlite(Path(database_url.removeprefix("sqlite:").removeprefix("//")))
        else:
            found = dialects.postgresql(database_url)
    elif data_dir is not None:
        found = dialects.sqlite(data_dir / STATE_FILE)
    else:
        raise StoreConfigError("a state store needs --data-dir or --database-url")
    return StateStore(found, clock=clock)


class _Tx:
    """One open transaction: `?`-style queries run in the dialect's style."""

    def __init__(self, conn: Connection, dialect: Dialect) -> None:
        self._conn = conn
        self._dialect = dialect

    def run(self, query: str, *params: Any) -> int:
        return self._conn.execute(self._dialect.sql(query), params).rowcount

    def one(self, query: str, *params: Any) -> Any:
        return self._conn.execute(self._dialect.sql(query), params).fetchone()

    def all(self, query: str, *params: Any) -> list[Any]:
        return self._conn.execute(self._dialect.sql(query), params).fetchall()


class StateStore:
    """One schema, one set of queries, over the `Dialect` given (see `open_state_store`)."""

    def __init__(self, dialect: Dialect, *, clock: Clock = utcnow) -> None:
        self.dialect = dialect
        self._clock = clock
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"StateStore({self.dialect.description})"

    # -- plumbing -------------------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self.dialect.connect()
        try:
            yield conn
        except Exception:
            # A failed connection must not go back to the pool; a healthy one can, but telling
            # them apart is driver-specific, and opening a connection again is cheap.
            conn.close()
            raise
        with self._lock:
            if self._closed:
                conn.close()
            else:
                self._idle.append(conn)

    @contextmanager
    def _tx(self, *, write: bool) -> Iterator[_Tx]:
        try:
            with self._connection() as conn:
                conn.execute(self.dialect.begin_write if write else self.dialect.begin_read, ())
                try:
                    yield _Tx(conn, self.dialect)
                except BaseException:
                    with suppress(*self.dialect.driver_errors):
                        conn.execute("ROLLBACK", ())
                    raise
                conn.execute("COMMIT", ())
        except self.dialect.driver_errors as exc:
            raise BackendError(f"{self.dialect.description}: {str(exc).strip()}") from exc

    def close(self) -> None:
        """Close pooled connections; the store must not be used afterwards."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def migrate(self) -> list[int]:
        """Apply the migrations this database lacks; returns the versions applied (often none).

        Safe to run twice and from several processes at once: one transaction, under a lock.
        """
        latest = MIGRATIONS[-1].version
        with self._tx(write=True) as tx:
            if self.dialect.migration_lock:
                tx.all(self.dialect.migration_lock)
            tx.run(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            done = {row[0] for row in tx.all("SELECT version FROM schema_migrations")}
            if done and max(done) > latest:
                raise SchemaTooNewError(
                    f"{self.dialect.description} has schema version {max(done)}; this hotswap knows "
                    f"up to {latest}: upgrade hotswap"
                )
            applied = []
            for migration in MIGRATIONS:
                if migration.version not in done:
                    self._apply(tx, migration)
                    applied.append(migration.version)
            return applied

    def _apply(self, tx: _Tx, migration: Migration) -> None:
        for statement in migration.statements:
            tx.run(statement.replace("{autoid}", self.dialect.autoid))
        for statement in migration.dialect_statements.get(self.dialect.name, ()):
            tx.run(statement)
        tx.run(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            migration.version,
            migration.name,
            _ts(self._clock()),
        )

    def try_lease(self, name: str) -> Lease | None:
        """Leadership among replicas: a `Lease` if this process now holds `name`, else None (another
        process holds it). It lasts until released or until this process dies (see lease.py)."""
        failures: tuple[type[Exception], ...] = (*self.dialect.driver_errors, OSError)
        try:
            return self.dialect.try_lease(name)
        except failures as exc:
            raise BackendError(f"{self.dialect.description}: lease {name!r}: {str(exc).strip()}") from exc

    def schema_version(self) -> int:
        with self._tx(write=False) as tx:
            row = tx.one("SELECT MAX(version) FROM schema_migrations")
            return int(row[0] or 0)

    # -- modules --------------------------------------------------------------------------------

    def add_module(self, record: ModuleRecord) -> tuple[ModuleRecord, bool]:
        """Insert a module version; returns (the stored record, whether it was inserted now).

        The same id with the same digest is a no-op returning the stored record; the same id with a
        different digest raises `ModuleConflictError`. Concurrent callers end with exactly one row.
        """
        with self._tx(write=True) as tx:
            inserted = tx.run(
                f"INSERT INTO modules ({_MODULE_COLUMNS}) VALUES ({_marks(_MODULE_COLUMNS)}) ON CONFLICT DO NOTHING",
                *_module_row(record),
            )
            stored = _module(tx.one(f"SELECT {_MODULE_COLUMNS} FROM modules WHERE id = ?", record.id))
        if stored is None:  # the (name, version) pair exists under another id: cannot happen with our ids
            raise ConflictError(f"module {record.name} {record.version} is already registered under another id")
        if stored.digest != record.digest:
            raise ModuleConflictError(record.id, stored.digest, record.digest)
        return stored, inserted == 1

    def get_module(self, module_id: str) -> ModuleRecord | None:
        with self._tx(write=False) as tx:
            return _module(tx.one(f"SELECT {_MODULE_COLUMNS} FROM modules WHERE id = ?", module_id))

    def list_modules(self, name: str | None = None) -> list[ModuleRecord]:
        """Every module version (or those of one module name), by name then registration time."""
        query = f"SELECT {_MODULE_COLUMNS} FROM modules"
        with self._tx(write=False) as tx:
            rows = (
                tx.all(f"{query} WHERE name = ? ORDER BY created_at, id", name)
                if name is not None
                else tx.all(f"{query} ORDER BY name, created_at, id")
            )
        return [m for m in map(_module, rows) if m is not None]

    def modules_with_digest(self, digest: str) -> list[ModuleRecord]:
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT {_MODULE_COLUMNS} FROM modules WHERE digest = ? ORDER BY id", digest)
        return [m for m in map(_module, rows) if m is not None]

    def delete_module(self, module_id: str) -> bool:
        """Remove a module version's row; returns whether it existed. The caller checks use first."""
        with self._tx(write=True) as tx:
            return tx.run("DELETE FROM modules WHERE id = ?", module_id) == 1

    # -- nodes ----------------------------------------------------------------------------------

    def upsert_node(self, node: NodeRecord) -> NodeRecord:
        """Register a node or update its region, url, status and capacity (a re-registering node
        keeps its generation, assignment and report)."""
        now = _ts(self._clock())
        with self._tx(write=True) as tx:
            tx.run(
                "INSERT INTO nodes (id, region, url, status, max_modules, registered_at, last_heartbeat_at, "
                "generation, assignment, reported) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET region = excluded.region, url = excluded.url, "
                "status = excluded.status, max_modules = excluded.max_modules",
                node.id,
                node.region,
                node.url,
                node.status,
                node.max_modules,
                _ts(node.registered_at) if node.registered_at else now,
                _ts_or_none(node.last_heartbeat_at),
                node.generation,
                _json(node.assignment),
                _json(node.reported),
            )
            return _required(_node(tx.one(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE id = ?", node.id)))

    def get_node(self, node_id: str) -> NodeRecord | None:
        with self._tx(write=False) as tx:
            return _node(tx.one(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE id = ?", node_id))

    def list_nodes(self, region: str | None = None) -> list[NodeRecord]:
        query = f"SELECT {_NODE_COLUMNS} FROM nodes"
        with self._tx(write=False) as tx:
            rows = (
                tx.all(f"{query} WHERE region = ? ORDER BY id", region)
                if region is not None
                else tx.all(f"{query} ORDER BY id")
            )
        return [n for n in map(_node, rows) if n is not None]

    def set_node_status(self, node_id: str, status: str) -> bool:
        with self._tx(write=True) as tx:
            return tx.run("UPDATE nodes SET status = ? WHERE id = ?", status, node_id) == 1

    def record_heartbeat(self, node_id: str, reported: JsonObject, at: datetime | None = None) -> bool:
        """Store what a node says it runs and when it said so; False for an unknown node."""
        return self.record_heartbeats([(node_id, reported, at or self._clock())])[0]

    def record_heartbeats(self, beats: Sequence[tuple[str, JsonObject, datetime]]) -> list[bool]:
        """`record_heartbeat` for each (node id, reported, at) in ONE transaction: all or none."""
        with self._tx(write=True) as tx:
            return [tx.run(_HEARTBEAT, _json(reported), _ts(at), node_id) == 1 for node_id, reported, at in beats]

    def publish_assignment(self, node_id: str, assignment: JsonObject) -> int | None:
        """Replace a node's module table, bumping its generation; returns the new generation, or
        None for an unknown node. Publishing the same table again still bumps (callers compare first)."""
        return self.publish_assignments([(node_id, assignment)])[0]

    def publish_assignments(self, tables: Sequence[tuple[str, JsonObject]]) -> list[int | None]:
        """`publish_assignment` for each (node id, assignment) in ONE transaction: all or none."""
        with self._tx(write=True) as tx:
            rows = [tx.one(_PUBLISH, _json(assignment), node_id) for node_id, assignment in tables]
        return [int(row[0]) if row else None for row in rows]

    def delete_node(self, node_id: str) -> bool:
        with self._tx(write=True) as tx:
            return tx.run("DELETE FROM nodes WHERE id = ?", node_id) == 1

    def get_nodes(self, node_ids: Iterable[str]) -> list[NodeRecord]:
        """The nodes among `node_ids` that exist, by id."""
        wanted = sorted(set(node_ids))
        if not wanted:
            return []
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE id IN ({_marks(wanted)}) ORDER BY id", *wanted)
        return [n for n in map(_node, rows) if n is not None]

    # -- several replicas on one database (reconciler.leader) ------------------------------------

    def namespace(self) -> str:
        """What tells this installation apart from others in the same database server: the schema
        on PostgreSQL (advisory locks and NOTIFY channels are per database, not per schema), "" on SQLite."""
        if self.dialect.name != "postgresql":
            return ""
        with self._tx(write=False) as tx:
            return str(tx.one("SELECT current_schema()")[0])

    def notify(self, channel: str, payloads: Sequence[str]) -> None:
        """Tell the listeners of `channel` (PostgreSQL NOTIFY, one per payload, sent at commit); nothing
        on SQLite, which serves one process."""
        if self.dialect.name != "postgresql" or not payloads:
            return
        with self._tx(write=True) as tx:
            for payload in payloads:
                tx.one("SELECT pg_notify(?, ?)", channel, payload)

    def record_shared_heartbeat(self, beat: SharedHeartbeat) -> bool:
        """`record_heartbeat` and the heartbeat's metric deltas in one transaction; False (nothing
        written) for an unknown node."""
        return self.record_shared_heartbeats([beat])[0]

    def record_shared_heartbeats(self, beats: Sequence[SharedHeartbeat]) -> list[bool]:
        """`record_shared_heartbeat` for each in ONE transaction: all or none. A replica at thousands
        of nodes must not spend a commit per heartbeat: its queue grows, heartbeats reach the leader
        late, and the leader takes nodes for lost."""
        heard: list[bool] = []
        with self._tx(write=True) as tx:
            for beat in beats:
                found = tx.run(_HEARTBEAT, _json(beat.reported), _ts(beat.at), beat.node_id) == 1
                heard.append(found)
                if found and beat.metrics:
                    tx.run(
                        "INSERT INTO metric_deltas (replica, node_id, region, at, metrics) VALUES (?, ?, ?, ?, ?)",
                        beat.replica,
                        beat.node_id,
                        beat.region,
                        _ts(beat.at),
                        _json(beat.metrics),
                    )
        return heard

    def metric_deltas_since(self, since: datetime, *, exclude_replica: str = "") -> list[MetricDelta]:
        """Metric deltas received at or after `since` by replicas other than `exclude_replica`, by time."""
        with self._tx(write=False) as tx:
            rows = tx.all(
                "SELECT seq, replica, node_id, region, at, metrics FROM metric_deltas "
                "WHERE at >= ? AND replica <> ? ORDER BY at, seq",
                _ts(since),
                exclude_replica,
            )
        return [MetricDelta(int(r[0]), r[1], r[2], r[3], _dt(r[4]), json.loads(r[5])) for r in rows]

    def prune_metric_deltas(self, before: datetime) -> int:
        """Forget metric deltas received before `before`; returns how many."""
        with self._tx(write=True) as tx:
            return tx.run("DELETE FROM metric_deltas WHERE at < ?", _ts(before))

    # -- rollouts -------------------------------------------------------------------------------

    def create_rollout(self, rollout: RolloutRecord) -> RolloutRecord:
        """Insert a new rollout at generation 1; an existing id raises `ConflictError`."""
        now = self._clock()
        created = _replace_rollout(
            rollout,
            created_at=rollout.created_at or now,
            updated_at=now,
            generation=1,
        )
        with self._tx(write=True) as tx:
            inserted = tx.run(
                f"INSERT INTO rollouts ({_ROLLOUT_COLUMNS}) VALUES ({_marks(_ROLLOUT_COLUMNS)}) ON CONFLICT DO NOTHING",
                *_rollout_row(created),
            )
        if inserted != 1:
            raise ConflictError(f"rollout {rollout.id!r} already exists")
        return created

    def update_rollout(self, rollout: RolloutRecord) -> RolloutRecord:
        """Write a rollout read at `rollout.generation`; returns it at the next generation.

        Raises `StaleRecordError` when someone else updated it since (compare-and-set), so two reconcilers
        never both advance a step.
        """
        updated = _replace_rollout(rollout, updated_at=self._clock(), generation=rollout.generation + 1)
        row = _rollout_row(updated)
        assignments = ", ".join(f"{column} = ?" for column in _ROLLOUT_COLUMNS.split(", ")[1:])
        with self._tx(write=True) as tx:
            changed = tx.run(
                f"UPDATE rollouts SET {assignments} WHERE id = ? AND generation = ?",
                *row[1:],
                rollout.id,
                rollout.generation,
            )
        if changed != 1:
            raise StaleRecordError("rollout", rollout.id, rollout.generation)
        return updated

    def get_rollout(self, rollout_id: str) -> RolloutRecord | None:
        with self._tx(write=False) as tx:
            return _rollout(tx.one(f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE id = ?", rollout_id))

    def list_rollouts(self, module: str | None = None, states: Iterable[str] | None = None) -> list[RolloutRecord]:
        """Rollouts, oldest first; of one module and/or in the given states only."""
        clauses: list[str] = []
        params: list[Any] = []
        if module is not None:
            clauses.append("module = ?")
            params.append(module)
        if states is not None:
            wanted = sorted(set(states))
            if not wanted:
                return []
            clauses.append(f"state IN ({_marks(wanted)})")
            params.extend(wanted)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._tx(write=False) as tx:
            rows = tx.all(f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts{where} ORDER BY created_at, id", *params)
        return [r for r in map(_rollout, rows) if r is not None]

    def append_rollout_step(self, step: RolloutStepRecord) -> RolloutStepRecord:
        """Add an event to a rollout's history; returns it with its sequence number."""
        with self._tx(write=True) as tx:
            row = tx.one(
                "INSERT INTO rollout_steps (rollout_id, step, event, at, message, analysis) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING seq",
                step.rollout_id,
                step.step,
                step.event,
                _ts(step.at),
                step.message,
                _json(step.analysis),
            )
        return RolloutStepRecord(
            rollout_id=step.rollout_id,
            step=step.step,
            event=step.event,
            at=step.at,
            message=step.message,
            analysis=step.analysis,
            seq=int(row[0]),
        )

    def rollout_steps(self, rollout_id: str, limit: int | None = None) -> list[RolloutStepRecord]:
        """A rollout's history in order (the last `limit` events when given)."""
        with self._tx(write=False) as tx:
            rows = tx.all(
                "SELECT seq, rollout_id, step, event, at, message, analysis FROM rollout_steps "
                "WHERE rollout_id = ? ORDER BY seq DESC",
                rollout_id,
            )
        rows = rows[:limit] if limit is not None else rows
        return [
            RolloutStepRecord(
                seq=int(r[0]),
                rollout_id=r[1],
                step=int(r[2]),
                event=r[3],
                at=_dt(r[4]),
                message=r[5],
                analysis=json.loads(r[6]),
            )
            for r in reversed(rows)
        ]

    # -- revisions ------------------------------------------------------------------------------

    def record_revision_seen(
        self, sha: str, *, verified: bool, message: str = "", at: datetime | None = None
    ) -> RevisionRecord:
        """Note a Git revision the source looked at (first sight time kept; verdict updated)."""
        with self._tx(write=True) as tx:
            tx.run(
                "INSERT INTO revisions (sha, seen_at, verified, message) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (sha) DO UPDATE SET verified = excluded.verified, message = excluded.message",
                sha,
                _ts(at or self._clock()),
                int(verified),
                message,
            )
            return _required(_revision(tx.one(f"SELECT {_REVISION_COLUMNS} FROM revisions WHERE sha = ?", sha)))

    def mark_revision_applied(self, sha: str, at: datetime | None = None) -> bool:
        """Record that the reconciler applied this revision; False when it was never seen."""
        with self._tx(write=True) as tx:
            return tx.run("UPDATE revisions SET applied_at = ? WHERE sha = ?", _ts(at or self._clock()), sha) == 1

    def get_revision(self, sha: str) -> RevisionRecord | None:
        with self._tx(write=False) as tx:
            return _revision(tx.one(f"SELECT {_REVISION_COLUMNS} FROM revisions WHERE sha = ?", sha))

    def last_seen_revision(self) -> RevisionRecord | None:
        with self._tx(write=False) as tx:
            return _revision(tx.one(f"SELECT {_REVISION_COLUMNS} FROM revisions ORDER BY seen_at DESC, sha LIMIT 1"))

    def last_applied_revision(self) -> RevisionRecord | None:
        with self._tx(write=False) as tx:
            return _revision(
                tx.one(
                    f"SELECT {_REVISION_COLUMNS} FROM revisions WHERE applied_at IS NOT NULL "
                    "ORDER BY applied_at DESC, sha LIMIT 1"
                )
            )

    # -- approvals ------------------------------------------------------------------------------

    def record_approval(self, approval: ApprovalRecord) -> bool:
        """Store an approval found in Git; False when this commit already approved it for that principal."""
        with self._tx(write=True) as tx:
            return (
                tx.run(
                    "INSERT INTO approvals (commit_sha, module, version, principal, roles, kind, found_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    approval.commit,
                    approval.module,
                    approval.version,
                    approval.principal,
                    _json(list(approval.roles)),
                    approval.kind,
                    _ts(approval.found_at),
                )
                == 1
            )

    def approvals_for(self, module: str, version: str) -> list[ApprovalRecord]:
        with self._tx(write=False) as tx:
            rows = tx.all(
                "SELECT commit_sha, module, version, principal, roles, kind, found_at FROM approvals "
                "WHERE module = ? AND version = ? ORDER BY found_at, commit_sha, principal",
                module,
                version,
            )
        return [
            ApprovalRecord(
                commit=r[0],
                module=r[1],
                version=r[2],
                principal=r[3],
                roles=tuple(json.loads(r[4])),
                kind=r[5],
                found_at=_dt(r[6]),
            )
            for r in rows
        ]

    # -- interfaces -----------------------------------------------------------------------------

    def put_interface(self, interface: InterfaceRecord) -> InterfaceRecord:
        """Insert or replace an interface package (creation time kept)."""
        created = interface.created_at or self._clock()
        with self._tx(write=True) as tx:
            tx.run(
                f"INSERT INTO interfaces ({_INTERFACE_COLUMNS}) VALUES ({_marks(_INTERFACE_COLUMNS)}) "
                "ON CONFLICT (id) DO UPDATE SET name = excluded.name, package = excluded.package, "
                "version = excluded.version, wasi = excluded.wasi, wit = excluded.wit, digest = excluded.digest, "
                "status = excluded.status, approved_by = excluded.approved_by",
                interface.id,
                interface.name,
                interface.package,
                interface.version,
                interface.wasi,
                interface.wit,
                interface.digest,
                interface.status,
                interface.approved_by,
                _ts(created),
            )
            return _required(
                _interface(tx.one(f"SELECT {_INTERFACE_COLUMNS} FROM interfaces WHERE id = ?", interface.id))
            )

    def get_interface(self, interface_id: str) -> InterfaceRecord | None:
        with self._tx(write=False) as tx:
            return _interface(tx.one(f"SELECT {_INTERFACE_COLUMNS} FROM interfaces WHERE id = ?", interface_id))

    def list_interfaces(self, name: str | None = None) -> list[InterfaceRecord]:
        query = f"SELECT {_INTERFACE_COLUMNS} FROM interfaces"
        with self._tx(write=False) as tx:
            rows = (
                tx.all(f"{query} WHERE name = ? ORDER BY id", name)
                if name is not None
                else tx.all(f"{query} ORDER BY id")
            )
        return [i for i in map(_interface, rows) if i is not None]

    # -- audit log ------------------------------------------------------------------------------

    def append_audit(
        self, actor: str, action: str, subject: str, detail: JsonObject | None = None, at: datetime | None = None
    ) -> AuditEntry:
        """Add a line to the audit log (there is no way to change or remove one)."""
        when = at or self._clock()
        with self._tx(write=True) as tx:
            row = tx.one(
                "INSERT INTO audit_log (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?) RETURNING seq",
                _ts(when),
                actor,
                action,
                subject,
                _json(detail or {}),
            )
        return AuditEntry(seq=int(row[0]), at=when, actor=actor, action=action, subject=subject, detail=detail or {})

    def audit_log(self, *, subject: str | None = None, after: int = 0, limit: int = 100) -> list[AuditEntry]:
        """Audit lines after sequence number `after`, oldest first, at most `limit`."""
        query = "SELECT seq, at, actor, action, subject, detail FROM audit_log WHERE seq > ?"
        with self._tx(write=False) as tx:
            rows = (
                tx.all(f"{query} AND subject = ? ORDER BY seq LIMIT ?", after, subject, limit)
                if subject is not None
                else tx.all(f"{query} ORDER BY seq LIMIT ?", after, limit)
            )
        return [
            AuditEntry(seq=int(r[0]), at=_dt(r[1]), actor=r[2], action=r[3], subject=r[4], detail=json.loads(r[5]))
            for r in rows
        ]


# -- rows <-> records ----------------------------------------------------------------------------

_MODULE_COLUMNS = (
    "id, name, version, digest, size, compressed_size, imports, exports, wasi_imports, capabilities, "
    "component, memory_min_pages, build_commit, build_timestamp, created_at"
)
_NODE_COLUMNS = (
    "id, region, url, status, max_modules, registered_at, last_heartbeat_at, generation, assignment, reported"
)
_ROLLOUT_COLUMNS = (
    "id, module, from_version, from_digest, to_version, to_digest, strategy, state, step, revision, "
    "message, detail, created_at, updated_at, step_started_at, generation"
)
_REVISION_COLUMNS = "sha, seen_at, verified, message, applied_at"
_INTERFACE_COLUMNS = "id, name, package, version, wasi, wit, digest, status, approved_by, created_at"


_HEARTBEAT = "UPDATE nodes SET reported = ?, last_heartbeat_at = ? WHERE id = ?"
_PUBLISH = "UPDATE nodes SET assignment = ?, generation = generation + 1 WHERE id = ? RETURNING generation"


def _marks(columns: str | Sequence[str]) -> str:
    count = len(columns.split(",")) if isinstance(columns, str) else len(columns)
    return ", ".join("?" * count)


def _ts(moment: datetime) -> str:
    """Fixed-width UTC text, so that text order is time order in both databases."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ts_or_none(moment: datetime | None) -> str | None:
    return _ts(moment) if moment is not None else None


def _dt(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _dt_or_none(text: str | None) -> datetime | None:
    return _dt(text) if text is not None else None


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _required(value: _T | None) -> _T:
    assert value is not None, "a row written in this transaction is missing"
    return value


def _module_row(m: ModuleRecord) -> tuple[Any, ...]:
    return (
        m.id,
        m.name,
        m.version,
        m.digest,
        m.size,
        m.compressed_size,
        _json([[i.module, i.name, i.kind] for i in m.imports]),
        _json([[e.name, e.kind, e.signature, e.convention] for e in m.exports]),
        _json(list(m.wasi_imports)),
        _json(list(m.capabilities)),
        int(m.component),
        m.memory_min_pages,
        m.build.commit,
        m.build.timestamp,
        _ts(m.created_at),
    )


def _module(row: Any) -> ModuleRecord | None:
    if row is None:
        return None
    return ModuleRecord(
        id=row[0],
        name=row[1],
        version=row[2],
        digest=row[3],
        size=int(row[4]),
        compressed_size=int(row[5]),
        imports=tuple(ImportRef(*i) for i in json.loads(row[6])),
        exports=tuple(ExportRef(*e) for e in json.loads(row[7])),
        wasi_imports=tuple(json.loads(row[8])),
        capabilities=tuple(json.loads(row[9])),
        component=bool(row[10]),
        memory_min_pages=int(row[11]),
        build=BuildInfo(commit=row[12], timestamp=row[13]),
        created_at=_dt(row[14]),
    )


def _node(row: Any) -> NodeRecord | None:
    if row is None:
        return None
    return NodeRecord(
        id=row[0],
        region=row[1],
        url=row[2],
        status=row[3],
        max_modules=int(row[4]),
        registered_at=_dt(row[5]),
        last_heartbeat_at=_dt_or_none(row[6]),
        generation=int(row[7]),
        assignment=json.loads(row[8]),
        reported=json.loads(row[9]),
    )


def _replace_rollout(r: RolloutRecord, **changes: Any) -> RolloutRecord:
    return replace(r, **changes)


def _rollout_row(r: RolloutRecord) -> tuple[Any, ...]:
    assert r.created_at is not None and r.updated_at is not None
    return (
        r.id,
        r.module,
        r.from_version,
        r.from_digest,
        r.to_version,
        r.to_digest,
        r.strategy,
        r.state,
        r.step,
        r.revision,
        r.message,
        _json(r.detail),
        _ts(r.created_at),
        _ts(r.updated_at),
        _ts_or_none(r.step_started_at),
        r.generation,
    )


def _rollout(row: Any) -> RolloutRecord | None:
    if row is None:
        return None
    return RolloutRecord(
        id=row[0],
        module=row[1],
        from_version=row[2],
        from_digest=row[3],
        to_version=row[4],
        to_digest=row[5],
        strategy=row[6],
        state=row[7],
        step=int(row[8]),
        revision=row[9],
        message=row[10],
        detail=json.loads(row[11]),
        created_at=_dt(row[12]),
        updated_at=_dt(row[13]),
        step_started_at=_dt_or_none(row[14]),
        generation=int(row[15]),
    )


def _revision(row: Any) -> RevisionRecord | None:
    if row is None:
        return None
    return RevisionRecord(
        sha=row[0], seen_at=_dt(row[1]), verified=bool(row[2]), message=row[3], applied_at=_dt_or_none(row[4])
    )


def _interface(row: Any) -> InterfaceRecord | None:
    if row is None:
        return None
    return InterfaceRecord(
        id=row[0],
        name=row[1],
        package=row[2],
        version=row[3],
        wasi=row[4],
        wit=row[5],
        digest=row[6],
        status=row[7],
        approved_by=row[8],
        created_at=_dt(row[9]),
    )
