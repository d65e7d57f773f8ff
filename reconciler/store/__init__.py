"""State and blob stores: SQLite or PostgreSQL for state, a local directory or S3 for binaries.

    state.py       StateStore: modules, nodes, rollouts and their history, revisions, approvals,
                   interfaces, the audit log (one schema and one set of queries for both databases)
    dialect.py     the seam between those queries and sqlite3 / psycopg
    migrations.py  the schema, as numbered migrations
    blobs.py       BlobStore: content-addressed, brotli-compressed, verified binaries + metadata.json
    objects.py     where blob objects live: a directory or an S3 bucket (minio SDK)
    lease.py       leadership between replicas (advisory lock / flock)
    outbox.py      the notification outbox: rows claimed, sent once, marked delivered or failed
    ratelimits.py  token buckets shared by replicas (one upsert per request)
    records.py     the rows, as frozen dataclasses
    errors.py      the exception tree

Start from `open_state_store(...)` and `open_blob_store(...)`; the registry (reconciler/registry.py)
is built on both.
"""

from reconciler.store.blobs import BlobStore, open_blob_store
from reconciler.store.state import StateStore, open_state_store

__all__ = ["BlobStore", "StateStore", "open_blob_store", "open_state_store"]
