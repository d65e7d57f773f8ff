"""The state store's database: a small connection pool, one transaction per call, the schema's
migrations, leases and (on PostgreSQL) NOTIFY, over the `Dialect` given.

Where it sits: `open_state_store` (reconciler.store.state) builds one `Database` and hands it to the
aggregate stores (modules, nodes, rollouts, revisions, audit), the outbox and the rate-limit
buckets; each of those writes its queries once, with `?` placeholders, and runs them in `tx`
(`read` for a single read). A `Table` holds what they share per table: its columns, how a row
becomes a record, and the select / insert / upsert built from them. The calls are synchronous and
thread-safe: async code calls them through `asyncio.to_thread`.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from reconciler.store.dialect import Connection, Dialect
from reconciler.store.errors import BackendError, SchemaTooNewError
from reconciler.store.lease import Lease
from reconciler.store.migrations import MIGRATIONS, Migration
from reconciler.store.rows import marks, ts

Clock = Callable[[], datetime]
R = TypeVar("R")
P = ParamSpec("P")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Tx:
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


@dataclass(frozen=True)
class Table(Generic[R]):
    """One table as a store reads and writes it: `columns` in the order `decode` reads a row and an
    insert takes its values, and `key`, its primary key's columns (one column for `get`). Each
    aggregate store keeps one per table, so its queries say only what differs: the filter, the
    order, what an upsert updates.
    """

    name: str
    columns: str  # comma-separated
    decode: Callable[[Any], R]
    key: str = "id"

    @classmethod
    def of(
        cls,
        name: str,
        record: Callable[..., R],
        columns: str,
        *,
        key: str = "id",
        renamed: Mapping[str, str] | None = None,
        **convert: Callable[[Any], Any],
    ) -> Table[R]:
        """A table whose columns are `record`'s fields of the same names (`renamed`: column -> field
        where they differ), read as stored or through `convert[column]` (a time, a number, JSON).
        A column `record` does not take fails here, at import, not on the first read."""
        names = [column.strip() for column in columns.split(",")]
        reads = [((renamed or {}).get(column, column), convert.get(column, _as_stored)) for column in names]
        if missing := {field for field, _ in reads} - set(inspect.signature(record).parameters):
            raise TypeError(f"table {name}: {getattr(record, '__name__', record)} has no field {sorted(missing)}")
        if stray := set(convert) - set(names):
            raise TypeError(f"table {name}: no column {sorted(stray)} to convert")

        def decode(row: Any) -> R:
            return record(**{field: read(value) for (field, read), value in zip(reads, row, strict=True)})

        return cls(name, columns, decode, key)

    def select(self, tx: Tx, /, rest: str = "", *params: Any) -> list[R]:
        """The records of `SELECT columns FROM table rest` (a WHERE, an ORDER BY...)."""
        return [self.decode(row) for row in tx.all(f"SELECT {self.columns} FROM {self.name} {rest}", *params)]

    def first(self, tx: Tx, /, rest: str = "", *params: Any) -> R | None:
        """The first record of `SELECT columns FROM table rest`; None when there is none."""
        row = tx.one(f"SELECT {self.columns} FROM {self.name} {rest}", *params)
        return None if row is None else self.decode(row)

    def get(self, tx: Tx, /, key: Any) -> R | None:
        return self.first(tx, f"WHERE {self.key} = ?", key)

    def matching(self, tx: Tx, /, order: str, **equal: Any) -> list[R]:
        """The records whose columns equal the values given (a None value: any), in `order`."""
        wanted = {column: value for column, value in equal.items() if value is not None}
        where = f"WHERE {' AND '.join(f'{column} = ?' for column in wanted)} " if wanted else ""
        return self.select(tx, f"{where}ORDER BY {order}", *wanted.values())

    def insert(self, tx: Tx, /, values: Sequence[Any]) -> bool:
        """Insert a row of all `columns` unless it clashes with a stored one (same key or another
        unique column); whether it was inserted."""
        return tx.run(self._insert(values, "DO NOTHING"), *values) == 1

    def upsert(self, tx: Tx, /, values: Sequence[Any], update: Sequence[str]) -> None:
        """Insert a row of all `columns`, or set the `update` columns of the row with the same key
        (the others keep what they hold)."""
        assignments = ", ".join(f"{column} = excluded.{column}" for column in update)
        tx.run(self._insert(values, f"({self.key}) DO UPDATE SET {assignments}"), *values)

    def _insert(self, values: Sequence[Any], on_conflict: str) -> str:
        return f"INSERT INTO {self.name} ({self.columns}) VALUES ({marks(values)}) ON CONFLICT {on_conflict}"


def _as_stored(value: Any) -> Any:
    return value


class Database:
    """Connections and transactions over one `Dialect`; `clock` stamps what the stores write."""

    def __init__(self, dialect: Dialect, *, clock: Clock = utcnow) -> None:
        self.dialect = dialect
        self.clock = clock
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"Database({self.dialect.description})"

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A pooled connection in autocommit mode (see dialect.py)."""
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
    def tx(self, *, write: bool) -> Iterator[Tx]:
        """One transaction: committed when the block ends, rolled back when it raises; driver errors
        come out as `BackendError`."""
        try:
            with self.connection() as conn:
                conn.execute(self.dialect.begin_write if write else self.dialect.begin_read, ())
                try:
                    yield Tx(conn, self.dialect)
                except BaseException:
                    with suppress(*self.dialect.driver_errors):
                        conn.execute("ROLLBACK", ())
                    raise
                conn.execute("COMMIT", ())
        except self.dialect.driver_errors as exc:
            raise BackendError(f"{self.dialect.description}: {str(exc).strip()}") from exc

    def read(self, query: Callable[Concatenate[Tx, P], R], *args: P.args, **kwargs: P.kwargs) -> R:
        """`query(tx, *args, **kwargs)` in a read transaction of its own: a store's read of one
        `Table` (`db.read(_NODES.get, node_id)`)."""
        with self.tx(write=False) as tx:
            return query(tx, *args, **kwargs)

    def close(self) -> None:
        """Close pooled connections; the database must not be used afterwards."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- schema ---------------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply the migrations this database lacks; returns the versions applied (often none).

        Safe to run twice and from several processes at once: one transaction, under a lock.
        """
        latest = MIGRATIONS[-1].version
        with self.tx(write=True) as tx:
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

    def _apply(self, tx: Tx, migration: Migration) -> None:
        if migration.move is not None:
            migration.move(tx)
        for statement in migration.statements:
            tx.run(statement.replace("{autoid}", self.dialect.autoid))
        for statement in migration.dialect_statements.get(self.dialect.name, ()):
            tx.run(statement)
        tx.run(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            migration.version,
            migration.name,
            ts(self.clock()),
        )

    def schema_version(self) -> int:
        with self.tx(write=False) as tx:
            row = tx.one("SELECT MAX(version) FROM schema_migrations")
            return int(row[0] or 0)

    # -- several replicas on one database (reconciler.apply.leader) ------------------------------------

    def try_lease(self, name: str) -> Lease | None:
        """Leadership among replicas: a `Lease` if this process now holds `name`, else None (another
        process holds it). It lasts until released or until this process dies (see lease.py)."""
        failures: tuple[type[Exception], ...] = (*self.dialect.driver_errors, OSError)
        try:
            return self.dialect.try_lease(name)
        except failures as exc:
            raise BackendError(f"{self.dialect.description}: lease {name!r}: {str(exc).strip()}") from exc

    def namespace(self) -> str:
        """What tells this installation apart from others in the same database server: the schema
        on PostgreSQL (advisory locks and NOTIFY channels are per database, not per schema), "" on SQLite."""
        if self.dialect.name != "postgresql":
            return ""
        with self.tx(write=False) as tx:
            return str(tx.one("SELECT current_schema()")[0])

    def notify(self, channel: str, payloads: Sequence[str]) -> None:
        """Tell the listeners of `channel` (PostgreSQL NOTIFY, one per payload, sent at commit); nothing
        on SQLite, which serves one process."""
        if self.dialect.name != "postgresql" or not payloads:
            return
        with self.tx(write=True) as tx:
            for payload in payloads:
                tx.one("SELECT pg_notify(?, ?)", channel, payload)
