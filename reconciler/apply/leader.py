"""Several control-plane replicas on one PostgreSQL: all serve, one leads (plans and publishes).

Where it sits: `ControlPlane` builds a `Replicas` when the state store is PostgreSQL and runs
`Replicas.run()` where it would run `Controller.run()`. SQLite serves one process: no `Replicas`,
and the controller runs as it always did.

    every replica    serves the API and the node protocol; stores the heartbeats it receives with
                     their metric deltas (table `metric_deltas`), and announces every node row it
                     changes (NOTIFY on `hotswap_nodes_<schema>`, batched); listens
                     (`notify_pg.PgListener`) and re-reads the rows the others announce, so a node
                     long-polling this replica is woken as soon as the leader publishes its table
    the leader       holds the lease `reconciler@<schema>` (a PostgreSQL advisory lock, freed by the
                     server when the leader's connection dies); before each pass it checks it still
                     holds it (else it steps down) and reads the metric deltas others received
    a follower       tries for the lease every `retry_seconds`, and meanwhile re-reads the rollout
                     book so its status and API answers stay current
    a new leader     re-reads the rollout book, every node and the last hour of metric deltas
                     before its first pass

Rollout progress is written with compare-and-set (`RolloutBook.save`), so even two replicas that
both believe they lead (a lease connection that died mid-pass) never record a step twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from edge.nodeapi import Heartbeat
from edge.protocol import VersionMetrics
from reconciler.apply.controller import Controller, Role, StopReconciling
from reconciler.apply.metricswindow import METRICS_HORIZON_SECONDS
from reconciler.apply.nodes import NodeHub
from reconciler.store.errors import StoreError
from reconciler.store.lease import Lease
from reconciler.store.notify_pg import PgListener
from reconciler.store.records import JsonObject
from reconciler.store.state import SharedHeartbeat, StateStore

log = logging.getLogger("hotswap.replicas")

LEASE = "reconciler"
CHANNEL = "hotswap_nodes_"
MAX_PAYLOAD_CHARS = 7000  # NOTIFY payloads must stay under 8000 bytes
LATE_SECONDS = 10.0  # how long after its time a metric delta may still commit
PRUNE_EVERY_SECONDS = 60.0
READ_CHUNK = 500  # announced rows read and merged at a time (a merge of 500 rows: ~40 ms of the event loop)


class NotLeaderError(StopReconciling):
    """This replica no longer holds the lease: it stops planning and follows."""


def replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def pack(sender: str, node_ids: Iterable[str]) -> list[str]:
    """NOTIFY payloads naming `node_ids`, each under the size PostgreSQL accepts."""
    payloads: list[str] = []
    chunk: list[str] = []
    size = 0
    for node_id in node_ids:
        if chunk and size + len(node_id) + 4 > MAX_PAYLOAD_CHARS:
            payloads.append(json.dumps({"r": sender, "n": chunk}))
            chunk, size = [], 0
        chunk.append(node_id)
        size += len(node_id) + 4
    if chunk:
        payloads.append(json.dumps({"r": sender, "n": chunk}))
    return payloads


def unpack(payload: str) -> tuple[str, list[str]] | None:
    """(sender, node ids) of a payload `pack` made; None for anything else."""
    try:
        data = json.loads(payload)
        sender, ids = data["r"], data["n"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(sender, str) or not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return None
    return sender, ids


class _LeaseAttempt:
    """One try for the lease in a worker thread, which the event loop may abandon (a stopping
    replica): whichever of the two finishes second gives back a lease the first one got."""

    def __init__(self, store: StateStore, name: str) -> None:
        self.store = store
        self.name = name
        self._lock = threading.Lock()
        self._abandoned = False
        self._lease: Lease | None = None

    def run(self) -> Lease | None:
        lease = self.store.try_lease(self.name)
        with self._lock:
            if not self._abandoned:
                self._lease = lease
                return lease
        if lease is not None:
            lease.release()
        return None

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True
            lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()


class Replicas:
    """This replica's part among several on one database (see the module docstring)."""

    def __init__(
        self,
        store: StateStore,
        database_url: str,
        *,
        retry_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Built before the hub and the controller, which take it (`NodeHub(peers=)`, and
        `Controller(role=, before_pass=)`); `run(controller)` then leads or follows with them."""
        self.store = store
        self.id = replica_id()
        self.role = Role(self.id, leading=False)
        self._controller: Controller | None = None
        self.retry_seconds = retry_seconds
        self.clock = clock
        namespace = store.namespace()
        self.channel = f"{CHANNEL}{namespace}"[:63]
        self.lease_name = f"{LEASE}@{namespace}"
        self.listener = PgListener(database_url, self.channel, self._on_message, self._on_connect)
        self.elections = 0  # how many times this replica became leader
        self._lease: Lease | None = None
        self._incoming: set[str] = set()  # nodes others changed, to read
        self._outgoing: set[str] = set()  # nodes this replica changed, to announce
        self._reader: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._seen: dict[int, float] = {}  # metric-delta seq -> its time, for deltas read lately
        self._metrics_since = 0.0
        self._pruned_at = 0.0

    @property
    def leader(self) -> bool:
        return self.role.leading

    @property
    def controller(self) -> Controller:
        if self._controller is None:
            raise RuntimeError("Replicas.run(controller) has not started")
        return self._controller

    @property
    def hub(self) -> NodeHub:
        return self.controller.hub

    # -- the loop -------------------------------------------------------------------------------

    async def run(self, controller: Controller) -> None:
        """Follow, lead when the lease is free, follow again when it is lost; until cancelled.
        `controller` was built with this replica's `role` and `before_pass`."""
        self._controller = controller
        listening = asyncio.create_task(self.listener.run(), name="replica-listener")
        try:
            while True:
                lease = await self._try_lease()
                if lease is None:
                    await self._follow()
                    continue
                try:
                    await self._lead(lease)
                except NotLeaderError as exc:
                    log.warning("replica %s steps down: %s", self.id, exc)
                except StoreError as exc:
                    log.warning("replica %s cannot lead (%s); trying again", self.id, exc)
                    await asyncio.sleep(self.retry_seconds)
                finally:
                    self.role.follow()
                    self._lease = None
                    lease.release()
        finally:
            for task in (listening, self._reader, self._sender):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _try_lease(self) -> Lease | None:
        attempt = _LeaseAttempt(self.store, self.lease_name)
        try:
            return await asyncio.to_thread(attempt.run)
        except StoreError as exc:
            log.warning("replica %s: %s", self.id, exc)
            return None
        except asyncio.CancelledError:
            attempt.abandon()  # stopping: a lease the thread gets after all is given back at once
            raise

    async def _follow(self) -> None:
        with contextlib.suppress(StoreError):
            await asyncio.to_thread(self.controller.book.reload)
        await asyncio.sleep(self.retry_seconds)

    async def _lead(self, lease: Lease) -> None:
        self._lease = lease
        self.hub.expect_reports()  # heartbeats may have failed while the lease was away (a store restart)
        await asyncio.to_thread(self.controller.forget)
        await self.refresh()
        self._seen.clear()
        self._metrics_since = self.clock() - METRICS_HORIZON_SECONDS
        await self._pull_metrics()
        self.role.lead()
        self.elections += 1
        log.info("replica %s leads", self.id)
        self.controller.poke()
        await self.controller.run()

    async def before_pass(self) -> None:
        """The controller's hook before each pass: still the lease holder, the others' metrics in, and
        no node taken for lost on this replica's memory alone."""
        lease = self._lease
        if lease is None or not await asyncio.to_thread(lease.held):
            raise NotLeaderError("the lease is gone (its database connection closed)")
        await self._pull_metrics()
        await self._recheck_silent()

    async def _recheck_silent(self) -> None:
        """Read again the rows of nodes that look silent here, heard by another replica, and not yet
        confirmed silent by a read (`NodeHub.due`): their heartbeats may have reached that replica,
        whose NOTIFY this busy loop has not read yet. The hub judges them from their last read until
        then (it does not call them Unhealthy on its memory alone); this pass plans from a fresh read."""
        now = self.clock()
        due = self.hub.due(now)
        if not due:
            return
        with contextlib.suppress(StoreError):
            rows = await asyncio.to_thread(self.store.get_nodes, due)
            self.hub.merge(rows, (), read_at=now)

    async def refresh(self) -> None:
        """Read every node again (a new leader; a listener that may have missed notifications)."""
        known = {v.id for v in self.hub.view()}  # before the read: a node registered meanwhile stays
        read_at = self.clock()
        nodes = await asyncio.to_thread(self.store.list_nodes)
        self.hub.merge(nodes, known - {n.id for n in nodes}, read_at=read_at)

    # -- metric deltas --------------------------------------------------------------------------

    async def _pull_metrics(self) -> None:
        """Add the metric deltas other replicas received since the last pull to this hub's window."""
        now = self.clock()
        since = datetime.fromtimestamp(self._metrics_since - LATE_SECONDS, UTC)
        rows = await asyncio.to_thread(self.store.metric_deltas_since, since, exclude_replica=self.id)
        for row in rows:
            if row.seq in self._seen:
                continue
            at = row.at.timestamp()
            self._seen[row.seq] = at
            self.hub.metrics.add(at, row.region, [VersionMetrics.model_validate(m) for m in row.metrics])
        self._metrics_since = now
        self._seen = {seq: at for seq, at in self._seen.items() if at >= now - 2 * LATE_SECONDS}
        if now - self._pruned_at > PRUNE_EVERY_SECONDS:
            horizon = datetime.fromtimestamp(now - METRICS_HORIZON_SECONDS, UTC)
            await asyncio.to_thread(self.store.prune_metric_deltas, horizon)
            self._pruned_at = now

    # -- the hub's seam (nodehealth.Peers) -----------------------------------------------------------

    def heartbeat_row(
        self, node_id: str, region: str, reported: JsonObject, at: datetime, beat: Heartbeat
    ) -> SharedHeartbeat:
        metrics = [m.model_dump(mode="json", by_alias=True) for m in beat.metrics]
        return SharedHeartbeat(self.id, node_id, region, reported, at, metrics)

    def announce(self, node_id: str) -> None:
        self._outgoing.add(node_id)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send(), name="replica-announce")

    def recheck(self, node_ids: Iterable[str]) -> None:
        """Read these nodes' rows again, as if another replica had announced them."""
        self._incoming.update(node_ids)
        if self._incoming and (self._reader is None or self._reader.done()):
            self._reader = asyncio.get_running_loop().create_task(self._read(), name="replica-read")

    async def _send(self) -> None:
        while self._outgoing:
            node_ids, self._outgoing = sorted(self._outgoing), set()
            try:
                await asyncio.to_thread(self.store.notify, self.channel, pack(self.id, node_ids))
            except StoreError as exc:  # the others read every node again when they reconnect
                log.warning("replica %s could not announce %d nodes: %s", self.id, len(node_ids), exc)

    # -- the listener's callbacks ---------------------------------------------------------------

    def _on_message(self, payload: str) -> None:
        message = unpack(payload)
        if message is None:
            log.warning("replica %s ignores a notification it cannot read: %.100r", self.id, payload)
            return
        sender, node_ids = message
        if sender == self.id:
            return
        self._incoming.update(node_ids)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read(), name="replica-read")

    async def _read(self) -> None:
        """Read and merge the rows of the nodes others announced, `READ_CHUNK` at a time, nodes with a
        long-poll waiting on this replica first: their tables go out while the rest are read, and no
        merge holds the event loop for the whole fleet (a 5,000-node publish announces them all)."""
        while self._incoming:
            pending, self._incoming = self.hub.waiting_first(self._incoming), set()
            while pending:
                chunk, pending = set(pending[:READ_CHUNK]), pending[READ_CHUNK:]
                read_at = self.clock()
                try:
                    nodes = await asyncio.to_thread(self.store.get_nodes, chunk)
                except StoreError as exc:
                    log.warning("replica %s could not read %d nodes (%s); again soon", self.id, len(chunk), exc)
                    self._incoming |= chunk | set(pending)
                    await asyncio.sleep(self.retry_seconds)
                    break
                self.hub.merge(nodes, chunk - {n.id for n in nodes}, read_at=read_at)

    async def _on_connect(self) -> None:
        try:
            await self.refresh()
        except StoreError as exc:
            log.warning("replica %s could not read the nodes again: %s", self.id, exc)
