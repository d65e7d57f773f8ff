"""The state store: the control plane's memory of modules, nodes, rollouts, revisions, approvals,
interfaces and its audit log, in SQLite (embedded default) or PostgreSQL (production).

Where it sits: `open_state_store` is where the command line gets its store. A `StateStore` owns one
`Database` (connections, transactions, dialect, migrations) and composes the stores of each
aggregate over it:

    store.modules     registered module versions        (store/modules.py,    ModuleStore)
    store.interfaces  WIT interface packages            (store/interfaces.py, InterfaceStore)
    store.nodes       nodes, heartbeats, assignments    (store/nodes.py,      NodeStore)
    store.rollouts    rollouts and their history        (store/rollouts.py,   RolloutStore)
    store.revisions   revisions seen/applied, approvals (store/revisions.py,  RevisionStore)
    store.audit       the append-only audit log         (store/audit.py,      AuditLog)
    store.conditions  each module's reported conditions (store/conditions.py, ConditionStore)

A consumer that needs one aggregate takes its narrow Protocol; the store's own methods delegate to
the aggregates, so a `StateStore` satisfies every one of those Protocols. The methods are
synchronous and thread-safe (a small connection pool): async code calls them through
`asyncio.to_thread`. Every method is one transaction.

    store = open_state_store(data_dir=Path("data"))            # SQLite, data/state.db
    store = open_state_store(database_url="postgresql://...")  # PostgreSQL
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path

from reconciler.store import dialect as dialects
from reconciler.store.audit import SqlAudit
from reconciler.store.conditions import ModuleConditions, SqlConditions
from reconciler.store.database import Clock, Database, Tx, utcnow
from reconciler.store.dialect import Connection, Dialect
from reconciler.store.errors import StoreConfigError
from reconciler.store.interfaces import SqlInterfaces
from reconciler.store.lease import Lease
from reconciler.store.modules import SqlModules
from reconciler.store.nodes import MetricDelta, SharedHeartbeat, SqlNodes
from reconciler.store.records import (
    ApprovalRecord,
    AuditEntry,
    InterfaceRecord,
    JsonObject,
    ModuleRecord,
    NodeRecord,
    RevisionRecord,
    RolloutRecord,
    RolloutStepRecord,
)
from reconciler.store.revisions import SqlRevisions
from reconciler.store.rollouts import SqlRollouts

__all__ = [
    "STATE_FILE",
    "Clock",
    "MetricDelta",
    "ModuleConditions",
    "SharedHeartbeat",
    "StateStore",
    "connect_state_store",
    "open_state_store",
    "utcnow",
]

STATE_FILE = "state.db"


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


class StateStore:
    """One `Database` over the `Dialect` given, and the aggregate stores over it (see the module
    docstring); the methods below delegate to those."""

    def __init__(self, dialect: Dialect, *, clock: Clock = utcnow) -> None:
        self.database = Database(dialect, clock=clock)
        self.dialect = dialect
        self.modules = SqlModules(self.database)
        self.interfaces = SqlInterfaces(self.database)
        self.nodes = SqlNodes(self.database)
        self.rollouts = SqlRollouts(self.database)
        self.revisions = SqlRevisions(self.database)
        self.audit = SqlAudit(self.database)
        self.conditions = SqlConditions(self.database)

    def __repr__(self) -> str:
        return f"StateStore({self.dialect.description})"

    # -- the database ---------------------------------------------------------------------------

    def _connection(self) -> AbstractContextManager[Connection]:
        return self.database.connection()

    def _tx(self, *, write: bool) -> AbstractContextManager[Tx]:
        return self.database.tx(write=write)

    def close(self) -> None:
        """Close pooled connections; the store must not be used afterwards."""
        self.database.close()

    def migrate(self) -> list[int]:
        """Apply the migrations this database lacks; returns the versions applied (often none)."""
        return self.database.migrate()

    def schema_version(self) -> int:
        return self.database.schema_version()

    def try_lease(self, name: str) -> Lease | None:
        """Leadership among replicas (see `Database.try_lease` and lease.py)."""
        return self.database.try_lease(name)

    def namespace(self) -> str:
        return self.database.namespace()

    def notify(self, channel: str, payloads: Sequence[str]) -> None:
        self.database.notify(channel, payloads)

    # -- modules and interfaces -----------------------------------------------------------------

    def add_module(self, record: ModuleRecord) -> tuple[ModuleRecord, bool]:
        return self.modules.add_module(record)

    def get_module(self, module_id: str) -> ModuleRecord | None:
        return self.modules.get_module(module_id)

    def list_modules(self, name: str | None = None) -> list[ModuleRecord]:
        return self.modules.list_modules(name)

    def modules_with_digest(self, digest: str) -> list[ModuleRecord]:
        return self.modules.modules_with_digest(digest)

    def delete_module(self, module_id: str) -> bool:
        return self.modules.delete_module(module_id)

    def put_interface(self, interface: InterfaceRecord) -> InterfaceRecord:
        return self.interfaces.put_interface(interface)

    def get_interface(self, interface_id: str) -> InterfaceRecord | None:
        return self.interfaces.get_interface(interface_id)

    def list_interfaces(self, name: str | None = None) -> list[InterfaceRecord]:
        return self.interfaces.list_interfaces(name)

    # -- nodes ----------------------------------------------------------------------------------

    def upsert_node(self, node: NodeRecord) -> NodeRecord:
        return self.nodes.upsert_node(node)

    def get_node(self, node_id: str) -> NodeRecord | None:
        return self.nodes.get_node(node_id)

    def get_nodes(self, node_ids: Iterable[str]) -> list[NodeRecord]:
        return self.nodes.get_nodes(node_ids)

    def list_nodes(self, region: str | None = None) -> list[NodeRecord]:
        return self.nodes.list_nodes(region)

    def set_node_status(self, node_id: str, status: str) -> bool:
        return self.nodes.set_node_status(node_id, status)

    def delete_node(self, node_id: str) -> bool:
        return self.nodes.delete_node(node_id)

    def record_heartbeat(self, node_id: str, reported: JsonObject, at: datetime | None = None) -> bool:
        return self.nodes.record_heartbeat(node_id, reported, at)

    def record_heartbeats(self, beats: Sequence[tuple[str, JsonObject, datetime]]) -> list[bool]:
        return self.nodes.record_heartbeats(beats)

    def record_shared_heartbeat(self, beat: SharedHeartbeat) -> bool:
        return self.nodes.record_shared_heartbeat(beat)

    def record_shared_heartbeats(self, beats: Sequence[SharedHeartbeat]) -> list[bool]:
        return self.nodes.record_shared_heartbeats(beats)

    def metric_deltas_since(self, since: datetime, *, exclude_replica: str = "") -> list[MetricDelta]:
        return self.nodes.metric_deltas_since(since, exclude_replica=exclude_replica)

    def prune_metric_deltas(self, before: datetime) -> int:
        return self.nodes.prune_metric_deltas(before)

    def publish_assignment(self, node_id: str, assignment: JsonObject) -> int | None:
        return self.nodes.publish_assignment(node_id, assignment)

    def publish_assignments(self, tables: Sequence[tuple[str, JsonObject]]) -> list[int | None]:
        return self.nodes.publish_assignments(tables)

    # -- rollouts -------------------------------------------------------------------------------

    def create_rollout(self, rollout: RolloutRecord, steps: Sequence[RolloutStepRecord] = ()) -> RolloutRecord:
        return self.rollouts.create_rollout(rollout, steps)

    def update_rollout(self, rollout: RolloutRecord, steps: Sequence[RolloutStepRecord] = ()) -> RolloutRecord:
        return self.rollouts.update_rollout(rollout, steps)

    def get_rollout(self, rollout_id: str) -> RolloutRecord | None:
        return self.rollouts.get_rollout(rollout_id)

    def list_rollouts(self, module: str | None = None, states: Iterable[str] | None = None) -> list[RolloutRecord]:
        return self.rollouts.list_rollouts(module, states)

    def rollouts_with_steps(self, limit: int) -> list[tuple[RolloutRecord, list[RolloutStepRecord]]]:
        return self.rollouts.rollouts_with_steps(limit)

    def append_rollout_step(self, step: RolloutStepRecord) -> RolloutStepRecord:
        return self.rollouts.append_rollout_step(step)

    def rollout_steps(self, rollout_id: str, limit: int | None = None) -> list[RolloutStepRecord]:
        return self.rollouts.rollout_steps(rollout_id, limit)

    # -- revisions and approvals ----------------------------------------------------------------

    def record_revision_seen(
        self, sha: str, *, verified: bool, message: str = "", at: datetime | None = None
    ) -> RevisionRecord:
        return self.revisions.record_revision_seen(sha, verified=verified, message=message, at=at)

    def mark_revision_applied(self, sha: str, at: datetime | None = None) -> bool:
        return self.revisions.mark_revision_applied(sha, at)

    def get_revision(self, sha: str) -> RevisionRecord | None:
        return self.revisions.get_revision(sha)

    def last_seen_revision(self) -> RevisionRecord | None:
        return self.revisions.last_seen_revision()

    def last_applied_revision(self) -> RevisionRecord | None:
        return self.revisions.last_applied_revision()

    def record_approval(self, approval: ApprovalRecord) -> bool:
        return self.revisions.record_approval(approval)

    def approvals_for(self, module: str, version: str) -> list[ApprovalRecord]:
        return self.revisions.approvals_for(module, version)

    # -- audit log ------------------------------------------------------------------------------

    def append_audit(
        self, actor: str, action: str, subject: str, detail: JsonObject | None = None, at: datetime | None = None
    ) -> AuditEntry:
        return self.audit.append_audit(actor, action, subject, detail, at)

    def audit_log(self, *, subject: str | None = None, after: int = 0, limit: int = 100) -> list[AuditEntry]:
        return self.audit.audit_log(subject=subject, after=after, limit=limit)

    # -- module conditions ----------------------------------------------------------------------

    def write_conditions(
        self, changed: Mapping[str, list[JsonObject]], removed: Collection[str] = (), at: datetime | None = None
    ) -> None:
        self.conditions.write_conditions(changed, removed, at)

    def list_conditions(self) -> dict[str, ModuleConditions]:
        return self.conditions.list_conditions()

    def get_conditions(self, module: str) -> ModuleConditions | None:
        return self.conditions.get_conditions(module)
