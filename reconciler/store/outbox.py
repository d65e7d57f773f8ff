"""The notification outbox: notifications as rows of the state store, so none is lost on a restart
and each is sent by one replica.

Where it sits: the notifier (reconciler.notify.outbox) calls `add` when it routes a notification to
its alerts, one row per (notification, alert), and each alert's delivery worker loops on
`claim` -> send -> `retry` | `finish`. Every method is one transaction, synchronous and thread-safe
like the rest of the store: async code calls it through `asyncio.to_thread`.

A row's life:

    pending --claim (owner, lease_until = now + lease)--> being sent by that owner
        --finish--> delivered | failed | dropped
        --retry (attempts, next_at, lease extended past next_at)--> still pending, still owned
    a lease that runs out (its owner died) makes the row claimable again; on SQLite, which serves
    one process, `release_claims` at start frees them at once.

Claims are atomic: on PostgreSQL the candidate row is locked with `FOR UPDATE SKIP LOCKED`, so two
replicas never claim the same row and never wait on each other; the lease conditions are checked
again by the UPDATE itself; on SQLite `BEGIN IMMEDIATE` serialises claimers. A notification is sent
once unless its sender dies between sending and `finish` (then it is sent again once the lease
runs out: receivers that must not see it twice deduplicate by the notification's `id`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from reconciler.store.database import Database
from reconciler.store.rows import dt, ts
from reconciler.store.state import StateStore

__all__ = ["Claimed", "Finished", "OutboxEntry", "OutboxStore"]

Finished = Literal["delivered", "failed", "dropped"]
DEFAULT_LEASE_SECONDS = 60.0  # longer than one try (receivers time out after 10-15 s)


@dataclass(frozen=True)
class OutboxEntry:
    """A notification for one alert, as the notifier hands it over (`notification` is JSON text)."""

    alert: str
    notification_id: str
    notification: str


@dataclass(frozen=True)
class Claimed:
    """A row this owner may now send: `attempts` tries were made before (by anyone)."""

    seq: int
    alert: str
    notification: str
    attempts: int


class OutboxStore:
    """The outbox table of `store` (a `StateStore` or its `Database`), worked on by `owner` (one id per
    notifier; see `claim`)."""

    def __init__(
        self, store: StateStore | Database, owner: str, *, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> None:
        self.store = store
        self.db = store.database if isinstance(store, StateStore) else store
        self.owner = owner
        self.lease = timedelta(seconds=lease_seconds)
        self._skip_locked = " FOR UPDATE SKIP LOCKED" if store.dialect.name == "postgresql" else ""

    def add(self, entries: Sequence[OutboxEntry], at: datetime, *, keep: int | None = None) -> list[Claimed]:
        """Insert pending rows (an entry already there is left alone). With `keep`, an alert left
        with more than `keep` pending rows nobody holds loses its oldest: they are marked dropped and
        returned, so the caller can count them."""
        now = ts(at)
        dropped: list[Claimed] = []
        with self.db.tx(write=True) as tx:
            for entry in entries:
                tx.run(
                    "INSERT INTO notification_outbox (alert, notification_id, notification, state, attempts, "
                    "next_at, created_at) VALUES (?, ?, ?, 'pending', 0, ?, ?) ON CONFLICT DO NOTHING",
                    entry.alert,
                    entry.notification_id,
                    entry.notification,
                    now,
                    now,
                )
            if keep is None:
                return dropped
            for alert in sorted({e.alert for e in entries}):
                rows = tx.all(
                    "SELECT seq, alert, notification, attempts FROM notification_outbox "
                    "WHERE alert = ? AND state = 'pending' AND (lease_until IS NULL OR lease_until < ?) "
                    "ORDER BY seq",
                    alert,
                    now,
                )
                for row in rows[: max(len(rows) - keep, 0)]:
                    tx.run(
                        "UPDATE notification_outbox SET state = 'dropped', finished_at = ?, error = ? WHERE seq = ?",
                        now,
                        f"queue full ({keep})",
                        row[0],
                    )
                    dropped.append(_claimed(row))
        return dropped

    def claim(self, alert: str, at: datetime) -> Claimed | None:
        """The oldest due pending row of `alert` that nobody holds, now held by this owner until
        `at` + the lease; None when there is none."""
        now = ts(at)
        with self.db.tx(write=True) as tx:
            row = tx.one(
                "UPDATE notification_outbox SET owner = ?, lease_until = ? "
                "WHERE seq = (SELECT seq FROM notification_outbox WHERE alert = ? AND state = 'pending' "
                "AND next_at <= ? AND (lease_until IS NULL OR lease_until < ?) "
                f"ORDER BY seq LIMIT 1{self._skip_locked}) "
                "AND state = 'pending' AND (lease_until IS NULL OR lease_until < ?) "
                "RETURNING seq, alert, notification, attempts",
                self.owner,
                ts(at + self.lease),
                alert,
                now,
                now,
                now,
            )
        return None if row is None else _claimed(row)

    def retry(self, seq: int, attempts: int, next_at: datetime, error: str) -> bool:
        """A try failed and another follows at `next_at`: record it and keep holding the row until
        a lease past then. False when this owner no longer holds it."""
        return self._update_held(
            "attempts = ?, next_at = ?, lease_until = ?, error = ?",
            seq,
            attempts,
            ts(next_at),
            ts(next_at + self.lease),
            error,
        )

    def finish(self, seq: int, state: Finished, attempts: int, error: str | None, at: datetime) -> bool:
        """The row's outcome; False when this owner no longer held it (its lease ran out and another
        replica may have sent it too: the caller logs that)."""
        return self._update_held(
            "state = ?, attempts = ?, error = ?, finished_at = ?, lease_until = NULL",
            seq,
            state,
            attempts,
            error,
            ts(at),
        )

    def waiting(self, alert: str, at: datetime) -> tuple[datetime | None, int]:
        """When the next pending row of `alert` can be claimed (now or later; None if none waits),
        and how many rows are pending."""
        now = ts(at)
        with self.db.tx(write=False) as tx:
            row = tx.one(
                "SELECT MIN(CASE WHEN lease_until IS NOT NULL AND lease_until >= ? AND lease_until > next_at "
                "THEN lease_until ELSE next_at END), COUNT(*) FROM notification_outbox "
                "WHERE alert = ? AND state = 'pending'",
                now,
                alert,
            )
        return (None if row[0] is None else dt(row[0])), int(row[1])

    def release(self, seq: int) -> bool:
        """Stop holding a row without an outcome (a worker stopping mid-retry): any replica may claim
        it again once its next try is due. False when this owner did not hold it."""
        return self._update_held("owner = NULL, lease_until = NULL", seq)

    def release_claims(self) -> int:
        """Free every claim (a process starting on SQLite, the only one using the file: whoever held
        them died); returns how many."""
        with self.db.tx(write=True) as tx:
            return tx.run(
                "UPDATE notification_outbox SET owner = NULL, lease_until = NULL "
                "WHERE state = 'pending' AND lease_until IS NOT NULL"
            )

    def drop_alert(self, alert: str, at: datetime) -> int:
        """Give up the pending rows of an alert that no longer exists; returns how many."""
        with self.db.tx(write=True) as tx:
            return tx.run(
                "UPDATE notification_outbox SET state = 'dropped', finished_at = ?, error = 'alert removed' "
                "WHERE alert = ? AND state = 'pending'",
                ts(at),
                alert,
            )

    def states(self) -> dict[str, dict[str, int]]:
        """How many rows each alert has in each state (for status and tests)."""
        with self.db.tx(write=False) as tx:
            rows = tx.all("SELECT alert, state, COUNT(*) FROM notification_outbox GROUP BY alert, state")
        out: dict[str, dict[str, int]] = {}
        for alert, state, count in rows:
            out.setdefault(alert, {})[state] = int(count)
        return out

    def prune(self, before: datetime) -> int:
        """Forget finished rows older than `before`; returns how many."""
        with self.db.tx(write=True) as tx:
            return tx.run("DELETE FROM notification_outbox WHERE state <> 'pending' AND finished_at < ?", ts(before))

    def _update_held(self, assignments: str, seq: int, *values: Any) -> bool:
        """`UPDATE ... SET assignments` (with `values` for its placeholders) on row `seq`, only while
        this owner holds it and it is still pending; whether it did."""
        with self.db.tx(write=True) as tx:
            return (
                tx.run(
                    f"UPDATE notification_outbox SET {assignments} WHERE seq = ? AND owner = ? AND state = 'pending'",
                    *values,
                    seq,
                    self.owner,
                )
                == 1
            )


def _claimed(row: Any) -> Claimed:
    return Claimed(int(row[0]), row[1], row[2], int(row[3]))
