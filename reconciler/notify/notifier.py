"""The notifier: routes control-plane events to the alerts that want them, in the background.

Flow:

    controller Event --on_event (listener, returns at once)--> Notification (record, revision, action)
    Git source status, node views --tick (every second)--> watchers, scaling evaluator --> Notification
                  (the nodes that changed since the last tick, with `Observed.node_changes`; at most
                  NODE_CHANGES_A_TICK of them a tick, the rest in ticks on the loop's next turns)
    Notification --publish--> each Alert whose spec wants it --Worker.offer--> bounded queue
                  (with an outbox: a row per alert in the state store, written from a thread)
    Worker task --receiver.send, retries with backoff--> webhook | Slack | email
    outcome --> counters and state per receiver, bounded history, audit log (in a thread)

Nothing here runs inside the reconcile pass except `on_event`, which builds the notification from
memory (the rollout book is in memory) and appends it to queues; a receiver that is slow or down
delays only its own worker. `status()` is the JSON for the API and `hotswap status`: each
receiver's state (Ready, Failing, Misconfigured) with its last error, recent deliveries, and the
active scaling signals. Alerts live in Git: `update_alerts` follows a new revision's alerts,
keeping the worker (queue, counters, state) of every alert that did not change.
`ControlPlane.install_notifier(alerts)` wires one into a running plane, with its queues in the
plane's state store (reconciler.notify.outbox), so they outlive a restart and replicas share them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from reconciler.notify.delivery import Delivery, RetryPolicy, Worker
from reconciler.notify.errors import ReceiverConfigError
from reconciler.notify.events import Notification, from_controller
from reconciler.notify.outbox import Outbox, StoredWorker
from reconciler.notify.receivers import HttpClient, Receiver, build_receiver
from reconciler.notify.scaling import NodeSample, ScalingEvaluator, Thresholds, to_notification
from reconciler.notify.watch import NodeLike, NodeWatcher, SourceWatcher, StallLike, StatusLike
from reconciler.planner import RolloutRecord
from reconciler.spec.alerts import Alert, AlertSpec
from reconciler.store.outbox import OutboxStore

if TYPE_CHECKING:
    from reconciler.apply.executor import Event

__all__ = ["AuditLog", "Notifier", "Observed", "RolloutLookup", "Settings"]

log = logging.getLogger("hotswap.notify")

STATUS_DELIVERIES = 50
NODE_CHANGES_A_TICK = 1000  # node views a tick reads in one turn of the event loop (a switch changes them all)


class RolloutLookup(Protocol):
    """The rollout book's read side (`reconciler.apply.rollouts.RolloutBook`)."""

    def get(self, rollout_id: str) -> RolloutRecord | None: ...

    def revision_of(self, rollout_id: str) -> str | None: ...


class AuditLog(Protocol):
    """`StateStore.append_audit`."""

    def __call__(self, actor: str, action: str, subject: str, detail: dict[str, Any] | None = None) -> object: ...


class SampledNode(NodeLike, Protocol):
    @property
    def cpu_percent(self) -> float: ...


@dataclass(frozen=True)
class Observed:
    """Where the notifier looks; each part is optional (tests give only what they drive)."""

    rollouts: RolloutLookup | None = None
    source_status: Callable[[], StatusLike] | None = None
    controller_stall: Callable[[], StallLike | None] | None = None
    nodes: Callable[[float], Sequence[SampledNode]] | None = None
    # (the nodes that may have changed, at most the limit given, the rest left for the next call; the
    # ids of nodes gone) since the last call; the first call gives every node
    # (`reconciler.apply.nodechanges.NodeChanges.take`). Taken over `nodes` when given.
    node_changes: Callable[[float, int], tuple[Sequence[SampledNode], Sequence[str]]] | None = None
    revision: Callable[[], str | None] | None = None  # the revision the controller works on
    desired_version: Callable[[str], str | None] | None = None  # the version Git asks for, by module
    leading: Callable[[], bool] | None = None  # with several replicas, only the leader watches and tells


@dataclass(frozen=True)
class Settings:
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    tick_seconds: float | None = 1.0  # how often watchers and scaling look; None: only when `tick` is called
    history: int = 500  # deliveries kept in memory
    node_grace_seconds: float = 20.0
    thresholds: Thresholds = field(default_factory=Thresholds)
    base_url: str = ""  # the control plane's URL, for links
    tls_context: ssl.SSLContext | None = None  # trust for SMTP STARTTLS; default: the system's CAs
    drain_seconds: float = 2.0  # how long `stop` lets queued notifications go out
    outbox_poll_seconds: float = 1.0  # with an outbox: how often workers look for rows of other replicas


@dataclass(frozen=True)
class _Route:
    alert: Alert
    worker: Worker

    @property
    def spec(self) -> AlertSpec:
        return self.alert.spec


class Notifier:
    def __init__(
        self,
        alerts: Sequence[Alert],
        *,
        observed: Observed | None = None,
        settings: Settings | None = None,
        env: Mapping[str, str] | None = None,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.time,
        outbox: OutboxStore | None = None,
    ) -> None:
        self.observed = observed or Observed()
        self.settings = settings or Settings()
        self.audit = audit
        self.clock = clock
        self.http = HttpClient()
        self.history: deque[Delivery] = deque(maxlen=self.settings.history)
        self.recent: deque[Notification] = deque(maxlen=100)
        self.published = 0
        self.scaling = ScalingEvaluator(self.settings.thresholds)
        self.source_watcher = SourceWatcher()
        self.node_watcher = NodeWatcher(self.settings.node_grace_seconds)
        self._samples: dict[str, NodeSample] = {}  # with `node_changes`: each node's last sample
        self.sampled = 0  # node views looked at by ticks (a tick looks at the nodes that changed)
        self.behind = False  # the last tick left changed nodes for the next: `run` ticks again next turn
        self._audit_lines: deque[dict[str, Any]] = deque(maxlen=1000)
        self._audit_writing = 0
        self._audit_ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.routes: list[_Route] = []
        self._worker_tasks: dict[Worker, asyncio.Task[None]] = {}
        self._running = False
        self.outbox = Outbox(outbox, self.settings.retry, clock) if outbox is not None else None
        self._outbox_tasks: set[asyncio.Task[None]] = set()
        self.update_alerts(alerts)

    def _route(self, alert: Alert) -> _Route:
        receiver: Receiver | None = None
        problem = None
        try:
            receiver = build_receiver(alert, self.env, self.http, self.settings.tls_context)
        except ReceiverConfigError as exc:
            problem = str(exc)
            log.warning("%s; its events are not sent", problem)
        name, retry = alert.metadata.name, self.settings.retry
        if self.outbox is not None:
            poll = self.settings.outbox_poll_seconds
            stored = StoredWorker(
                name, receiver, retry, self._record, self.outbox, problem=problem, clock=self.clock, poll_seconds=poll
            )
            return _Route(alert, stored)
        return _Route(alert, Worker(name, receiver, retry, self._record, problem=problem, clock=self.clock))

    def update_alerts(self, alerts: Sequence[Alert]) -> None:
        """Follow the alerts of a new revision: unchanged alerts keep their worker (queue, counters,
        state); new or changed ones get a fresh worker; removed ones stop (their queue is dropped)."""
        kept = {r.alert.metadata.name: r for r in self.routes}
        routes = []
        for alert in alerts:
            old = kept.get(alert.metadata.name)
            routes.append(old if old is not None and old.alert == alert else self._route(alert))
        self.routes = routes
        live = {r.worker for r in routes}
        for worker in [w for w in self._worker_tasks if w not in live]:
            self._worker_tasks.pop(worker).cancel()
        gone = set(kept) - {r.alert.metadata.name for r in routes}
        if self.outbox is not None and gone and self._running:
            for name in sorted(gone):  # their rows would wait for a worker forever
                task = asyncio.create_task(self.outbox.forget(name), name=f"notify-forget-{name}")
                self._outbox_tasks.add(task)
                task.add_done_callback(self._outbox_tasks.discard)
        if self._running:
            self._start_workers()

    def _start_workers(self) -> None:
        for route in self.routes:
            worker = route.worker
            if worker.receiver is not None and worker not in self._worker_tasks:
                self._worker_tasks[worker] = asyncio.create_task(worker.run(), name=f"notify-{worker.alert}")

    # -- events in ------------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """The controller's listener: enrich and queue; never waits, never raises."""
        try:
            rollouts = self.observed.rollouts
            record = rollouts.get(event.rollout) if rollouts is not None and event.rollout else None
            if rollouts is not None and event.rollout:
                revision = rollouts.revision_of(event.rollout)
            else:
                revision = self.observed.revision() if self.observed.revision is not None else None
            version = None
            if record is None and event.module and self.observed.desired_version is not None:
                version = self.observed.desired_version(event.module)
            notification = from_controller(
                event,
                record=record,
                revision=revision,
                desired_version=version,
                base_url=self.settings.base_url,
            )
            self.publish(notification)
        except Exception:
            log.exception("could not notify about %s", event.reason)

    def publish(self, notification: Notification) -> int:
        """Queue `notification` for every alert that wants it; how many do."""
        self.recent.append(notification)
        self.published += 1
        routed = 0
        for route in self.routes:
            if route.spec.wants(notification.type, notification.severity, notification.module):
                route.worker.offer(notification)
                routed += 1
        return routed

    def tick(self, now: float | None = None) -> list[Notification]:
        """Look at the Git source, the nodes and the scaling triggers once; publish what changed."""
        now = self.clock() if now is None else now
        found: list[Notification] = []
        observed = self.observed
        if observed.source_status is not None or observed.controller_stall is not None:
            status = observed.source_status() if observed.source_status is not None else None
            stall = observed.controller_stall() if observed.controller_stall is not None else None
            found += self.source_watcher.observe(now, status, stall)
        if observed.node_changes is not None:
            changed, gone = observed.node_changes(now, NODE_CHANGES_A_TICK)
            self.behind = len(changed) >= NODE_CHANGES_A_TICK
            self.sampled += len(changed)
            found += self.node_watcher.observe_changes(now, changed, gone)
            for node_id in gone:
                self._samples.pop(node_id, None)
            for v in changed:
                self._samples[v.id] = NodeSample(v.id, v.region, v.cpu_percent, len(v.running), v.status == "Healthy")
            if not self.behind:  # the regions' figures once every node's sample is current
                found += [to_notification(change) for change in self.scaling.evaluate(now, self._samples.values())]
        elif observed.nodes is not None:
            views = observed.nodes(now)
            self.sampled += len(views)
            found += self.node_watcher.observe(now, views)
            samples = [NodeSample(v.id, v.region, v.cpu_percent, len(v.running), v.status == "Healthy") for v in views]
            found += [to_notification(change) for change in self.scaling.evaluate(now, samples)]
        for notification in found:
            self.publish(notification)
        return found

    # -- outcomes -------------------------------------------------------------------------------

    def _record(self, delivery: Delivery) -> None:
        self.history.append(delivery)
        self._audit_lines.append(
            {
                "actor": "notifier",
                "action": f"notify.{delivery.outcome}",
                "subject": delivery.alert,
                "detail": {
                    "type": delivery.notification.type,
                    "id": delivery.notification.id,
                    "module": delivery.notification.module,
                    "deploymentId": delivery.notification.deployment,
                    "receiver": delivery.receiver,
                    "attempts": delivery.attempts,
                    "error": delivery.error,
                },
            }
        )
        self._audit_ready.set()

    def _write_audit(self, lines: list[dict[str, Any]]) -> None:
        assert self.audit is not None
        for line in lines:
            try:
                self.audit(**line)
            except Exception as exc:  # the audit log being down must not stop notifications
                log.warning("audit log: %s: %s", type(exc).__name__, exc)

    async def _audit_loop(self) -> None:
        while True:
            await self._audit_ready.wait()
            self._audit_ready.clear()
            await self._flush_audit()

    async def _flush_audit(self) -> None:
        lines = list(self._audit_lines)
        self._audit_lines.clear()
        if lines and self.audit is not None:
            self._audit_writing += 1  # not idle until these lines are in the log
            try:
                await asyncio.to_thread(self._write_audit, lines)
            finally:
                self._audit_writing -= 1

    # -- running --------------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing being sent, no audit line waiting."""
        written = self.outbox is None or self.outbox.idle
        return written and all(r.worker.idle for r in self.routes) and not self._audit_lines and not self._audit_writing

    async def drain(self, timeout: float) -> bool:
        """Wait until every queue is empty (or `timeout` passes); whether it is."""
        deadline = time.monotonic() + timeout
        while not self.idle and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.idle

    async def run(self) -> None:
        """Deliver, audit and (every `tick_seconds`) watch, until cancelled."""
        helpers: list[asyncio.Task[None]] = []
        try:  # a stop while starting (the outbox's first write) still closes the HTTP session
            await self.http.open()
            if self.outbox is not None:
                await self.outbox.release_claims()
            self._running = True
            self._start_workers()
            helpers.append(asyncio.create_task(self._audit_loop(), name="notify-audit"))
            if self.outbox is not None:
                helpers.append(asyncio.create_task(self.outbox.run(), name="notify-outbox"))
            while True:
                if self.settings.tick_seconds is None:
                    await asyncio.Event().wait()
                    continue
                self.behind = False
                try:
                    if self.observed.leading is None or self.observed.leading():
                        self.tick()
                except Exception:
                    log.exception("notifier tick failed")
                    self.behind = False  # a tick that fails again is not retried every turn
                await asyncio.sleep(0 if self.behind else self.settings.tick_seconds)  # the rest, next turn
        finally:
            self._running = False
            tasks = [*helpers, *self._worker_tasks.values(), *self._outbox_tasks]
            self._worker_tasks.clear()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                if self.outbox is not None:
                    await self.outbox.flush()  # what was published last is in the store for the next run
            with contextlib.suppress(Exception):
                await self._flush_audit()
            await self.http.close()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> asyncio.Task[None]:
        """Run in a background task of the running loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="notifier")
        return self._task

    async def stop(self) -> None:
        """Let queued notifications go out for up to `drain_seconds`, then stop."""
        if self._task is None:
            return
        if not self._task.done():
            await self.drain(self.settings.drain_seconds)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        await self._flush_audit()  # what the last deliveries said still reaches the audit log

    # -- status ---------------------------------------------------------------------------------

    def receiver_status(self) -> list[dict[str, Any]]:
        out = []
        for route in self.routes:
            status = route.worker.status()
            status["eventTypes"] = list(route.spec.event_types)
            status["severity"] = route.spec.severity.value
            status["modules"] = list(route.spec.modules)
            out.append(status)
        return out

    def status(self) -> dict[str, Any]:
        """Receivers (state, counters, last error), recent deliveries and active scaling signals."""
        return {
            "receivers": self.receiver_status(),
            "failing": [r.worker.alert for r in self.routes if r.worker.state != "Ready"],
            "published": self.published,
            "deliveries": [d.to_json() for d in list(self.history)[-STATUS_DELIVERIES:]],
            "scaling": [s.to_json() for s in self.scaling.active()],
        }
