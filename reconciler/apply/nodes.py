"""The node hub: the control plane's side of the node protocol (`edge.nodeapi`).

It registers nodes, takes their heartbeats (what they run and their metric deltas), publishes each
node's module table and wakes the node's long-poll at once, and says which nodes are healthy: a node
that missed three heartbeats is Unhealthy until it speaks again. The executor publishes through it;
the planner reads its snapshot. State lives in the state store so a restarted control plane knows
its nodes and their generations; a heartbeat, a registration or a health change pokes the
reconciler ("look again"), never more. Tables are encoded (and signed, with `signer`) once per
distinct content (`reconciler.apply.tables`): the nodes that run the same table share its bytes.

With other replicas on the same store (`peers`), a node's health is judged from its row's heartbeat
time as the replica that heard it wrote it, and as of when this hub last read that row: a node heard
elsewhere is not called Unhealthy on this hub's memory alone (the other replica's announcement may be
late), only once a read of its row, made after its heartbeats were due, still shows them missing.
The clock makes such a node due for that read (`Peers.recheck`), not Unhealthy.

Who watches for changes (the notifier) asks `watch()` for the nodes whose view may have changed,
not for the whole fleet every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Protocol

import orjson

from edge.nodeapi import Heartbeat, HeartbeatAnswer, NodeStatus, Registration, RegistrationAnswer
from edge.protocol import SERVING_CACHED_TABLE, ModuleEntry, ModuleTable
from reconciler.apply.metricswindow import METRICS_HORIZON_SECONDS, MetricsWindow, Totals
from reconciler.apply.noderows import NodeView, epoch, not_back, progress, view_of
from reconciler.apply.tables import EncodedTable, Signer, TableEncoder
from reconciler.apply.threadbatch import RowBatch
from reconciler.errors import ReconcilerError
from reconciler.store.audit import AuditLog
from reconciler.store.nodes import NodeStore, SharedHeartbeat
from reconciler.store.records import JsonObject, NodeRecord

__all__ = [
    "METRICS_HORIZON_SECONDS",
    "HubClosedError",
    "MetricsWindow",
    "NodeChanges",
    "NodeHub",
    "NodeView",
    "Peers",
    "Totals",
]

MISSED_HEARTBEATS = 3
ENTRY_CACHE = 4096  # distinct stored table rows kept parsed (a few per module version in use)
RECONNECT_SECONDS = 5.0  # a node's agent retries a lost control plane at least this often (edge.agent)
# module -> W3C traceparent of the deployment step being applied (reconciler.apply.telemetry sets it around
# the executor): published tables carry it, so a node's load spans join that step's trace.


class Peers(Protocol):
    """Other control-plane replicas on the same store (`reconciler.apply.leader.Replicas`); None when alone."""

    def heartbeat_row(
        self, node_id: str, region: str, reported: JsonObject, at: datetime, beat: Heartbeat
    ) -> SharedHeartbeat:
        """The row the hub stores for this heartbeat (with its metric deltas, for the leader)."""
        ...

    def announce(self, node_id: str) -> None:
        """Tell the other replicas that this node's row changed (returns at once)."""
        ...

    def recheck(self, node_ids: Iterable[str]) -> None:
        """Read these nodes' rows again soon and `merge` them (returns at once): nodes heard by
        another replica whose heartbeats look overdue here."""
        ...


class HubClosedError(ReconcilerError):
    """The control plane is stopping: a long-poll gets no answer from it (the API says 503)."""


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
        self.table_writes = RowBatch(store.publish_assignments, lambda table: store.publish_assignment(*table))
        self._tables: dict[str, ModuleTable] = {}
        self._encoded: dict[str, tuple[ModuleTable, EncodedTable]] = {}  # node -> the table and its bytes
        self._changed: dict[str, asyncio.Event] = {}
        self._nodes: dict[str, NodeRecord] = {}
        self._health: dict[str, NodeStatus] = {}
        self._closing = False
        self.peers = peers
        self._heard: set[str] = set()  # nodes that reported since this hub started
        self._reported = asyncio.Event()
        self._views: dict[str, tuple[NodeRecord, NodeView]] = {}  # the last view of each node row
        self._entries: dict[bytes, ModuleEntry] = {}  # a stored table row (canonical JSON) -> its entry
        # (module, version) a node was given in its current table or the one before (whose last
        # requests it may still be reporting): the only metrics of its that count (a report is a claim)
        self._assigned: dict[str, frozenset[tuple[str, str]]] = {}
        # With peers: nodes whose last heartbeat this hub knows from a row another replica wrote ->
        # when this hub last read that row (the time their health is judged at), and when it last
        # asked to read it again (`Peers.recheck`). A node that heartbeats here leaves both.
        self._read_at: dict[str, float] = {}
        self._asked: dict[str, float] = {}
        self._watchers: weakref.WeakSet[NodeChanges] = weakref.WeakSet()
        read_at = self.clock()
        for node in store.list_nodes():
            self._remember(node)
            if peers is not None:
                self._read_at[node.id] = read_at

    # -- bookkeeping ----------------------------------------------------------------------------

    def _remember(self, node: NodeRecord) -> None:
        self._keep(node)
        modules = node.assignment.get("modules", []) if node.assignment else []
        self._set_table(node.id, ModuleTable(generation=node.generation, modules=self._parsed(modules)))

    def _parsed(self, rows: list[JsonObject]) -> tuple[ModuleEntry, ...]:
        """A stored table's entries, each distinct row validated once: a replica that reads the rows
        another one wrote (thousands of nodes, a few distinct tables) shares the entry objects, so
        `TableEncoder` also encodes each distinct table once for the long-polls it answers."""
        out = []
        for row in rows:
            key = orjson.dumps(row, option=orjson.OPT_SORT_KEYS)
            entry = self._entries.get(key)
            if entry is None:
                entry = ModuleEntry.model_validate(row)
                if len(self._entries) >= ENTRY_CACHE:
                    self._entries.clear()  # a new revision's rows replace the old ones' anyway
                self._entries[key] = entry
            out.append(entry)
        return tuple(out)

    def _set_table(self, node_id: str, table: ModuleTable) -> None:
        before = self._tables.get(node_id)
        self._assigned[node_id] = frozenset(
            (e.module, e.version) for e in (*table.modules, *(before.modules if before else ()))
        )
        self._tables[node_id] = table

    def _keep(self, node: NodeRecord) -> None:
        """The node's row as this hub knows it now; watchers look at it again."""
        self._nodes[node.id] = node
        self._touch(node.id, node)

    def _touch(self, node_id: str, node: NodeRecord | None = None) -> None:
        for watcher in self._watchers:
            watcher.changed(node_id, node)

    def _forget(self, node_id: str) -> bool:
        """Drop a node (deleted, here or by another replica); whether it was known."""
        if self._nodes.pop(node_id, None) is None:
            return False
        self._tables.pop(node_id, None)
        self._encoded.pop(node_id, None)
        self._assigned.pop(node_id, None)
        self._views.pop(node_id, None)
        self._read_at.pop(node_id, None)
        self._asked.pop(node_id, None)
        self._wake(node_id)
        for watcher in self._watchers:
            watcher.gone(node_id)
        return True

    def _wake(self, node_id: str) -> None:
        # At once, every one: answers held back a slice per loop turn (64 a turn, tried for issue 20)
        # made a 5,000-node switch slower (43 s against 16 s), a busy turn lasting 100-300 ms.
        event = self._changed.pop(node_id, None)
        if event is not None:
            event.set()

    def known(self, node_id: str) -> bool:
        return node_id in self._nodes

    def count(self) -> int:
        """How many nodes this hub knows."""
        return len(self._nodes)

    @property
    def _silent_after(self) -> float:
        return MISSED_HEARTBEATS * self.heartbeat_seconds

    def _last_heard(self, node: NodeRecord, now: float) -> float:
        return epoch(node.last_heartbeat_at) or epoch(node.registered_at) or now

    def status_of(self, node: NodeRecord, now: float) -> NodeStatus:
        """Draining, or Unhealthy when its heartbeats are missing as of `now`; for a node heard by
        another replica, as of when this hub last read its row (`merge`), which the clock does not move."""
        if node.status == NodeStatus.DRAINING:
            return NodeStatus.DRAINING
        read_at = self._read_at.get(node.id)
        if read_at is not None and read_at < now:
            now = read_at
        silent = now - self._last_heard(node, now) > self._silent_after
        return NodeStatus.UNHEALTHY if silent else NodeStatus.HEALTHY

    def silent(self, now: float) -> list[str]:
        """Nodes whose last heartbeat, as this hub knows it, is older than the missed heartbeats allow
        as of `now` (whether or not a read of their row confirmed it)."""
        return [
            n.id
            for n in self._nodes.values()
            if n.status != NodeStatus.DRAINING and now - self._last_heard(n, now) > self._silent_after
        ]

    def due(self, now: float) -> list[str]:
        """Nodes heard by another replica that look silent by the clock, while the last read of their
        row did not show it: their row must be read again before they can be judged Unhealthy."""
        limit = self._silent_after
        out = []
        for node_id, read_at in self._read_at.items():
            node = self._nodes[node_id]
            if node.status == NodeStatus.DRAINING:
                continue
            last = self._last_heard(node, now)
            if now - last > limit and read_at - last <= limit:
                out.append(node_id)
        return out

    def _view(self, node: NodeRecord, now: float) -> NodeView:
        generation, status = self._tables[node.id].generation, self.status_of(node, now)
        cached = self._views.get(node.id)  # rows are replaced on change: the same row, the same view
        if cached is not None and cached[0] is node and cached[1].generation == generation:
            return cached[1] if cached[1].status == status else replace(cached[1], status=status)
        view = view_of(node, status, generation)
        self._views[node.id] = (node, view)
        return view

    def view(self, now: float | None = None) -> list[NodeView]:
        """Every known node with its health as of `now` (wall clock by default)."""
        now = self.clock() if now is None else now
        return [self._view(node, now) for node in sorted(self._nodes.values(), key=lambda n: n.id)]

    def views_of(self, node_ids: Iterable[str], now: float | None = None) -> list[NodeView]:
        """The views of these nodes (the known ones, in the order given), as `view` gives them."""
        now = self.clock() if now is None else now
        return [self._view(node, now) for node_id in node_ids if (node := self._nodes.get(node_id)) is not None]

    def watch(self) -> NodeChanges:
        """A watcher of node changes: `take(now)` gives the views that may have changed since it last did."""
        watcher = NodeChanges(self)
        self._watchers.add(watcher)
        return watcher

    def check_health(self, node_ids: Iterable[str] | None = None) -> bool:
        """Recompute node health (of `node_ids` only: the rows that just changed; the controller's
        timer checks every node); True (and a poke) when some node changed status. With peers, the
        timer's check also asks them to read again the rows of nodes that are `due`."""
        now = self.clock()
        changed: list[str] = []
        if node_ids is None:
            health = {node.id: self.status_of(node, now) for node in self._nodes.values()}
            if health != self._health:
                changed = [i for i, s in health.items() if self._health.get(i) != s]
                changed += [i for i in self._health if i not in health]
            self._health = health
            self._ask_again(now)
        else:
            for node_id in node_ids:
                node = self._nodes.get(node_id)
                status = self.status_of(node, now) if node is not None else None
                if self._health.get(node_id) != status:
                    changed.append(node_id)
                    if status is None:
                        self._health.pop(node_id, None)
                    else:
                        self._health[node_id] = status
        for node_id in changed:
            self._touch(node_id)
        if changed:
            self.poke()
        return bool(changed)

    def _ask_again(self, now: float) -> None:
        if self.peers is None or not self._read_at:
            return
        again = [i for i in self.due(now) if now - self._asked.get(i, float("-inf")) >= self.heartbeat_seconds]
        if again:
            for node_id in again:
                self._asked[node_id] = now
            self.peers.recheck(again)

    def next_health_change(self) -> float:
        """Seconds until the next healthy node would turn Unhealthy without a heartbeat (or, heard by
        another replica, would be due for a read of its row, or due again after one asked for)."""
        now = self.clock()
        limit = self._silent_after
        soonest = float("inf")
        for n in self._nodes.values():
            if self.status_of(n, now) != NodeStatus.HEALTHY:
                continue
            at = self._last_heard(n, now) + limit
            if at <= now and n.id in self._read_at:  # due: when it may be asked (again)
                at = self._asked.get(n.id, now - self.heartbeat_seconds) + self.heartbeat_seconds
            soonest = min(soonest, at - now)
        return max(soonest if soonest != float("inf") else self.heartbeat_seconds, 0.05)

    # -- the protocol ---------------------------------------------------------------------------

    async def register(self, registration: Registration) -> RegistrationAnswer:
        existing = self._nodes.get(registration.id)
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
        self._heard_here(node.id)
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
        return RegistrationAnswer(
            id=node.id,
            heartbeat_seconds=self.heartbeat_seconds,
            generation=self._tables[node.id].generation,
            public_key=self.public_key,
            issuer=self.issuer,
        )

    def _heard_here(self, node_id: str) -> None:
        """The node spoke to this replica: its health is judged by this hub's clock from now on."""
        self._read_at.pop(node_id, None)
        self._asked.pop(node_id, None)

    def _register(self, record: NodeRecord) -> NodeRecord:
        """Upsert the node and count the registration as contact (it is healthy from now); a drained
        node stays drained when it registers again."""
        before = self.store.get_node(record.id)
        if before is not None and before.status == NodeStatus.DRAINING:
            record = replace(record, status=NodeStatus.DRAINING)
        node = self.store.upsert_node(record)
        self.store.record_heartbeat(node.id, dict(node.reported), datetime.fromtimestamp(self.clock(), UTC))
        found = self.store.get_node(node.id)
        assert found is not None
        return found

    async def heartbeat(self, node_id: str, beat: Heartbeat) -> HeartbeatAnswer | None:
        """Record a heartbeat; None when the node is unknown (it must register again)."""
        if node_id not in self._nodes and not await self.load(node_id):
            return None
        assigned = self._assigned.get(node_id, frozenset())
        if any((m.module, m.version) not in assigned for m in beat.metrics):
            beat = beat.model_copy(
                update={"metrics": tuple(m for m in beat.metrics if (m.module, m.version) in assigned)}
            )
        reported = beat.model_dump(mode="json", by_alias=True, exclude={"metrics"})
        now = self.clock()
        at = datetime.fromtimestamp(now, UTC)
        if self.peers is None:
            recorded = await self.heartbeat_writes.write((node_id, reported, at))
        else:
            peers, region = self.peers, self._nodes[node_id].region
            row = peers.heartbeat_row(node_id, region, reported, at, beat)
            recorded = await self.shared_heartbeat_writes.write(row)
        before = self._nodes.get(node_id)
        if not recorded or before is None:
            self._forget(node_id)
            return None
        if self.peers is not None:
            self.peers.announce(node_id)
        self._heard_here(node_id)
        self._keep(replace(before, reported=reported, last_heartbeat_at=at))
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
        # Only this node's health can change here (others turn Unhealthy with time, which the
        # controller's loop checks): O(1) per heartbeat, not a scan of the fleet.
        status = self.status_of(self._nodes[node_id], now)
        if self._health.get(node_id) != status:
            self._health[node_id] = status
            self.poke()
        return HeartbeatAnswer(generation=self._tables[node_id].generation)

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

    async def wait_reports(self, timeout: float | None = None) -> bool:
        """Wait until every known node has sent a heartbeat to this hub (False if `timeout` passes first).

        A control plane that starts on a store of nodes waits for this before its first pass, so it
        plans from fresh reports, with the metric deltas the nodes kept while it was away, rather
        than from rows older than its start (every node Unhealthy, a step's analysis without data).
        The default timeout is three heartbeats plus a node's longest reconnect delay.
        """
        if timeout is None:
            timeout = MISSED_HEARTBEATS * self.heartbeat_seconds + RECONNECT_SECONDS
        deadline = time.monotonic() + timeout
        while not self._closing and not set(self._nodes) <= self._heard:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._reported.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._reported.wait()
        return True

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
        its step's span) of the modules it changes; publishing the table it already has changes nothing."""
        current = self._tables.get(node_id)
        if current is None:
            return None
        if current.modules == entries:
            return current.generation
        encoded = self.encoder.encode(entries)
        generation = await self.table_writes.write((node_id, encoded.assignment))
        if generation is None:
            return None
        traces = traces or {}
        changed = {e.module for e in entries} | {e.module for e in current.modules}
        table = ModuleTable.model_construct(
            generation=generation,
            modules=encoded.entries,
            traceparents={m: t for m, t in traces.items() if m in changed},
        )
        self._set_table(node_id, table)
        self._encoded[node_id] = (table, encoded)
        self._keep(replace(self._nodes[node_id], assignment=encoded.assignment, generation=generation))
        self._wake(node_id)
        if self.peers is not None:
            self.peers.announce(node_id)
        return generation

    def answer(self, node_id: str, table: ModuleTable) -> tuple[bytes, str | None]:
        """The long-poll answer for `table` (JSON bytes) and the control plane's signature of its
        modules: the shared encoding when `table` is the one this hub published, encoded here otherwise
        (a table read from the store, or from another replica)."""
        published = self._encoded.get(node_id)
        if published is None or published[0] is not table:
            published = (table, self.encoder.encode(table.modules))
            self._encoded[node_id] = published
        encoded = published[1]
        return encoded.answer(table.generation, table.traceparents), encoded.signature

    async def set_draining(self, node_id: str, draining: bool) -> bool:
        """Drain a node (its modules move elsewhere, it gets an empty table) or take it back."""
        if node_id not in self._nodes:
            return False
        status = NodeStatus.DRAINING if draining else NodeStatus.HEALTHY
        if not await asyncio.to_thread(self.store.set_node_status, node_id, status):
            return False
        self._keep(replace(self._nodes[node_id], status=status))
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
        for row in nodes:
            touched.append(row.id)
            self._asked.pop(row.id, None)
            before = self._nodes.get(row.id)
            if before is None:
                self._remember(row)
                self._read_at[row.id] = read_at
                poke = True
                continue
            node = not_back(before, row)
            poke = poke or progress(before) != progress(node) or before.status != node.status
            heard, known = epoch(row.last_heartbeat_at) or 0.0, epoch(before.last_heartbeat_at) or 0.0
            if heard > known:  # another replica heard it since: judged from its row from now on
                self._heard.add(node.id)
                self._reported.set()
                self._read_at[row.id] = read_at
            elif heard == known and row.id in self._read_at:  # the same heartbeat, still the last one then
                self._read_at[row.id] = max(self._read_at[row.id], read_at)
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


class NodeChanges:
    """The nodes whose view may have changed since the last `take` (`NodeHub.watch`): the rows the hub
    replaced, the nodes it dropped, the health changes it noticed, and the nodes whose missed
    heartbeats came due by the clock meanwhile. A watcher of the fleet (the notifier's tick) reads
    these, not a view of every node each time. The first `take` gives every node the hub knows."""

    def __init__(self, hub: NodeHub) -> None:
        self._hub = hub
        self._dirty: set[str] = set(hub._nodes)
        self._gone: set[str] = set()
        self._due: list[tuple[float, str]] = []  # (when its heartbeats would be missed, node): a heap
        for node in hub._nodes.values():
            self._when_silent(node)

    def _when_silent(self, node: NodeRecord) -> None:
        hub = self._hub
        at = hub._last_heard(node, hub.clock()) + hub._silent_after
        heapq.heappush(self._due, (at, node.id))
        if len(self._due) > 4 * len(hub._nodes) + 64:  # superseded entries: one per node is enough
            self._due = [(hub._last_heard(n, at) + hub._silent_after, n.id) for n in hub._nodes.values()]
            heapq.heapify(self._due)

    def changed(self, node_id: str, node: NodeRecord | None) -> None:
        self._dirty.add(node_id)
        self._gone.discard(node_id)
        if node is not None:
            self._when_silent(node)

    def gone(self, node_id: str) -> None:
        self._dirty.discard(node_id)
        self._gone.add(node_id)

    def take(self, now: float | None = None) -> tuple[list[NodeView], list[str]]:
        """(views of the nodes that may have changed, ids of the nodes gone) since the last take."""
        hub = self._hub
        now = hub.clock() if now is None else now
        ids, self._dirty = self._dirty, set()
        early: list[tuple[float, str]] = []
        while self._due and self._due[0][0] <= now:
            at, node_id = heapq.heappop(self._due)
            node = hub._nodes.get(node_id)
            if node is None:
                continue
            last = hub._last_heard(node, now)
            if last + hub._silent_after > at:
                continue  # a heartbeat since: its own entry is further on
            ids.add(node_id)
            if now - last <= hub._silent_after:
                early.append((at, node_id))  # not silent yet (to the float): look again next time
        for entry in early:
            heapq.heappush(self._due, entry)
        gone, self._gone = sorted(self._gone), set()
        return hub.views_of(sorted(ids), now), gone
