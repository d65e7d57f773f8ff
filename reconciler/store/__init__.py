"""State and blob stores: SQLite or PostgreSQL for state, a local directory or S3 for binaries.

    state.py       StateStore: the facade that owns one Database and composes the aggregates below
                   (one schema and one set of queries for both databases)
    database.py    Database: pooled connections, one transaction per call, migrations, leases, NOTIFY;
                   Table: a table's columns, how a row becomes a record, its select / insert / upsert
    modules.py     registered module versions (ModuleStore)
    interfaces.py  WIT interface packages (InterfaceStore)
    nodes.py       nodes, heartbeats (single, batched, shared with metric deltas), assignments (NodeStore)
    rollouts.py    rollouts and their step history, compare-and-set (RolloutStore)
    revisions.py   Git revisions seen and applied, approvals (RevisionStore)
    audit.py       the append-only audit log (AuditLog)
    conditions.py  each module's conditions as the leader last reported them (ConditionStore)
    rows.py        how times and JSON go into columns
    dialect.py     the seam between those queries and sqlite3 / psycopg
    migrations.py  the schema, as numbered migrations
    blobs.py       BlobStore: content-addressed, brotli-compressed, verified binaries + metadata.json
    objects.py     where blob objects live: a directory or an S3 bucket (minio SDK)
    lease.py       leadership between replicas (advisory lock / flock)
    notify_pg.py   PostgreSQL LISTEN for replicas that share one database
    outbox.py      the notification outbox: rows claimed, sent once, marked delivered or failed
    ratelimits.py  token buckets shared by replicas (one upsert per request)
    records.py     the rows, as frozen dataclasses
    errors.py      the exception tree

Start from `open_state_store(...)` and `open_blob_store(...)`; the registry (reconciler/apply/registry.py)
is built on both. A consumer that needs one aggregate takes its narrow Protocol (`RolloutStore`,
`NodeStore`, ...); a `StateStore` satisfies all of them.
"""

from reconciler.store.blobs import BlobStore, open_blob_store
from reconciler.store.state import StateStore, open_state_store

__all__ = ["BlobStore", "StateStore", "open_blob_store", "open_state_store"]
