"""The state store's schema, as numbered migrations applied in order when a store opens.

One schema serves SQLite and PostgreSQL: portable types only (TEXT, BIGINT, INTEGER, DOUBLE PRECISION), times as
ISO 8601 UTC text (fixed width, so they sort), JSON as text. `{autoid}` is the one dialect word: an
auto-incrementing integer primary key; the few statements only one database understands (the
triggers that make the audit log append-only) sit in `dialect_statements`. Never edit a migration
that has shipped; append a new one.

A migration that reshapes data also has a `move`: Python run first, in the same transaction, on
both databases alike (JSON is reshaped in Python, not in either database's JSON dialect); its
statements then drop what it moved out of.

`StateStore.migrate` runs the missing ones in a single transaction under a lock (PostgreSQL:
`pg_advisory_xact_lock`; SQLite: `BEGIN IMMEDIATE`), so two processes starting at once apply each
migration exactly once, and running it twice does nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from reconciler.store.rows import content_named, to_json, ts

if TYPE_CHECKING:
    from reconciler.store.database import Tx


class Migration(NamedTuple):
    version: int
    name: str
    statements: tuple[str, ...]
    # Statements only one database understands (triggers), by dialect name, run after the others.
    dialect_statements: dict[str, tuple[str, ...]] = {}
    # Moves existing rows into the new shape; run before `statements`, in the same transaction.
    move: Callable[[Tx], None] | None = None


def _rollouts_stored_once(tx: Tx) -> None:
    """Migration 5's data. Up to 4, the rollout book (the only writer of rollouts) kept each rollout
    three times: `detail` = {"record": the planner's record, with its last 32 history lines}, copies of
    the record's fields in columns, and every history line again as a `rollout_steps` row, whose
    message was "reason: message" and whose analysis had no step kind. From 5 on, the history is the
    rows alone, each holding the whole line: the message, and in `analysis` the figures with the
    step's kind and reason. So: the record loses its history (its lines complete the rows: the kind;
    a line whose row was never written, a crash between the book's two writes, is appended), and the
    revision column moves into `detail`, beside the record.
    """
    for rollout_id, revision, text in tx.all("SELECT id, revision, detail FROM rollouts ORDER BY created_at, id"):
        detail = json.loads(text)
        record = detail.get("record")
        if isinstance(record, dict):
            _history_into_rows(tx, rollout_id, record.pop("history", None) or [])
        detail["revision"] = revision
        tx.run("UPDATE rollouts SET detail = ? WHERE id = ?", to_json(detail), rollout_id)


def _tables_named(tx: Tx) -> None:
    """Migration 8's data. Up to 7, each node's row (and each deleted node's) held its whole table as
    JSON. From 8 on the row holds the SHA-256 of the table's canonical JSON, and the table is a row of
    `node_tables` (migration 7), stored once for every node that has it. The empty table is stored
    whatever the rows hold: registrations name it without writing it (reconciler.store.nodes)."""
    now = ts(datetime.now(UTC))
    insert = "INSERT INTO node_tables (sha, body, used_at) VALUES (?, ?, ?) ON CONFLICT (sha) DO NOTHING"
    tx.run(insert, *content_named({}), now)  # the empty table, a registration's: never deleted
    for table in ("nodes", "deleted_node_generations"):
        for key, text in tx.all(f"SELECT id, assignment FROM {table} ORDER BY id"):
            sha, body = content_named(json.loads(text))
            tx.run(insert, sha, body, now)
            tx.run(f"UPDATE {table} SET assignment = ? WHERE id = ?", sha, key)


def _history_into_rows(tx: Tx, rollout_id: str, history: list[dict[str, Any]]) -> None:
    unmatched = {index: line for index, line in enumerate(history)}
    rows = tx.all(
        "SELECT seq, step, event, at, message, analysis FROM rollout_steps WHERE rollout_id = ? ORDER BY seq",
        rollout_id,
    )
    for seq, step, event, at, message, analysis in rows:
        index = next((i for i, line in unmatched.items() if _same(line, step, event, at)), None)
        line = unmatched.pop(index) if index is not None else {}
        reason, sep, text = message.partition(": ")
        if not sep:
            reason, text = "", message
        moved = {**json.loads(analysis), "kind": line.get("kind"), "reason": reason}
        tx.run("UPDATE rollout_steps SET message = ?, analysis = ? WHERE seq = ?", text, to_json(moved), seq)
    for line in unmatched.values():
        tx.run(
            "INSERT INTO rollout_steps (rollout_id, step, event, at, message, analysis) VALUES (?, ?, ?, ?, ?, ?)",
            rollout_id,
            line["step"],
            line["outcome"],
            _at(line),
            line["message"],
            to_json(
                {
                    "kind": line.get("kind"),
                    "reason": line["reason"],
                    "region": line.get("region"),
                    "requests": line.get("requests", 0),
                    "errorRate": line.get("error_rate", 0.0),
                    "p99Ms": line.get("p99_ms"),
                }
            ),
        )


def _same(line: dict[str, Any], step: int, event: str, at: str) -> bool:
    """Whether a row is the line's: the book wrote it at the line's time (a time of 0: when it wrote it)."""
    return (line["step"], line["outcome"]) == (step, event) and (not line["at"] or _at(line) == at)


def _at(line: dict[str, Any]) -> str:
    return ts(datetime.fromtimestamp(line["at"], UTC))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "initial schema",
        (
            """CREATE TABLE modules (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                version TEXT NOT NULL,
                digest TEXT NOT NULL,
                size BIGINT NOT NULL,
                compressed_size BIGINT NOT NULL,
                imports TEXT NOT NULL,
                exports TEXT NOT NULL,
                wasi_imports TEXT NOT NULL,
                capabilities TEXT NOT NULL,
                component INTEGER NOT NULL,
                memory_min_pages BIGINT NOT NULL,
                build_commit TEXT,
                build_timestamp TEXT,
                created_at TEXT NOT NULL,
                UNIQUE (name, version)
            )""",
            "CREATE INDEX modules_digest ON modules (digest)",
            """CREATE TABLE nodes (
                id TEXT PRIMARY KEY,
                region TEXT NOT NULL,
                url TEXT NOT NULL,
                status TEXT NOT NULL,
                max_modules INTEGER NOT NULL,
                registered_at TEXT NOT NULL,
                last_heartbeat_at TEXT,
                generation BIGINT NOT NULL,
                assignment TEXT NOT NULL,
                reported TEXT NOT NULL
            )""",
            """CREATE TABLE rollouts (
                id TEXT PRIMARY KEY,
                module TEXT NOT NULL,
                from_version TEXT,
                from_digest TEXT,
                to_version TEXT NOT NULL,
                to_digest TEXT NOT NULL,
                strategy TEXT NOT NULL,
                state TEXT NOT NULL,
                step INTEGER NOT NULL,
                revision TEXT,
                message TEXT NOT NULL,
                detail TEXT NOT NULL,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                step_started_at TEXT,
                generation BIGINT NOT NULL
            )""",
            "CREATE INDEX rollouts_module ON rollouts (module, created_at)",
            """CREATE TABLE rollout_steps (
                seq {autoid},
                rollout_id TEXT NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
                step INTEGER NOT NULL,
                event TEXT NOT NULL,
                at TEXT NOT NULL,
                message TEXT NOT NULL,
                analysis TEXT NOT NULL
            )""",
            "CREATE INDEX rollout_steps_rollout ON rollout_steps (rollout_id, seq)",
            """CREATE TABLE revisions (
                sha TEXT PRIMARY KEY,
                seen_at TEXT NOT NULL,
                verified INTEGER NOT NULL,
                message TEXT NOT NULL,
                applied_at TEXT
            )""",
            """CREATE TABLE approvals (
                commit_sha TEXT NOT NULL,
                module TEXT NOT NULL,
                version TEXT NOT NULL,
                principal TEXT NOT NULL,
                roles TEXT NOT NULL,
                kind TEXT NOT NULL,
                found_at TEXT NOT NULL,
                PRIMARY KEY (commit_sha, module, version, principal)
            )""",
            "CREATE INDEX approvals_module ON approvals (module, version)",
            """CREATE TABLE interfaces (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                package TEXT NOT NULL,
                version TEXT NOT NULL,
                wasi TEXT NOT NULL,
                wit TEXT NOT NULL,
                digest TEXT NOT NULL,
                status TEXT NOT NULL,
                approved_by TEXT,
                created_at TEXT NOT NULL
            )""",
            """CREATE TABLE audit_log (
                seq {autoid},
                at TEXT NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                subject TEXT NOT NULL,
                detail TEXT NOT NULL
            )""",
            "CREATE INDEX audit_log_subject ON audit_log (subject, seq)",
        ),
        {
            "sqlite": (
                "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
                "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
            ),
            "postgresql": (
                "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql "
                "AS $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$",
                "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
                "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
            ),
        },
    ),
    Migration(
        2,
        "metric deltas shared between replicas",
        (
            # What nodes shipped in their heartbeats, written by the replica that received them, so the
            # leader's analysis windows see traffic reported to any replica (pruned after an hour).
            """CREATE TABLE metric_deltas (
                seq {autoid},
                replica TEXT NOT NULL,
                node_id TEXT NOT NULL,
                region TEXT NOT NULL,
                at TEXT NOT NULL,
                metrics TEXT NOT NULL
            )""",
            "CREATE INDEX metric_deltas_at ON metric_deltas (at)",
        ),
    ),
    Migration(
        3,
        "notification outbox and shared rate limits",
        (
            # One row per (notification, alert), written when the notification is made; a worker of
            # any replica claims it (owner + lease_until), sends it, and marks it delivered / failed /
            # dropped (reconciler.store.outbox). Times are ISO text like the rest of the schema.
            """CREATE TABLE notification_outbox (
                seq {autoid},
                alert TEXT NOT NULL,
                notification_id TEXT NOT NULL,
                notification TEXT NOT NULL,
                state TEXT NOT NULL,
                attempts INTEGER NOT NULL,
                next_at TEXT NOT NULL,
                owner TEXT,
                lease_until TEXT,
                error TEXT,
                created_at TEXT NOT NULL,
                finished_at TEXT,
                UNIQUE (alert, notification_id)
            )""",
            "CREATE INDEX notification_outbox_pending ON notification_outbox (alert, state, seq)",
            # A token bucket per (subject, class) shared by replicas (reconciler.store.ratelimits):
            # `tokens` left at `at` (epoch seconds), refilled at `rate` per second up to `capacity`;
            # `granted` says whether the last take got a token (one upsert per request).
            """CREATE TABLE rate_buckets (
                subject TEXT NOT NULL,
                bucket TEXT NOT NULL,
                capacity DOUBLE PRECISION NOT NULL,
                rate DOUBLE PRECISION NOT NULL,
                tokens DOUBLE PRECISION NOT NULL,
                at DOUBLE PRECISION NOT NULL,
                granted INTEGER NOT NULL,
                PRIMARY KEY (subject, bucket)
            )""",
        ),
    ),
    Migration(
        4,
        "module conditions shared between replicas",
        (
            # Each module's conditions as the leader's last pass reported them (reconciler.store.conditions):
            # a JSON list of {type, status, reason, message}, rewritten only when they change, so that
            # followers and a restarted control plane show what the leader shows.
            """CREATE TABLE module_conditions (
                module TEXT PRIMARY KEY,
                conditions TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
        ),
    ),
    Migration(
        5,
        "a rollout stored once",
        # The columns that only copied the record's fields; `revision` is in `detail` now (see `move`).
        # What stays: id, module and state (filters), created_at (order), generation (compare-and-set),
        # updated_at (when the store last wrote it) and detail (the record).
        tuple(
            f"ALTER TABLE rollouts DROP COLUMN {column}"
            for column in (
                "from_version",
                "from_digest",
                "to_version",
                "to_digest",
                "strategy",
                "step",
                "revision",
                "message",
                "step_started_at",
            )
        ),
        move=_rollouts_stored_once,
    ),
    Migration(
        6,
        "a deleted node's last generation",
        (
            # The generation and table a node's row had when it was deleted (reconciler.store.nodes): the
            # node may have applied a table numbered that high, which a pinned node refuses to take again,
            # so the row made when it registers again starts there, with that table, not at what its
            # registration claims (that is capped at MAX_ROW_GENERATION). The row made takes it over, and
            # this one is deleted.
            """CREATE TABLE deleted_node_generations (
                id TEXT PRIMARY KEY,
                generation BIGINT NOT NULL,
                assignment TEXT NOT NULL,
                deleted_at TEXT NOT NULL
            )""",
        ),
    ),
    Migration(
        7,
        "node tables stored once per content",
        (
            # A module table as nodes' rows name it (reconciler.store.nodes): the many nodes of a region
            # that run the same table share one row here, not a copy each. `sha` is the SHA-256 of `body`
            # (the table's canonical JSON); `used_at`, when a write last named it: a table no row names
            # is deleted only once it has gone unnamed a while, so a write naming it meanwhile keeps it.
            """CREATE TABLE node_tables (
                sha TEXT PRIMARY KEY,
                body TEXT NOT NULL,
                used_at TEXT NOT NULL
            )""",
        ),
    ),
    Migration(
        8,
        "nodes name their table",
        (
            "ALTER TABLE nodes RENAME COLUMN assignment TO table_sha",
            "ALTER TABLE deleted_node_generations RENAME COLUMN assignment TO table_sha",
        ),
        move=_tables_named,
    ),
)

LATEST = MIGRATIONS[-1].version
