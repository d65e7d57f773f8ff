"""Delivery: one worker per alert takes notifications from a bounded queue and sends them, with retries.

Where it sits: the notifier puts each routed notification in the worker's queue (`offer`, which
never waits, so the reconcile loop that produced the event never waits either); the worker's task
sends it through the alert's receiver. A retryable failure is tried again after a backoff that
doubles up to a ceiling (with jitter), at most `attempts` times. When a notification exhausts its
attempts the receiver is Failing: status says so with the last error, and until a delivery
succeeds again each later notification gets one attempt only, so a receiver that is down costs
one try per event instead of being retried forever. A permanent failure (a 4xx, a refused SMTP
login) is not retried at all. A full queue drops its oldest notification and counts it.

Every outcome (delivered, failed, dropped) goes to the worker's counters, the notifier's bounded
history, and the audit log.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from reconciler.notify.errors import DeliveryError, PermanentDeliveryError
from reconciler.notify.events import Notification, iso
from reconciler.notify.receivers import Receiver

__all__ = ["Delivery", "RetryPolicy", "Worker"]

log = logging.getLogger("hotswap.notify")

Outcome = Literal["delivered", "failed", "dropped"]
State = Literal["Ready", "Failing", "Misconfigured"]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # tries per notification while the receiver is Ready
    first_delay: float = 1.0  # seconds before the second try; doubles after each try
    max_delay: float = 60.0
    jitter: float = 0.2  # +- this share of each delay, so receivers that come back are not stampeded
    queue_size: int = 200

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the `attempt`-th failed try (1-based)."""
        base = min(self.first_delay * 2.0 ** (attempt - 1), self.max_delay)
        return base * (1 + random.uniform(-self.jitter, self.jitter))  # not cryptographic


@dataclass(frozen=True)
class Delivery:
    """What became of one notification at one alert's receiver."""

    at: float
    alert: str
    receiver: str
    notification: Notification
    outcome: Outcome
    attempts: int
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "alert": self.alert,
            "receiver": self.receiver,
            "id": self.notification.id,
            "type": self.notification.type,
            "severity": self.notification.severity.value,
            "module": self.notification.module,
            "deploymentId": self.notification.deployment,
            "outcome": self.outcome,
            "attempts": self.attempts,
            "error": self.error,
        }


class Worker:
    """The queue and the sending task of one alert's receiver, with its counters and state."""

    def __init__(
        self,
        alert: str,
        receiver: Receiver | None,
        policy: RetryPolicy,
        record: Callable[[Delivery], None],
        *,
        problem: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.alert = alert
        self.receiver = receiver
        self.policy = policy
        self.record = record
        self.clock = clock
        self.queue: deque[Notification] = deque()
        self.state: State = "Misconfigured" if receiver is None else "Ready"
        self.last_error: str | None = problem
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.attempts = 0
        self.consecutive_failures = 0
        self.last_success_at: float | None = None
        self.last_failure_at: float | None = None
        self.busy = False
        self._ready = asyncio.Event()

    @property
    def kind(self) -> str:
        return self.receiver.kind if self.receiver is not None else "unknown"

    def offer(self, notification: Notification) -> None:
        """Queue a notification; never waits. A full queue drops its oldest entry."""
        if self.receiver is None:
            self._finish(notification, "failed", 0, self.last_error)
            return
        if len(self.queue) >= self.policy.queue_size:
            oldest = self.queue.popleft()
            self._finish(oldest, "dropped", 0, f"queue full ({self.policy.queue_size})")
        self.queue.append(notification)
        self._ready.set()

    @property
    def idle(self) -> bool:
        return not self.queue and not self.busy

    @property
    def queued(self) -> int:
        return len(self.queue)

    async def run(self) -> None:
        """Send queued notifications one at a time, in order, until cancelled."""
        while True:
            while not self.queue:
                self._ready.clear()
                await self._ready.wait()
            notification = self.queue.popleft()
            self.busy = True
            try:
                await self._deliver(notification)
            finally:
                self.busy = False

    async def _deliver(self, notification: Notification, prior: int = 0) -> None:
        """Try `notification` until delivered, refused, or out of tries; `prior` tries were made
        before (by a process that stopped: the outbox remembers them)."""
        assert self.receiver is not None
        tries = max(1 if self.state == "Failing" else self.policy.attempts, prior + 1)
        error = ""
        for attempt in range(prior + 1, tries + 1):
            self.attempts += 1
            try:
                await self.receiver.send(notification)
            except PermanentDeliveryError as exc:
                self._failed(notification, attempt, str(exc))
                return
            except DeliveryError as exc:
                error = str(exc)
                log.info("alert %s: try %d of %d failed: %s", self.alert, attempt, tries, error)
                if attempt < tries:
                    delay = self.policy.delay(attempt)
                    await self._retrying(notification, attempt, delay, error)
                    await asyncio.sleep(delay)
                continue
            except Exception as exc:  # a receiver's bug must not end the worker
                log.exception("alert %s: receiver failed", self.alert)
                self._failed(notification, attempt, f"{type(exc).__name__}: {exc}")
                return
            if self.state == "Failing":
                log.warning("alert %s: receiver %s delivers again", self.alert, self.receiver.target)
            self.state = "Ready"
            self.consecutive_failures = 0
            self.last_success_at = self.clock()
            self._finish(notification, "delivered", attempt, None)
            return
        self._failed(notification, tries, error)

    async def _retrying(self, notification: Notification, attempt: int, delay: float, error: str) -> None:
        """A try failed and another follows in `delay` seconds (the outbox records it)."""

    def _failed(self, notification: Notification, attempts: int, error: str) -> None:
        if self.state != "Failing":
            log.warning("alert %s: receiver is failing: %s", self.alert, error)
        self.state = "Failing"
        self.consecutive_failures += 1
        self.last_error = error
        self.last_failure_at = self.clock()
        self._finish(notification, "failed", attempts, error)

    def _finish(self, notification: Notification, outcome: Outcome, attempts: int, error: str | None) -> None:
        if outcome == "delivered":
            self.delivered += 1
        elif outcome == "failed":
            self.failed += 1
        else:
            self.dropped += 1
        target = self.receiver.target if self.receiver is not None else "none"
        self.record(Delivery(self.clock(), self.alert, target, notification, outcome, attempts, error))

    def status(self) -> dict[str, Any]:
        return {
            "alert": self.alert,
            "kind": self.kind,
            "target": self.receiver.target if self.receiver is not None else None,
            "state": self.state,
            "lastError": self.last_error,
            "consecutiveFailures": self.consecutive_failures,
            "delivered": self.delivered,
            "failed": self.failed,
            "dropped": self.dropped,
            "attempts": self.attempts,
            "queued": self.queued,
            "lastSuccessAt": iso(self.last_success_at) if self.last_success_at else None,
            "lastFailureAt": iso(self.last_failure_at) if self.last_failure_at else None,
        }
