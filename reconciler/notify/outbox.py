"""Durable delivery: notifications kept in the state store's outbox until a worker has sent them.

Where it sits: a `Notifier` given an `OutboxStore` (what `install` does on a running control plane)
routes each notification as before, but `StoredWorker.offer` hands it to the `Outbox` writer
instead of a queue in memory. The writer puts it in the store, one row per alert, from a thread (the
event loop never waits on the database), and wakes the alert's worker, which claims rows one at a
time, sends them with the usual retries and records every failed try and the outcome in the row:

    publish --offer--> Outbox buffer --writer task, asyncio.to_thread--> notification_outbox rows
    StoredWorker --claim (lease)--> send --retry (attempts, next try) | finish (delivered, failed)

What this buys: a notification written before the process dies is sent after it restarts (rows
left pending are claimed again: at once on SQLite, which `release_claims` at start, and when their
lease runs out on PostgreSQL); and with several replicas on one PostgreSQL each row is claimed by
exactly one of them, so each notification goes out once. Workers look at the store when woken and
at least every `poll_seconds`, so rows written by another replica are seen too. Only the moments
between `offer` and the write (a few milliseconds) and between a send and its `finish` are not
covered: the first can lose a notification when the process is killed, the second can send one
twice (receivers deduplicate on the notification's `id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from reconciler.notify.delivery import Outcome, RetryPolicy, Worker
from reconciler.notify.events import Notification
from reconciler.notify.receivers import Receiver
from reconciler.spec.alerts import Severity
from reconciler.store.errors import StoreError
from reconciler.store.outbox import Claimed, Finished, OutboxEntry, OutboxStore

__all__ = ["Outbox", "StoredWorker", "decode", "encode"]

log = logging.getLogger("hotswap.notify")

WRITE_RETRY_SECONDS = 1.0


def encode(notification: Notification) -> str:
    """The row's text: every field, so `decode` gives the same notification back (same id)."""
    fields = {f.name: getattr(notification, f.name) for f in dataclasses.fields(notification)}
    fields["severity"] = notification.severity.value
    fields["details"] = dict(notification.details)
    return json.dumps(fields, separators=(",", ":"), sort_keys=True)


def decode(text: str) -> Notification:
    fields: dict[str, Any] = json.loads(text)
    fields["severity"] = Severity(fields["severity"])
    return Notification(**fields)


def moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class Outbox:
    """The notifier's writer: buffers offered notifications and writes them to the store in a task."""

    def __init__(self, store: OutboxStore, policy: RetryPolicy, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self._buffer: list[tuple[StoredWorker, Notification]] = []
        self._ready = asyncio.Event()
        self._writing = 0

    def put(self, worker: StoredWorker, notification: Notification) -> None:
        """Buffer a notification for `worker`'s alert; never waits."""
        self._buffer.append((worker, notification))
        self._ready.set()

    @property
    def idle(self) -> bool:
        return not self._buffer and not self._writing

    async def run(self) -> None:
        """Write what is buffered, as soon as it is, until cancelled."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            if not await self.flush():
                await asyncio.sleep(WRITE_RETRY_SECONDS)
                self._ready.set()

    async def flush(self) -> bool:
        """Write the buffer now; False (the buffer kept) when the store refused."""
        batch, self._buffer = self._buffer, []
        if not batch:
            return True
        entries = [OutboxEntry(w.alert, n.id, encode(n)) for w, n in batch]
        self._writing += 1
        try:
            dropped = await asyncio.to_thread(
                self.store.add, entries, moment(self.clock()), keep=self.policy.queue_size
            )
        except StoreError as exc:
            log.warning("notification outbox: %s; trying again", exc)
            self._buffer[:0] = batch
            return False
        finally:
            self._writing -= 1
        workers = {w.alert: w for w, _ in batch}
        for row in dropped:
            worker = workers.get(row.alert)
            if worker is not None:
                worker.dropped_row(row)
        for worker in workers.values():
            worker.wake()
        return True

    async def release_claims(self) -> None:
        """On SQLite, whatever a dead process held is ours to send (one process per file)."""
        if self.store.store.dialect.name == "sqlite":
            released = await asyncio.to_thread(self.store.release_claims)
            if released:
                log.info("notification outbox: %d notifications left by the last run go out again", released)

    async def forget(self, alert: str) -> None:
        """An alert is gone: its pending rows are dropped."""
        with contextlib.suppress(StoreError):
            await asyncio.to_thread(self.store.drop_alert, alert, moment(self.clock()))


class StoredWorker(Worker):
    """A `Worker` whose queue is the alert's rows in the outbox."""

    def __init__(
        self,
        alert: str,
        receiver: Receiver | None,
        policy: RetryPolicy,
        record: Callable[..., None],
        outbox: Outbox,
        *,
        problem: str | None = None,
        clock: Callable[[], float] = time.time,
        poll_seconds: float = 1.0,
    ) -> None:
        super().__init__(alert, receiver, policy, record, problem=problem, clock=clock)
        self.outbox = outbox
        self.poll_seconds = poll_seconds
        self.pending = 0  # rows waiting in the store, when last looked
        self._caught_up = False  # the last look found nothing due
        self._current: Claimed | None = None
        self._outcome: tuple[Outcome, int, str | None] | None = None

    def offer(self, notification: Notification) -> None:
        if self.receiver is None:
            super().offer(notification)  # recorded as failed, never stored
            return
        self._caught_up = False
        self.outbox.put(self, notification)

    def wake(self) -> None:
        self._caught_up = False
        self._ready.set()

    @property
    def idle(self) -> bool:
        return self._caught_up and not self.busy and not self._ready.is_set()

    @property
    def queued(self) -> int:
        return self.pending

    def dropped_row(self, row: Claimed) -> None:
        self.record_outcome(decode(row.notification), "dropped", 0, f"queue full ({self.policy.queue_size})")

    def record_outcome(self, notification: Notification, outcome: Outcome, attempts: int, error: str | None) -> None:
        Worker._finish(self, notification, outcome, attempts, error)

    def _finish(self, notification: Notification, outcome: Outcome, attempts: int, error: str | None) -> None:
        self._outcome = (outcome, attempts, error)
        super()._finish(notification, outcome, attempts, error)

    async def run(self) -> None:
        """Claim, send and settle rows one at a time, until cancelled."""
        while True:
            claimed = await self._claim()
            self.busy = True
            self._current, self._outcome = claimed, None
            try:
                await self._deliver(decode(claimed.notification), prior=claimed.attempts)
                if self._outcome is not None:
                    await self._settle(claimed, *self._outcome)
            except asyncio.CancelledError:
                if self._outcome is None:  # stopped mid-retry: the next run (or replica) takes it over
                    with contextlib.suppress(StoreError):
                        await asyncio.shield(asyncio.to_thread(self.outbox.store.release, claimed.seq))
                raise
            finally:
                self.busy = False
                self._current = None

    async def _claim(self) -> Claimed:
        store = self.outbox.store
        while True:
            self._ready.clear()
            now = self.clock()
            try:
                claimed = await asyncio.to_thread(store.claim, self.alert, moment(now))
                if claimed is not None:
                    return claimed
                due, self.pending = await asyncio.to_thread(store.waiting, self.alert, moment(now))
            except StoreError as exc:
                log.warning("alert %s: notification outbox: %s", self.alert, exc)
                due = None
            else:
                self._caught_up = not self._ready.is_set()
            wait = self.poll_seconds if due is None else min(self.poll_seconds, max(due.timestamp() - now, 0.0))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._ready.wait()

    async def _settle(self, claimed: Claimed, outcome: Outcome, attempts: int, error: str | None) -> None:
        store = self.outbox.store
        state: Finished = "delivered" if outcome == "delivered" else "failed"
        try:
            held = await asyncio.to_thread(store.finish, claimed.seq, state, attempts, error, moment(self.clock()))
        except StoreError as exc:
            log.warning("alert %s: could not record notification %d as %s: %s", self.alert, claimed.seq, state, exc)
            return
        if not held:
            log.warning(
                "alert %s: notification %d outlived its lease (another replica may send it)", self.alert, claimed.seq
            )

    async def _retrying(self, notification: Notification, attempt: int, delay: float, error: str) -> None:
        claimed = self._current
        if claimed is None:
            return
        next_at = moment(self.clock() + delay)
        try:
            await asyncio.to_thread(self.outbox.store.retry, claimed.seq, attempt, next_at, error)
        except StoreError as exc:
            log.warning("alert %s: could not record a failed try: %s", self.alert, exc)
