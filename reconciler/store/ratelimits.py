"""Rate-limit buckets shared by control-plane replicas: one token bucket per (subject, class) in the
state store, taken from in one statement.

Where it sits: with a PostgreSQL state store, the API's `SharedRateLimiter`
(reconciler.api.security) asks `SharedBuckets.take` once per limited request, so all replicas spend
one budget. (SQLite and single replicas keep the in-memory `RateLimiter`; this works on SQLite too,
which the store tests use.)

`take` is a single `INSERT ... ON CONFLICT DO UPDATE ... RETURNING` run outside an explicit
transaction (the connection is in autocommit mode), so it costs one round trip. PostgreSQL locks the
bucket's row for the update, so concurrent takes from any number of replicas are serialised and a
bucket never hands out more than it holds. In an UPDATE every right-hand side sees the row as it
was, so `tokens` and `granted` are computed from the same refilled level:

    level   = min(capacity, tokens + max(0, now - at) * rate)
    granted = level >= 1
    tokens  = level - 1 if granted else level

`now` is the caller's clock (wall time: replicas' clocks only need to agree roughly, and a clock
behind the stored `at` refills nothing rather than a negative amount).
"""

from __future__ import annotations

from typing import Final, NamedTuple

from reconciler.store.database import Database
from reconciler.store.errors import BackendError
from reconciler.store.state import StateStore

__all__ = ["SharedBuckets", "Taken"]

_ELAPSED: Final = "(CASE WHEN excluded.at > rate_buckets.at THEN excluded.at - rate_buckets.at ELSE 0 END)"
_FILLED: Final = f"(rate_buckets.tokens + {_ELAPSED} * excluded.rate)"
_LEVEL: Final = f"(CASE WHEN {_FILLED} > excluded.capacity THEN excluded.capacity ELSE {_FILLED} END)"
TAKE: Final = (
    "INSERT INTO rate_buckets (subject, bucket, capacity, rate, tokens, at, granted) "
    "VALUES (?, ?, ?, ?, ?, ?, 1) "
    "ON CONFLICT (subject, bucket) DO UPDATE SET "
    f"tokens = CASE WHEN {_LEVEL} >= 1 THEN {_LEVEL} - 1 ELSE {_LEVEL} END, "
    f"granted = CASE WHEN {_LEVEL} >= 1 THEN 1 ELSE 0 END, "
    "at = CASE WHEN excluded.at > rate_buckets.at THEN excluded.at ELSE rate_buckets.at END, "
    "capacity = excluded.capacity, rate = excluded.rate "
    "RETURNING tokens, granted"
)


class Taken(NamedTuple):
    granted: bool
    tokens: float  # left in the bucket after this take


class SharedBuckets:
    """The `rate_buckets` table of `store` (a `StateStore` or its `Database`)."""

    def __init__(self, store: StateStore | Database) -> None:
        self.store = store
        self.db = store.database if isinstance(store, StateStore) else store
        self._query = store.dialect.sql(TAKE)

    def take(self, subject: str, bucket: str, capacity: int, rate: float, now: float) -> Taken:
        """Take one token from (`subject`, `bucket`), a bucket of `capacity` tokens refilled at `rate`
        per second; a bucket seen for the first time starts full."""
        params = (subject, bucket, float(capacity), rate, float(capacity) - 1.0, now)
        failures = self.db.dialect.driver_errors
        try:
            with self.db.connection() as conn:
                row = conn.execute(self._query, params).fetchone()
        except failures as exc:
            raise BackendError(f"{self.db.dialect.description}: {str(exc).strip()}") from exc
        return Taken(bool(row[1]), float(row[0]))

    def forget_full(self, now: float) -> int:
        """Drop buckets that have refilled (a fresh bucket holds the same); returns how many."""
        with self.db.tx(write=True) as tx:
            return tx.run("DELETE FROM rate_buckets WHERE tokens + (? - at) * rate >= capacity", now)
