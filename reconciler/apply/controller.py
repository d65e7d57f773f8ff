"""The controller: one reconcile loop from Git revisions and node reports to node assignments.

Flow of one pass (`reconcile`): the last good revision of the Git source, then `steps` in order,
each an `async (Work) -> None` that reads and fills the pass's `Work`:

    register   every binary pulled (OCI) and in the registry (idempotent, by digest), or Stalled
    gate       the base fleet interface changes are judged against (the last applied revision's)
    plan       node views (hub) + rollout records (book) + approvals + metrics windows + base ->
               Snapshot -> the incremental planner -> Plan, in a worker thread; the planner holds
               back modules whose interface change waits for approval (reconciler.planner.gate),
               and each new wait is announced once
    save       book.save(plan.records): progress first, so a restart resumes mid-rollout
    apply      reconciler.apply.executor: each SetAssignment publishes a node's full table (a no-op when
               equal); the rest become events, log lines and audit lines
    report     conditions for status, written to the store when they changed (the executor), so
               followers and a restarted control plane show them; the revision marked applied
               once nothing waits
    -> come back after plan.requeue_after, or when poked (new revision, heartbeat change, node health)

Triggers only say "look again" (`poke`); bursts collapse into one pass. A pass ends in one of four
ways: done, come back later, a transient error (retried with backoff), or stalled (a human must act:
an immutable version re-used with other bytes, a digest the registry does not have).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from edge.protocol import ModuleTable
from reconciler import planner
from reconciler.apply.binaries import Binaries, StalledError
from reconciler.apply.executor import Event, Executor
from reconciler.apply.freezing import freeze_survivors
from reconciler.apply.gates import InterfaceGates
from reconciler.apply.noderows import NodeView
from reconciler.apply.nodes import NodeHub
from reconciler.apply.observe import Seen, SnapshotBuilder, metrics_for
from reconciler.apply.registry import Registry
from reconciler.apply.rollouts import RolloutBook, StaleBookError
from reconciler.apply.telemetry import DeploymentTracing
from reconciler.planner import (
    Condition,
    ConditionType,
    Plan,
    RolloutRecord,
    Snapshot,
)
from reconciler.spec.approvals import Approval
from reconciler.spec.fleet import DesiredFleet
from reconciler.store.errors import BackendError, StoreError
from reconciler.store.state import StateStore

if TYPE_CHECKING:
    from reconciler.gitsource.oci import OciClient

log = logging.getLogger("hotswap.controller")


class RevisionLike(Protocol):
    """What the controller reads of a Git revision (`reconciler.gitsource.Revision` is one)."""

    @property
    def sha(self) -> str: ...

    @property
    def fleet(self) -> DesiredFleet | None: ...

    @property
    def approvals(self) -> tuple[Approval, ...]: ...


class SourceLike(Protocol):
    @property
    def latest(self) -> RevisionLike | None: ...

    def fleet_at(self, sha: str) -> DesiredFleet | None: ...


class StopReconciling(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a `before_pass` hook to end `run()` (a replica that lost the leader lease)."""


@dataclass
class Work:
    """What one pass carries from step to step."""

    revision: RevisionLike
    desired: DesiredFleet  # the revision's fleet, then with its OCI binaries pulled
    plan: Plan | None = None  # after `plan`
    read: tuple[RolloutRecord, ...] = ()  # the book's records the plan was made from


class Role:
    """Which replica a controller is and whether it leads; alone, it always leads. Among replicas
    (reconciler.apply.leader) the lease holder calls `lead()` and `follow()`; everyone else only reads."""

    def __init__(self, replica: str = "", *, leading: bool = True) -> None:
        self.replica = replica
        self._leading = leading

    @property
    def leading(self) -> bool:
        return self._leading

    def lead(self) -> None:
        self._leading = True

    def follow(self) -> None:
        self._leading = False


@dataclass
class PassState:
    """What the last pass saw and decided, for status."""

    revision: str | None = None
    applied_revision: str | None = None
    at: float | None = None
    duration_ms: float = 0.0
    steps_ms: dict[str, float] = field(default_factory=dict)  # the last pass's wall time in each step
    passes: int = 0
    stalled: StalledError | None = None
    error: str | None = None
    # module -> its conditions, as this replica's last pass as leader reported (and wrote) them;
    # None until it has reported since it started or became leader (`Controller.conditions`)
    conditions: dict[str, tuple[Condition, ...]] | None = None
    requeue_after: float | None = None


class Controller:
    def __init__(
        self,
        *,
        store: StateStore,
        registry: Registry,
        source: SourceLike,
        hub: NodeHub,
        clock: Callable[[], float] = time.time,
        oci: OciClient | None = None,
        tracing: DeploymentTracing | None = None,
        role: Role | None = None,
        before_pass: Callable[[], Awaitable[None]] | None = None,
        book: RolloutBook | None = None,
    ) -> None:
        self.store = store
        self.binaries = Binaries(registry, oci)  # pulled (OCI) and registered, once each
        self.registry = registry
        self.source = source
        self.hub = hub
        self.clock = clock
        self.book = book if book is not None else RolloutBook(store)  # the records (the API reads them too)
        self.state = PassState()
        self.executor = Executor(hub, store, clock)  # the plan's side effects: tables, events, audit
        self._wake = asyncio.Event()
        self._snapshots = SnapshotBuilder()  # node views and tables -> the planner's, converted once each
        self._planner = planner.Planner()  # plans again only what changed since its last pass
        self._pass_done = asyncio.Condition()
        self.gates = InterfaceGates(store)
        # Several replicas on one store (reconciler.apply.leader): which one this is, whether it leads, and
        # what to run before each pass (checks the lease; raises to step down).
        self.role = role if role is not None else Role()
        self.before_pass = before_pass
        # One pass, in order (Flux's sub-reconcilers): each step reads and fills the pass's `Work`;
        # a step that must stop the pass raises (StalledError: a human must act).
        self.steps: tuple[tuple[str, Callable[[Work], Awaitable[None]]], ...] = (
            ("register", self._register),
            ("gate", self._gate),
            ("plan", self._plan_step),
            ("save", self._save),
            ("apply", self._apply),
            ("report", self._report),
        )
        # spans of the transitions applied (reconciler.apply.telemetry)
        self.tracing = tracing if tracing is not None else DeploymentTracing()

    @property
    def events(self) -> list[Event]:
        return self.executor.events

    @property
    def listeners(self) -> list[Callable[[Event], None]]:
        """Told of every event (the notifier, the console's stream); must not block."""
        return self.executor.listeners

    @property
    def replica(self) -> str:
        return self.role.replica

    @property
    def leader(self) -> bool:
        return self.role.leading

    # -- triggers -------------------------------------------------------------------------------

    def poke(self) -> None:
        """Look again soon (safe to call often: bursts collapse into one pass)."""
        self._wake.set()

    async def wait_for_pass(self, after: int, timeout: float) -> bool:
        """Wait until more than `after` passes have run (tests and the API use this to synchronise)."""
        async with self._pass_done:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._pass_done.wait_for(lambda: self.state.passes > after)
        return self.state.passes > after

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = 0.2
        while True:
            # After a start, a lead taken or a pass the store failed: plan from the nodes' fresh
            # reports, not from the silence of heartbeats the store could not take (bounded wait).
            await self.hub.wait_reports()
            self._wake.clear()
            delay: float | None
            try:
                delay = await self.reconcile()
                backoff = 0.2
            except StalledError:
                delay = None  # wait for a new revision or a human
            except (StoreError, OSError, StaleBookError) as exc:
                if isinstance(exc, BackendError):  # the store failed, and the nodes' heartbeats with it
                    self.hub.expect_reports()
                self.state.error = f"{type(exc).__name__}: {exc}"
                log.warning("reconcile failed (%s); retrying in %.1fs", self.state.error, backoff)
                delay, backoff = backoff, min(backoff * 2, 10.0)
            except StopReconciling:
                raise
            except Exception as exc:  # a bug must not stop reconciling: say so loudly, retry with backoff
                self.state.error = f"{type(exc).__name__}: {exc}"
                log.exception("reconcile pass failed unexpectedly; retrying in %.1fs", backoff)
                delay, backoff = backoff, min(backoff * 2, 10.0)
            wait = self.hub.next_health_change()
            if delay is not None:
                wait = min(wait, max(delay, 0.01))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self.hub.check_health()

    async def reconcile(self) -> float | None:
        """One pass; returns when to look again (seconds), or None when only a change should wake it."""
        started = time.perf_counter()
        try:
            if self.before_pass is not None:
                await self.before_pass()
            with self.hub.wakes_held():  # the nodes hear of the pass's tables once it has run
                return await self._reconcile()
        finally:
            self.state.duration_ms = (time.perf_counter() - started) * 1000
            self.state.passes += 1
            self.state.at = self.clock()
            async with self._pass_done:
                self._pass_done.notify_all()

    async def _reconcile(self) -> float | None:
        work = self._source()
        if work is None:
            return None
        steps_ms = self.state.steps_ms = {}
        for name, step in self.steps:
            started = time.perf_counter()
            await step(work)
            steps_ms[name] = (time.perf_counter() - started) * 1000
        return work.plan.requeue_after if work.plan is not None else None

    # -- the steps of a pass, in order (`steps`); each reads and fills the pass's `Work` --------------

    def _source(self) -> Work | None:
        """The last good revision of the Git source (it keeps serving while a newer one fails)."""
        revision = self.source.latest
        if revision is None or revision.fleet is None:
            self.state.revision = None
            return None
        if self.state.revision != revision.sha:
            freeze_survivors()  # a new revision's objects live long: keep full collections off the planner's p99
        self.state.revision = revision.sha
        return Work(revision, revision.fleet)

    async def _register(self, work: Work) -> None:
        """Every binary the revision names pulled (OCI) and in the registry, or the pass stalls."""
        try:
            desired, pulled = await asyncio.to_thread(self.binaries.prepare, work.desired)
            for module, message in pulled:
                self.executor.event("ArtifactPulled", message, module)
        except StalledError as exc:
            if self.state.stalled is None or self.state.stalled.message != exc.message:
                self.executor.event(exc.reason, exc.message, warning=True)
            self.state.stalled = exc
            raise
        self.state.stalled = None
        work.desired = desired

    async def _gate(self, work: Work) -> None:
        """The base interface changes are judged against (read once: the last applied revision's fleet)."""
        if not self.gates.ready:
            await asyncio.to_thread(self.gates.load_base, self.source)

    async def _plan_step(self, work: Work) -> None:
        """The snapshot and the plan, off the loop (`_plan`); the planner holds back what waits."""
        now = self.clock()
        views, tables = await self.hub.view_in_turns(now)  # a large fleet's over a few turns
        seen = self._seen(views, tables)
        work.read = seen.records
        work.plan = await asyncio.to_thread(self._plan, work.desired, work.revision.approvals, now, seen)
        for module, message in self.gates.announce(work.plan.waiting):
            self.executor.event("AwaitingInterfaceApproval", message, module, warning=True)

    async def _save(self, work: Work) -> None:
        """Progress recorded before anything is applied: a restart resumes mid-rollout. A record an
        operator changed while the pass planned (a pause, say) is not written over: the pass fails
        with StaleBookError and the next one plans from the operator's record."""
        assert work.plan is not None
        await asyncio.to_thread(self.book.save, work.plan.records, work.revision.sha, work.read)

    async def _apply(self, work: Work) -> None:
        assert work.plan is not None
        with self.tracing.step_spans(work.plan.actions, self.book.get) as traces:
            await self.apply(work.plan, traces)

    async def _report(self, work: Work) -> None:
        """Conditions for status, and the revision marked applied once nothing waits."""
        assert work.plan is not None
        conditions = dict(work.plan.status)
        await self.executor.write_conditions(conditions)  # before memory: both say the same
        self.state.conditions = conditions
        self.state.requeue_after = work.plan.requeue_after
        self.state.error = None
        sha = work.revision.sha
        if not work.plan.waiting and self.state.applied_revision != sha:
            await asyncio.to_thread(self._mark_applied, sha)
            self.state.applied_revision = sha
            self.gates.applied(work.desired)

    def forget(self) -> None:
        """Drop what earlier passes left in memory and read the rollout book again (a replica that
        becomes leader plans from what the others wrote)."""
        self._snapshots.forget()
        self._planner.reset()
        self.book.reload()
        self.state.conditions = None  # until its first pass, status reads what the last leader wrote
        self.executor.forget()

    def _mark_applied(self, sha: str) -> None:
        self.store.record_revision_seen(sha, verified=True)
        self.store.mark_revision_applied(sha)

    def snapshot(self, desired: DesiredFleet, approvals: tuple[Approval, ...], now: float) -> Snapshot:
        """What a pass plans from, now (on the loop; the API's diff and snapshot routes use it too)."""
        return self._snapshots.build(desired, approvals, now, self._observe(now), self.gates.base)

    def _observe(self, now: float) -> Seen:
        """What the snapshot reads of state the event loop changes (on the loop, cheap): the hub's
        views and tables as they are now, the rollout book, the metrics windows."""
        views = self.hub.view(now)
        # The node's table is what the hub holds now, not what this controller last published to
        # it: a node deleted and registered again, or a table taken back, must be published again.
        return self._seen(views, [self.hub.table(view.id) for view in views])

    def _seen(self, views: list[NodeView], tables: list[ModuleTable | None]) -> Seen:
        records = self.book.records()
        return Seen(views, tables, records, metrics_for(self.hub.metrics, records))

    def _plan(self, desired: DesiredFleet, approvals: tuple[Approval, ...], now: float, seen: Seen) -> Plan:
        """The snapshot and the plan, in a worker thread: at 1,000 nodes the conversion of the nodes'
        reports that changed and the plan take tens to hundreds of ms of CPU that every long-poll
        answer and heartbeat would otherwise wait behind. Its inputs are immutable; one pass runs at a time."""
        return self._planner.plan(self._snapshots.build(desired, approvals, now, seen, self.gates.base))

    async def apply(self, result: Plan, traces: Mapping[str, str] | None = None) -> None:
        """The plan's side effects (`reconciler.apply.executor`), the tables carrying `traces` (module ->
        traceparent of its step's span); remembers what each node now holds."""
        for node_id, held, table in await self.executor.apply(result, traces):
            self._snapshots.given(node_id, held, table)

    def report(self, reason: str, message: str, module: str | None = None, *, warning: bool = False) -> None:
        """An event from beside the controller (update automation): listeners, log and audit. Loop only."""
        self.executor.event(reason, message, module, warning=warning)

    # -- status ---------------------------------------------------------------------------------

    async def conditions(self) -> Mapping[str, tuple[Condition, ...]]:
        """Every module's conditions as the leader last reported them: this replica's own once it
        has reported as leader, else those in the store (a follower; a start before its first pass)."""
        own = self.state.conditions
        if own is not None and self.leader:
            return own
        return await self.executor.stored_conditions()

    async def conditions_of(self, module: str) -> tuple[Condition, ...]:
        """`conditions()` of one module (one row read, on a follower)."""
        own = self.state.conditions
        if own is not None and self.leader:
            return own.get(module, ())
        return (await self.executor.stored_conditions(module)).get(module, ())

    def module_conditions(self, module: str) -> tuple[Condition, ...]:
        """A module's conditions as this replica's last pass reported them (in memory only; the
        API reads `conditions()`, which a follower answers from the store)."""
        return (self.state.conditions or {}).get(module, ())

    def stalled_condition(self) -> Condition | None:
        stalled = self.state.stalled
        if stalled is None:
            return None
        return Condition(ConditionType.STALLED, True, stalled.reason, stalled.message)
