"""The node hub: the control plane's side of the node protocol (`edge.nodeapi`).

It registers nodes, takes their heartbeats (what they run and their metric deltas), publishes each
node's module table and wakes the node's long-poll at once, and says which nodes are healthy: a node
that missed three heartbeats is Unhealthy until it speaks again. The executor publishes through it;
the planner reads its snapshot. State lives in the state store so a restarted control plane knows
its nodes and their generations; a heartbeat, a registration or a health change pokes the
reconciler ("look again"), never more. Tables are encoded (and signed, with `signer`) once per
distinct content (`reconciler.apply.tables`): the nodes that run the same table share its bytes.

Where it sits: between the API's node routes (`reconciler.api.control`), which call it for every
node, and the controller and executor, which read its views and publish through it; with other
replicas on the same store (`peers`, `reconciler.apply.leader.Replicas`) it stores heartbeats as
shared rows and takes the rows they wrote (`merge`). Its parts, each in its own module: health
(`NodeHealth`, `reconciler.apply.nodehealth`, also for a node heard by another replica), each node's
table and long-poll bytes (`NodeTables`, `reconciler.apply.nodetables`), the watcher of changed nodes
(`NodeChanges`, `reconciler.apply.nodechanges`) and a row's view (`reconciler.apply.noderows`).

Who watches for changes (the notifier) asks `watch()` for the nodes whose view may have changed,
not for the whole fleet every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Protocol

from edge.nodeapi import Heartbeat, HeartbeatAnswer, NodeStatus, Registration, RegistrationAnswer
from edge.protocol import SERVING_CACHED_TABLE, ModuleEntry, ModuleTable
from reconciler.apply.metricswindow import MetricsWindow
from reconciler.apply.nodechanges import NodeChanges
from reconciler.apply.nodehealth import MISSED_HEARTBEATS, NodeHealth, Peers
from reconciler.apply.noderows import NodeView, RunningWeights, SharedReports, epoch, not_back, progress, view_of
from reconciler.apply.nodetables import NodeTables
from reconciler.apply.tables import EncodedTable, Signer, TableEncoder
from reconciler.apply.threadbatch import RowBatch
from reconciler.apply.turns import TurnShare
from reconciler.errors import ReconcilerError
from reconciler.store.audit import AuditLog
from reconciler.store.errors import ConflictError
from reconciler.store.nodes import NodeStore
from reconciler.store.records import NodeRecord

__all__ = ["HubClosedError", "NodeHub"]

RECONNECT_SECONDS = 5.0  # a node's agent retries a lost control plane at least this often (edge.agent)
TABLE_BATCH_LIMIT = 8192  # tables in one write: a whole fleet's pass
VIEWS_A_TURN = 1000  # node views a pass reads in one turn of the event loop (NodeHub.view_in_turns)
PUBLISH_SLICE = 500  # nodes whose published tables the hub takes in one turn (NodeHub.publish_all)
REGISTER_TRIES = 3  # a registration whose row a delete removes between its writes makes it again, this often
# A pass's answers go out over a few turns of the event loop: WAKE_SLICE_MIN or 1/WAKE_TURNS of them a
# turn, whichever is more (a fixed 64 a turn made a 5,000-node switch 43 s: a turn there lasts 100-300 ms)
WAKE_TURNS = 5
WAKE_SLICE_MIN = 200


class HubClosedError(ReconcilerError):
    """The control plane is stopping: a long-poll gets no answer from it (the API says 503)."""


def _same_report(before: NodeRecord, row: NodeRecord) -> bool:
    """Whether `row`, the same node's, holds what `before` held of all that a view is made from
    (`noderows.view_of`) but its table: the same report (rows are replaced, never changed in place),
    heartbeat time and address."""
    return (
        before.reported is row.reported
        and before.last_heartbeat_at == row.last_heartbeat_at
        and (before.region, before.url, before.max_modules) == (row.region, row.url, row.max_modules)
    )


class HubStore(NodeStore, AuditLog, Protocol):
    """What the hub needs of the state store: node rows, and the audit log for joins and leaves."""


class NodeHub:
    def __init__(
        self,
        store: HubStore,
        *,
        heartbeat_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
        poke: Callable[[], None] = lambda: None,
        public_key: str | None = None,
        issuer: str | None = None,
        signer: Signer | None = None,
        metrics: MetricsWindow | None = None,
        peers: Peers | None = None,
    ) -> None:
        self.store = store
        self.heartbeat_seconds = heartbeat_seconds
        self.clock = clock
        self.poke = poke
        self.public_key = public_key
        self.issuer = issuer
        self.metrics = metrics if metrics is not None else MetricsWindow()
        self.encoder = TableEncoder(signer, issuer)
        # Store writes: one thread hop for many; heartbeats and tables one transaction per batch
        # heartbeats to a shared store, with their metric deltas, one transaction per batch too
        self.shared_heartbeat_writes = RowBatch(store.record_shared_heartbeats, store.record_shared_heartbeat)
        self.heartbeat_writes = RowBatch(store.record_heartbeats, lambda beat: store.record_heartbeat(*beat))
        # A pass's tables all arrive at once: in one transaction, not in turns that each wait behind
        # the answers and heartbeats the turn before woke (TABLE_BATCH_LIMIT)
        self.table_writes = RowBatch(
            store.publish_assignments, lambda table: store.publish_assignment(*table), limit=TABLE_BATCH_LIMIT
        )
        self.turns = TurnShare()  # the node protocol's handlers' share of each turn (reconciler.apply.turns)
        self._node_tables = NodeTables(self.encoder)
        self._tables = self._node_tables.by_node  # the same map: read on every heartbeat and long-poll
        self._changed: dict[str, asyncio.Event] = {}
        self._held: set[str] | None = None  # nodes given a table while wakes are held (`wakes_held`)
        self._nodes: dict[str, NodeRecord] = {}
        self._closing = False
        self.peers = peers
        self._heard: set[str] = set()  # nodes that reported since this hub started, or since `expect_reports`
        self._awaiting = True  # the next `wait_reports` waits for them
        self._awaited: set[str] | None = None  # ... for these (None: every node not draining)
        self._reported = asyncio.Event()
        self._views: dict[str, tuple[NodeRecord, NodeView]] = {}  # the last view of each node row
        self._shared = SharedReports()  # one `running` tuple for the views that report it
        self._running = RunningWeights()
        self._watchers: weakref.WeakSet[NodeChanges] = weakref.WeakSet()
        # What a pass reads (`view_in_turns`): each node's view, kept up to date from the changes a
        # watcher of the hub's own gives, and the node ids in order (None: to sort again)
        self._fleet: NodeChanges | None = None
        self._fleet_views: dict[str, NodeView] = {}
        self._fleet_order: list[str] | None = None
        read_at = self.clock()
        for node in store.list_nodes():
            self._remember(node)
        self.health = NodeHealth(
            self._nodes, heartbeat_seconds=heartbeat_seconds, clock=clock, peers=peers, read_at=read_at
        )

    # -- bookkeeping ----------------------------------------------------------------------------

    def _remember(self, node: NodeRecord) -> None:
        """The node's row and the table it holds."""
        self._keep(node)
        self._node_tables.stored(node)

    def _keep(self, node: NodeRecord) -> None:
        """The node's row as this hub knows it now; watchers look at it again."""
        self._running.replace(self._nodes.get(node.id), node)
        self._nodes[node.id] = node
        self._touch(node.id, node)

    def _touch(self, node_id: str, node: NodeRecord | None = None) -> None:
        for watcher in self._watchers:
            watcher.changed(node_id, node)

    def _forget(self, node_id: str) -> bool:
        """Drop a node (deleted, here or by another replica); whether it was known."""
        node = self._nodes.pop(node_id, None)
        if node is None:
            return False
        self._running.replace(node, None)
        self._node_tables.forget(node_id)
        view = self._views.pop(node_id, None)
        if view is not None:
            self._shared.drop(view[1].running)
        self.health.forget(node_id)
        self._wake(node_id)
        for watcher in self._watchers:
            watcher.gone(node_id)
        return True

    def _wake(self, node_id: str) -> None:
        # At once. A pass's wakes, held until it has run, go out a slice a loop turn (`_wake_in_turns`).
        event = self._changed.pop(node_id, None)
        if event is not None:
            event.set()

    def waiting_first(self, node_ids: Iterable[str]) -> list[str]:
        """`node_ids`, those with a long-poll waiting on this hub first (each part sorted)."""
        waiting: list[str] = []
        rest: list[str] = []
        for node_id in sorted(node_ids):
            (waiting if node_id in self._changed else rest).append(node_id)
        return waiting + rest

    @contextlib.contextmanager
    def wakes_held(self) -> Iterator[None]:
        """Within the block, the long-polls of nodes given a new table by `publish` are woken only when
        it ends (a pass's answers go out once the pass is done: they no longer queue on the event loop
        ahead of the pass's own next steps). Other wakes (a registration, a row from another replica,
        a node gone) are not held."""
        if self._held is not None:  # already held by an outer block
            yield
            return
        self._held = set()
        try:
            yield
        finally:
            held, self._held = self._held, None
            self._wake_in_turns(list(held), max(WAKE_SLICE_MIN, -(-len(held) // WAKE_TURNS)))

    def _wake_in_turns(self, node_ids: list[str], per_turn: int) -> None:
        """Wake `per_turn` of `node_ids` now and the rest on the event loop's next turns, so that one
        turn does not write a whole fleet's answers (WAKE_TURNS)."""
        for node_id in node_ids[:per_turn]:
            self._wake(node_id)
        if len(node_ids) > per_turn:
            asyncio.get_running_loop().call_soon(self._wake_in_turns, node_ids[per_turn:], per_turn)

    def known(self, node_id: str) -> bool:
        return node_id in self._nodes

    def count(self) -> int:
        """How many nodes this hub knows."""
        return len(self._nodes)

    # -- health (reconciler.apply.nodehealth) --------------------------------------------------------

    def status_of(self, node: NodeRecord, now: float) -> NodeStatus:
        """Draining, Unhealthy or Healthy as of `now` (`NodeHealth.status_of`)."""
        return self.health.status_of(node, now)

    def silent(self, now: float) -> list[str]:
        """Nodes whose heartbeats look missing as of `now` (`NodeHealth.silent`)."""
        return self.health.silent(now)

    def due(self, now: float) -> list[str]:
        """Nodes heard by another replica whose rows must be read again to judge them (`NodeHealth.due`)."""
        return self.health.due(now)

    def check_health(self, node_ids: Iterable[str] | None = None) -> bool:
        """Recompute node health (of `node_ids` only: the rows that just changed; the controller's
        timer checks every node); True (and a poke) when some node changed status. With peers, the
        timer's check also asks them to read again the rows of nodes that are `due`."""
        changed = self.health.check(node_ids)
        for node_id in changed:
            self._touch(node_id)
        if changed:
            self.poke()
        return bool(changed)

    def next_health_change(self) -> float:
        """Seconds until some node's health may change by the clock (`NodeHealth.next_change`)."""
        return self.health.next_change()

    def _view(self, node: NodeRecord, now: float) -> NodeView:
        generation, status = self._tables[node.id].generation, self.health.status_of(node, now)
        cached = self._views.get(node.id)  # rows are replaced on change: the same row, the same view
        if cached is not None and cached[0] is node and cached[1].generation == generation:
            return cached[1] if cached[1].status == status else replace(cached[1], status=status)
        if cached is not None and _same_report(cached[0], node):
            # A new row for a new table (a pass's publish): the report is the one the view was made
            # from, so the view is too, but for its table and health: a tenth of the cost of making it
            # again, which a pass's views of a whole fleet after a switch paid in one turn.
            view = replace(cached[1], generation=generation, status=status)
            self._views[node.id] = (node, view)
            return view
        view = view_of(node, status, generation, self._shared)
        if cached is not None:
            self._shared.drop(cached[1].running)
        self._views[node.id] = (node, view)
        return view

    def view(self, now: float | None = None) -> list[NodeView]:
        """Every known node with its health as of `now` (wall clock by default)."""
        now = self.clock() if now is None else now
        return [self._view(node, now) for node in sorted(self._nodes.values(), key=lambda n: n.id)]

    async def view_in_turns(self, now: float | None = None) -> tuple[list[NodeView], list[ModuleTable | None]]:
        """`view`, and each node's table, as a pass reads them: made again only for the nodes that may
        have changed since the last call (a watcher of the hub's own, `NodeChanges`: rows replaced,
        nodes dropped, health changes, heartbeats come due by the clock), VIEWS_A_TURN a turn of the
        event loop. Every node's view each pass was 10-15 ms on the loop at 5,000 nodes, and a tenth
        of the leader's CPU (bench/scale.py --profile). A node forgotten meanwhile is left out; one
        registered meanwhile comes in the next pass."""
        now = self.clock() if now is None else now
        if self._fleet is None:
            self._fleet = self.watch()  # its first take gives every node
        views = self._fleet_views
        while True:
            changed, gone = self._fleet.take(now, VIEWS_A_TURN)
            for node_id in gone:
                if views.pop(node_id, None) is not None:
                    self._fleet_order = None
            for view in changed:
                if view.id not in views:
                    self._fleet_order = None
                views[view.id] = view
            if len(changed) < VIEWS_A_TURN:
                break
            await asyncio.sleep(0)
        if self._fleet_order is None:
            self._fleet_order = sorted(views)
        order = self._fleet_order
        return [views[node_id] for node_id in order], [self._tables.get(node_id) for node_id in order]

    def running_weights(self, module: str) -> dict[str, int]:
        """Version -> the sum of its weights over the nodes' last reports, for `module`, whatever the
        nodes' health (kept as rows change: the API shows it on every rollout)."""
        return self._running.of(module)

    def views_of(self, node_ids: Iterable[str], now: float | None = None) -> list[NodeView]:
        """The views of these nodes (the known ones, in the order given), as `view` gives them."""
        now = self.clock() if now is None else now
        return [self._view(node, now) for node_id in node_ids if (node := self._nodes.get(node_id)) is not None]

    def watch(self) -> NodeChanges:
        """A watcher of node changes: `take(now)` gives the views that may have changed since it last did."""
        watcher = NodeChanges(self._nodes, self.health, self.views_of)
        self._watchers.add(watcher)
        return watcher

    # -- the protocol ---------------------------------------------------------------------------

    async def register(self, registration: Registration) -> RegistrationAnswer:
        existing = self._nodes.get(registration.id)
        if existing is not None:  # a node whose heartbeat failed registers again: it is not silent
            self.health.contact(registration.id, self.clock())
        record = NodeRecord(
            id=registration.id,
            region=registration.region,
            url=registration.url,
            status=NodeStatus.HEALTHY,
            max_modules=registration.max_modules,
            generation=registration.generation,  # a new row numbers on from what the node applied
        )
        node = await asyncio.to_thread(self._register, record)
        before = self._nodes.get(node.id)
        self.health.heard_here(node.id)
        if before is None:
            self._remember(node)
        else:
            # The row was read in a worker thread: a table published meanwhile (the node's other loop
            # registers too, at start, while the first registration's pass publishes) is newer than it.
            node = not_back(before, node)
            if node.generation > before.generation:
                self._remember(node)
                self._wake(node.id)
            else:
                self._keep(node)
        if self.peers is not None:
            self.peers.announce(node.id)
        if existing is None or existing.region != node.region:
            await asyncio.to_thread(
                self.store.append_audit,
                actor=registration.id,
                action="node.registered",
                subject=registration.id,
                detail={"region": node.region, "url": node.url},
            )
        self.check_health([node.id])
        self.poke()
        generation = self._tables[node.id].generation
        return RegistrationAnswer(
            id=node.id,
            heartbeat_seconds=self.heartbeat_seconds,
            generation=generation,
            public_key=self.public_key,
            issuer=self.issuer,
            floor=self.encoder.floor(node.id, registration.nonce, generation) if registration.nonce else None,
        )

    def _register(self, record: NodeRecord) -> NodeRecord:
        """Upsert the node and count the registration as contact (it is healthy from now); a drained
        node stays drained when it registers again. A delete that lands between the writes (an
        admin's, racing the node's registration) is followed by the registration: the row is made
        again, from the generation the delete kept (`SqlNodes.delete_node`); a 409 if deletes land
        between every try."""
        for _ in range(REGISTER_TRIES):
            before = self.store.get_node(record.id)
            if before is not None and before.status == NodeStatus.DRAINING:
                record = replace(record, status=NodeStatus.DRAINING)
            node = self.store.upsert_node(record)
            self.store.record_heartbeat(node.id, dict(node.reported), datetime.fromtimestamp(self.clock(), UTC))
            found = self.store.get_node(node.id)
            if found is not None:
                return found
        raise ConflictError(
            f"node {record.id!r} was deleted while it registered, {REGISTER_TRIES} times: register again"
        )

    async def heartbeat(self, node_id: str, beat: Heartbeat) -> HeartbeatAnswer | None:
        """Record a heartbeat; None when the node is unknown (it must register again)."""
        if node_id not in self._nodes and not await self.load(node_id):
            return None
        assigned = self._node_tables.assigned.get(node_id, frozenset())
        if any((m.module, m.version) not in assigned for m in beat.metrics):
            beat = beat.model_copy(
                update={"metrics": tuple(m for m in beat.metrics if (m.module, m.version) in assigned)}
            )
        reported = beat.model_dump(mode="json", by_alias=True, exclude={"metrics"})
        now = self.clock()
        self.health.contact(node_id, now)  # before the write, which a store going away can hold
        at = datetime.fromtimestamp(now, UTC)
        if self.peers is None:
            recorded = await self.heartbeat_writes.write((node_id, reported, at))
        else:
            peers, region = self.peers, self._nodes[node_id].region
            row = peers.heartbeat_row(node_id, region, reported, at, beat)
            recorded = await self.shared_heartbeat_writes.write(row)
        # A batch's writes end together and wake every heartbeat in it on one turn: the rest of
        # each takes its share of the turns like the handler's start (reconciler.apply.turns).
        await self.turns.share()
        before = self._nodes.get(node_id)
        if not recorded or before is None:
            self._forget(node_id)
            return None
        if self.peers is not None:
            self.peers.announce(node_id)
        self.health.heard_here(node_id)
        self._keep(replace(before, reported=reported, last_heartbeat_at=at))
        # Its view now, on this handler's share of the turn (reconciler.apply.turns), not all of a
        # wave's on the pass's turn, which reads every view (30 ms at 1,000 nodes after a switch).
        self._view(self._nodes[node_id], now)
        self.metrics.add(now, before.region, beat.metrics)
        cached = SERVING_CACHED_TABLE in beat.conditions
        if cached and SERVING_CACHED_TABLE not in before.reported.get("conditions", ()):
            await asyncio.to_thread(  # a node back from a restart, serving its table from disk until now
                self.store.append_audit,
                actor=node_id,
                action="node.servingCachedTable",
                subject=node_id,
                detail={"generation": beat.generation},
            )
        self._heard.add(node_id)
        self._reported.set()
        if progress(before) != (reported.get("running"), reported.get("generation"), reported.get("smoke")):
            self.poke()
        node, table = self._nodes.get(node_id), self._tables.get(node_id)
        if node is None or table is None:  # deleted while the audit entry was written
            return None
        # Only this node's health can change here (others turn Unhealthy with time, which the
        # controller's loop checks): O(1) per heartbeat, not a scan of the fleet.
        if self.health.judge(node, now):
            self.poke()
        return HeartbeatAnswer(generation=table.generation)

    async def wait_assignment(self, node_id: str, after: int, wait: float) -> ModuleTable | None:
        """The node's table once its generation is past `after`; None if `wait` seconds pass first;
        HubClosedError when the hub closes first (an empty answer would send the node straight back)."""
        deadline = time.monotonic() + wait
        while not self._closing:
            if node_id not in self._nodes and not await self.load(node_id):
                raise KeyError(node_id)
            table = self._tables[node_id]
            if table.generation > after or (after > table.generation and table.generation > 0):
                return table  # newer, or the node is ahead of a control plane that lost state
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            event = self._changed.setdefault(node_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await event.wait()
        raise HubClosedError(node_id)

    def _unreported(self) -> bool:
        """Whether a node `wait_reports` waits for has not reported yet: after a start every node not
        draining; after `expect_reports` those that were Healthy then (a node long dead, or drained,
        does not hold up every pass after a store failure or a lead taken)."""
        awaited = self._awaited
        for node_id, node in self._nodes.items():
            if node_id in self._heard or node.status == NodeStatus.DRAINING:
                continue
            if awaited is None or node_id in awaited:
                return True
        return False

    def expect_reports(self) -> None:
        """Plan next from fresh reports, as after a start: the next `wait_reports` waits for every node
        Healthy now to report again. For a replica that begins to lead and a pass the store failed:
        the nodes' heartbeats failed too while the store was away, and a pass that judged them by
        that silence would call them Unhealthy and move their modules."""
        now = self.clock()
        self._awaited = {n.id for n in self._nodes.values() if self.health.status_of(n, now) is NodeStatus.HEALTHY}
        self._heard.clear()
        self._awaiting = True

    async def wait_reports(self, timeout: float | None = None) -> bool:
        """Wait until every known node has sent a heartbeat to this hub (False if `timeout` passes
        first), since it started or since `expect_reports`; until the next of those, at once.

        A control plane that starts on a store of nodes waits for this before its first pass, so it
        plans from fresh reports, with the metric deltas the nodes kept while it was away, rather
        than from rows older than its start (every node Unhealthy, a step's analysis without data).
        The default timeout is three heartbeats plus a node's longest reconnect delay: a node that
        does not report by then is judged by its row.
        """
        if not self._awaiting:
            return True
        if timeout is None:
            timeout = MISSED_HEARTBEATS * self.heartbeat_seconds + RECONNECT_SECONDS
        deadline = time.monotonic() + timeout
        try:
            while not self._closing and self._unreported():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._reported.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._reported.wait()
            return True
        finally:
            self._awaiting = False

    def close(self) -> None:
        """Answer every waiting long-poll now (the control plane is stopping)."""
        self._closing = True
        for node_id in list(self._changed):
            self._wake(node_id)

    def table(self, node_id: str) -> ModuleTable | None:
        return self._tables.get(node_id)

    async def publish(
        self, node_id: str, entries: tuple[ModuleEntry, ...], traces: Mapping[str, str] | None = None
    ) -> int | None:
        """Give a node a new module table, with the traceparents (`traces`: module -> traceparent of
        its step's span) of the modules it changes; publishing the table it already has changes nothing.
        The table's generation, or None when the node has no row (or it was deleted meanwhile)."""
        table = (await self.publish_all({node_id: entries}, traces)).get(node_id)
        return None if table is None else table.generation

    async def publish_all(
        self, tables: Mapping[str, tuple[ModuleEntry, ...]], traces: Mapping[str, str] | None = None
    ) -> dict[str, ModuleTable]:
        """`publish` for many nodes (a pass's tables): their rows written in one batch, then the hub's
        own part PUBLISH_SLICE nodes a turn of the event loop. The table each node held right after
        (the one it had, when `tables` gives it the same), for the nodes that have a row. A write that
        fails raises once the others are published."""
        out: dict[str, ModuleTable] = {}
        writes: list[tuple[str, ModuleTable, tuple[ModuleEntry, ...], EncodedTable]] = []
        for node_id, entries in tables.items():
            current = self._tables.get(node_id)
            if current is None:
                continue
            if current.modules == entries:
                out[node_id] = current
            else:
                writes.append((node_id, current, entries, self.encoder.encode(entries)))
        rows = [(node_id, encoded.assignment) for node_id, *_, encoded in writes]
        generations = await self.table_writes.write_all(rows)
        failed: BaseException | None = None
        traces = traces or {}
        for i, ((node_id, before, entries, encoded), generation) in enumerate(zip(writes, generations, strict=True)):
            if i and not i % PUBLISH_SLICE:
                await asyncio.sleep(0)
            if isinstance(generation, BaseException):
                failed = failed or generation
                continue
            table = self._published(node_id, before, entries, encoded, generation, traces)
            if table is not None:
                out[node_id] = table
        if failed is not None:
            raise failed
        return out

    def _published(
        self,
        node_id: str,
        before: ModuleTable,
        entries: tuple[ModuleEntry, ...],
        encoded: EncodedTable,
        generation: int | None,
        traces: Mapping[str, str],
    ) -> ModuleTable | None:
        """The hub's part of a publish whose row was written as `generation` over `before`: the node's
        table, row and long-poll; None when it has no row, or was deleted while the row was written."""
        if generation is None or node_id not in self._nodes:
            return None
        changed = {e.module for e in entries} | {e.module for e in before.modules}
        table = ModuleTable.model_construct(
            generation=generation,
            modules=encoded.entries,
            traceparents={m: t for m, t in traces.items() if m in changed},
        )
        self._node_tables.set(node_id, table, encoded)
        self._keep(replace(self._nodes[node_id], assignment=encoded.assignment, generation=generation))
        if self._held is not None:
            self._held.add(node_id)
        else:
            self._wake(node_id)
        if self.peers is not None:
            self.peers.announce(node_id)
        return table

    def answer(self, node_id: str, table: ModuleTable) -> tuple[bytes, str | None]:
        """The long-poll answer for `table` (JSON bytes) and the control plane's signature of its
        modules (`NodeTables.answer`: the shared encoding when this hub published `table`)."""
        return self._node_tables.answer(node_id, table)

    def binding(self, node_id: str, table: ModuleTable) -> str | None:
        """The signed binding of `table` to this node and its generation (`NodeTables.binding`)."""
        return self._node_tables.binding(node_id, table)

    async def set_draining(self, node_id: str, draining: bool) -> bool:
        """Drain a node (its modules move elsewhere, it gets an empty table) or take it back."""
        if node_id not in self._nodes:
            return False
        status = NodeStatus.DRAINING if draining else NodeStatus.HEALTHY
        if not await asyncio.to_thread(self.store.set_node_status, node_id, status):
            return False
        node = self._nodes.get(node_id)
        if node is None:  # deleted meanwhile
            return False
        self._keep(replace(node, status=status))
        self.check_health([node_id])
        self.poke()
        return True

    async def delete(self, node_id: str) -> bool:
        found = await asyncio.to_thread(self.store.delete_node, node_id)
        self._forget(node_id)
        if self.peers is not None:
            self.peers.announce(node_id)
        if found:
            self.poke()
        return found

    # -- other replicas on the same store (reconciler.apply.leader) ------------------------------------

    async def load(self, node_id: str) -> bool:
        """Read a node this replica does not know from a shared store (another replica registered
        it); False when there is no such node, or the store is not shared."""
        if self.peers is None:
            return False
        read_at = self.clock()
        node = await asyncio.to_thread(self.store.get_node, node_id)
        if node is not None:
            self.merge((node,), (), read_at=read_at)
        return node is not None

    def merge(self, nodes: Iterable[NodeRecord], gone: Iterable[str], *, read_at: float | None = None) -> None:
        """Take node rows another replica wrote, and forget nodes it deleted. A newer table wakes the
        node's long-poll; a row never takes a table or a report back to an older one (rows read
        before this replica's own write may arrive after it). `read_at`: when the read of the rows
        began (default: now); a node whose heartbeat the rows carry is judged as of then."""
        read_at = self.clock() if read_at is None else read_at
        poke = False
        touched: list[str] = []
        health = self.health
        for row in nodes:
            touched.append(row.id)
            before = self._nodes.get(row.id)
            heard = epoch(row.last_heartbeat_at) or 0.0
            known = float("-inf") if before is None else (epoch(before.last_heartbeat_at) or 0.0)
            health.read(row.id, read_at, heard, known)  # a newer heartbeat is judged from its row from now on
            if before is None:
                self._remember(row)
                poke = True
                continue
            node = not_back(before, row)
            poke = poke or progress(before) != progress(node) or before.status != node.status
            if heard > known:  # another replica heard it since
                self._heard.add(node.id)
                self._reported.set()
            if node.generation > before.generation:
                self._remember(node)
                self._wake(node.id)
            elif node != before:
                self._keep(node)
        for node_id in gone:
            touched.append(node_id)
            if self._forget(node_id):
                poke = True
        if poke:
            self.poke()
        self.check_health(touched)
