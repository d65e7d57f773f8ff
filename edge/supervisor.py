"""A node in several processes (`hotswap edge --workers N`): the supervisor and its pool of workers.

Where it sits: instead of one process serving, a supervisor (this module's `WorkerPool`) owns the
module table and the link to the control plane (the agent) or to the folder (standalone scan), and
N worker processes (`python -m edge.worker`) each run the execute server with their own runtime
and router, all listening on the same port (SO_REUSEPORT: the kernel spreads connections). What
the two sides say to each other, and how, is `edge.ipc`; `edge.run` starts a node either way.

    supervisor --PUT /table, POST /delta, PUT /key--> worker-<i>.sock   (each worker, unix socket)
    worker     --GET /blobs/<digest>, PUT /table, GET /metrics--> supervisor.sock

* Tables: the supervisor sends the full table to every worker, which applies it with its own
  `Router.apply_table` (atomic per process). `apply_table` here returns once every live worker
  applied it, so the agent reports a generation (and what runs: the versions every worker runs)
  only when the whole node serves it. The loopback admin endpoint of a worker forwards its table
  to the supervisor, which applies it to all workers the same way.
* Binaries: workers fetch them by digest from the supervisor, which asks its own source (the
  control plane, or the folder). The precompiled cache directory is shared (edge.cache writes
  through temporary names and renames, and verifies checksums, so concurrent fills are safe).
* Metrics: every 100 ms the supervisor takes each worker's `metrics_delta` and adds it, per
  (module, version), into the node's counters; heartbeats take their deltas from those counters.
  `GET /metrics` on any worker asks the supervisor, which collects from every worker first, so the
  figures are the whole node's. A worker that dies loses at most its last 100 ms of counts.
* A worker that exits is started again and gets the current table before it takes connections:
  a worker binds the port only after its first table is applied.
* Each response carries `X-Hotswap-Worker: <index>` (which worker served it).
* Standing alone (a managed node with a cache dir, `edge.tablecache`): the supervisor keeps the
  signed table and the binaries, exactly as a one-process node does (`edge.managed.standing_alone`,
  the agent's `restore`), so after a restart the workers get the cached table as their first table
  once it verifies. The node's conditions (`ServingCachedTable`) live in the supervisor's agent; it
  sends them to each worker with every table and whenever they change (checked with the metrics,
  every 100 ms), and a worker's `GET /health` answers with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import aiohttp
from aiohttp import web

from edge.auth import ISSUER
from edge.counters import Counters
from edge.grants import GrantRoots
from edge.ipc import Applied, Key, WorkerConfig, WorkerLink, supervisor_app, supervisor_socket, worker_socket
from edge.protocol import ModuleEntry, ModuleTable, VersionMetrics
from edge.router import ApplyReport, BlobSource, TableApplier
from edge.smoke import SmokeOutcome

log = logging.getLogger("hotswap.edge.workers")
COLLECT_SECONDS = 0.1
START_SECONDS = 120.0  # a worker's start: imports, and its first table (modules may compile)


class WorkerStartError(Exception):
    """A worker process did not come up."""


# The counts a worker's delta adds into the node's (every integer both shapes have: requests,
# traps, timeouts, ...; `errors` is derived), so a counter added to both is summed without a change here.
SUMMED_COUNTS = tuple(
    f.name for f in fields(Counters) if f.type in ("int", int) and f.name in VersionMetrics.model_fields
)


def add_metrics(counters: Counters, m: VersionMetrics) -> None:
    """Add one version's delta (from a worker) into the node's counters."""
    counters.add(m, SUMMED_COUNTS)


def as_metrics(key: Key, c: Counters) -> VersionMetrics:
    return VersionMetrics(
        module=key[0],
        version=key[1],
        errors=c.errors,
        latency_buckets=tuple(c.buckets),
        latency_sum_ms=c.latency_sum_ms,
        last_error=c.last_error if c.errors or c.health_failures else None,
        **{name: getattr(c, name) for name in SUMMED_COUNTS},
    )


def gained(counters: dict[Key, Counters], shipped: dict[Key, Counters]) -> list[VersionMetrics]:
    """Per version that served requests or ran its health check since `shipped`, what it gained;
    `shipped` becomes `counters`."""
    out = []
    for key, now in counters.items():
        delta = now.minus(shipped.get(key, Counters()))
        shipped[key] = now.copy()
        if delta.requests or delta.health_checks:
            out.append(as_metrics(key, delta))
    return out


@dataclass
class PoolSlot:
    """A version the whole node runs, as the agent's heartbeat sees it (`edge.agent.RunningVersion`)."""

    entry: ModuleEntry
    counters: Counters
    shipped: Counters
    smoke: SmokeOutcome | None = None  # failed when it failed on any worker

    @property
    def weight(self) -> int:
        return self.entry.weight  # as the workers serve it (0 after a failed smoke check)

    @property
    def module(self) -> str:
        return self.entry.module

    @property
    def version(self) -> str:
        return self.entry.version


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    link: WorkerLink
    ready: bool = False  # it has the current table and serves: `up` and `down` say when

    def up(self) -> None:
        self.ready = True

    def down(self) -> None:
        self.ready = False


@dataclass
class PoolOptions:
    count: int
    host: str = "127.0.0.1"
    port: int = 0
    cache_dir: Path | None = None
    threads: int = 4
    admin: bool = False
    node_id: str = "standalone"
    grants: GrantRoots = field(default_factory=GrantRoots)
    public_key: str | None = None
    issuer: str = ISSUER
    log_level: str = "WARNING"
    log_format: str | None = None
    trace_ratio: float | None = None
    python: Sequence[str] = field(default_factory=lambda: (sys.executable, "-m", "edge.worker"))


class WorkerPool(TableApplier):
    """The supervisor's side: N worker processes, the node's table, and the node's summed metrics."""

    def __init__(
        self, options: PoolOptions, source: BlobSource, conditions: Callable[[], Iterable[str]] | None = None
    ) -> None:
        if options.count < 1:
            raise ValueError("--workers: at least 1")
        self.options = options
        self.source = source
        self.port = options.port
        self.public_key = options.public_key
        self.issuer = options.issuer
        self.table = ModuleTable()
        self.generation = 0
        self.restarts = 0
        self.running: list[ModuleEntry] = []
        self.smoke: dict[Key, SmokeOutcome] = {}
        self.conditions = conditions  # the node's conditions, read from its agent (None: it has none)
        self._said: tuple[str, ...] = ()  # the conditions the workers were last sent
        self.counters: dict[Key, Counters] = {}
        self.shipped: dict[Key, Counters] = {}
        self.run_dir = tempfile.mkdtemp(prefix="hotswap-workers-")
        self._workers: list[_Worker | None] = [None] * options.count
        self._lock = asyncio.Lock()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._reserved: socket.socket | None = None
        self._hub: web.AppRunner | None = None

    def _live(self) -> list[_Worker]:
        return [w for w in self._workers if w is not None and w.ready]

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> int:
        """Reserve the port, start every worker (each applies the current table); returns the port."""
        try:
            self._reserved = _reserve_port(self.options.host, self.options.port)
            self.port = int(self._reserved.getsockname()[1])
            hub = supervisor_app(self.source.fetch, self._apply_forwarded, self._node_metrics)
            self._hub = web.AppRunner(hub, access_log=None, handle_signals=False)
            await self._hub.setup()
            await web.UnixSite(self._hub, supervisor_socket(self.run_dir)).start()
            started = [asyncio.get_running_loop().create_future() for _ in self._workers]
            self._tasks = [asyncio.create_task(self._keep(i, f), name=f"worker-{i}") for i, f in enumerate(started)]
            self._tasks.append(asyncio.create_task(self._collect_forever(), name="collect"))
            await asyncio.gather(*started)
        except BaseException:
            await self.close()
            raise
        return self.port

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await asyncio.gather(*(self._stop(w) for w in self._workers if w is not None))
        if self._hub is not None:
            await self._hub.cleanup()
        if self._reserved is not None:
            self._reserved.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    async def _stop(self, worker: _Worker) -> None:
        worker.down()
        if worker.process.returncode is None:
            worker.process.terminate()
            try:
                async with asyncio.timeout(15):
                    await worker.process.wait()
            except TimeoutError:
                worker.process.kill()
                await worker.process.wait()
        await worker.link.close()

    async def _keep(self, index: int, started: asyncio.Future[None]) -> None:
        """Run worker `index`, and start it again whenever it exits."""
        failures = 0
        while not self._closing:
            try:
                worker = await self._spawn(index)
            except WorkerStartError as exc:
                if not started.done():
                    started.set_exception(exc)
                    return
                failures += 1
                log.error("%s; trying again", exc)
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))
                continue
            failures = 0
            if not started.done():
                started.set_result(None)
            code = await worker.process.wait()
            worker.down()
            await worker.link.close()
            if self._closing:
                return
            self.restarts += 1
            log.warning("worker %d (pid %d) exited with %s; starting it again", index, worker.process.pid, code)

    async def _spawn(self, index: int) -> _Worker:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(worker_socket(self.run_dir, index))
        config = WorkerConfig(
            index=index,
            host=self.options.host,
            port=self.port,
            run_dir=self.run_dir,
            cache_dir=str(self.options.cache_dir) if self.options.cache_dir is not None else None,
            threads=self.options.threads,
            admin=self.options.admin,
            node_id=self.options.node_id,
            public_key=self.public_key,
            issuer=self.issuer,
            log_level=self.options.log_level,
            log_format=self.options.log_format,
            trace_ratio=self.options.trace_ratio,
            grants=asdict(self.options.grants),
            conditions=self.conditions is not None,
        )
        process = await asyncio.create_subprocess_exec(*self.options.python, json.dumps(asdict(config)))
        link = WorkerLink(index, self.run_dir)
        worker = _Worker(index, process, link)
        self._workers[index] = worker
        try:
            deadline = time.monotonic() + START_SECONDS
            while not await link.ready():
                if process.returncode is not None:
                    raise WorkerStartError(f"worker {index} exited with {process.returncode} while starting")
                if time.monotonic() > deadline:
                    process.kill()
                    raise WorkerStartError(f"worker {index} did not start within {START_SECONDS:g}s")
                await asyncio.sleep(0.05)
            async with self._lock:  # the current table, then the port: no request meets an empty table
                await self._push(worker, self.table)
                worker.up()
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            process.kill()
            await process.wait()
            await link.close()
            raise WorkerStartError(f"worker {index} failed to take its table: {exc}") from None
        except BaseException:
            await link.close()
            raise
        return worker

    # -- the table -----------------------------------------------------------------------------

    async def _push(self, worker: _Worker, table: ModuleTable) -> Applied:
        # A restarted worker says what the others say from its start: the conditions go with the table.
        return await worker.link.push_table(table, self.public_key, self.issuer, self._said)

    async def _apply_forwarded(self, table: ModuleTable) -> ApplyReport:
        """A table a worker's admin endpoint took, for every worker."""
        return await self.apply_table(table.modules, table.generation, table.traceparents)

    async def _apply(
        self, entries: Sequence[ModuleEntry], generation: int | None, traceparents: Mapping[str, str]
    ) -> ApplyReport:
        """Every live worker applies the table (`apply_table`, under the lock); returns once all
        did (their reports merged)."""
        table = ModuleTable(
            generation=self.table.generation if generation is None else generation,
            modules=tuple(entries),
            traceparents=dict(traceparents),
        )
        live = self._live()
        results = await asyncio.gather(*(self._push(w, table) for w in live), return_exceptions=True)
        self.table = table
        self.generation = table.generation
        reports = [r for r in results if not isinstance(r, BaseException)]
        for worker, result in zip(live, results, strict=True):
            if isinstance(result, BaseException):  # it died: it gets this table when it is back
                log.warning("worker %d did not apply generation %d: %s", worker.index, table.generation, result)
        if not reports:
            return ApplyReport(table.generation, failed={"node": "no worker applied the table"})
        failed: dict[str, str] = {}
        smoke: dict[Key, SmokeOutcome] = {}
        for report, _, outcomes in reports:
            failed.update(report.failed)
            for key, outcome in outcomes.items():  # a version fails its smoke check if any worker saw it fail
                if key not in smoke or (smoke[key].passed and not outcome.passed):
                    smoke[key] = outcome
        first = reports[0].report
        common = set.intersection(*({_identity(e) for e in r.running} for r in reports))
        self.running = [e for e in reports[0].running if _identity(e) in common]
        self.smoke = smoke
        return ApplyReport(table.generation, first.loaded, first.kept, first.retired, failed)

    def slots(self) -> list[PoolSlot]:
        """The versions every worker runs, with the node's counters (the agent's heartbeat)."""
        out = []
        for entry in self.running:
            key = (entry.module, entry.version)
            out.append(
                PoolSlot(
                    entry,
                    self.counters.setdefault(key, Counters()),
                    self.shipped.get(key, Counters()),
                    self.smoke.get(key),
                )
            )
        return out

    async def say_conditions(self) -> None:
        """Send the node's conditions to every live worker when they changed since they were last sent."""
        if self.conditions is None or (now := tuple(self.conditions())) == self._said:
            return
        async with self._lock:
            self._said = now
            live = self._live()
            await asyncio.gather(*(w.link.say_conditions(now) for w in live), return_exceptions=True)

    def trust(self, pem: str, issuer: str = ISSUER) -> asyncio.Task[None]:
        """`set_public_key` in a task, with the key taken at once: a table pushed before the task runs
        (the cached table, applied right after its key is known) already carries it, so no worker
        serves that table to callers without a token."""
        self.public_key, self.issuer = pem, issuer
        return asyncio.get_running_loop().create_task(self.set_public_key(pem, issuer))

    async def set_public_key(self, pem: str, issuer: str = ISSUER) -> None:
        """Execute calls need tokens this key verifies, on every worker (and on workers started later)."""
        self.public_key, self.issuer = pem, issuer
        async with self._lock:
            live = self._live()
            await asyncio.gather(*(w.link.set_key(pem, issuer) for w in live), return_exceptions=True)

    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self._live()]

    # -- metrics -------------------------------------------------------------------------------

    async def collect(self) -> None:
        """Take every live worker's deltas into the node's counters."""
        live = self._live()
        for result in await asyncio.gather(*(w.link.delta() for w in live), return_exceptions=True):
            if isinstance(result, BaseException):
                continue  # a worker going away; its monitor restarts it
            for m in result:
                add_metrics(self.counters.setdefault((m.module, m.version), Counters()), m)

    async def _collect_forever(self) -> None:
        while True:
            await asyncio.sleep(COLLECT_SECONDS)
            await self.collect()
            # The agent changes its conditions without telling anyone (a heartbeat answered clears
            # ServingCachedTable); looking here bounds how long a worker's /health lags behind.
            with contextlib.suppress(aiohttp.ClientError, OSError):
                await self.say_conditions()

    async def _node_metrics(self) -> list[VersionMetrics]:
        """The whole node's counts (a worker's `GET /metrics`): every worker's deltas first."""
        await self.collect()
        return self.metrics_total()

    def metrics_delta(self) -> list[VersionMetrics]:
        """Per version, what the node's counters gained since the previous call (for heartbeats)."""
        return gained(self.counters, self.shipped)

    def metrics_total(self) -> list[VersionMetrics]:
        return [as_metrics(key, c) for key, c in self.counters.items()]


def _identity(entry: ModuleEntry) -> tuple[str, str, str, int]:
    return (entry.module, entry.version, entry.digest, entry.weight)


def _reserve_port(host: str, port: int) -> socket.socket:
    """A bound, not listening, SO_REUSEPORT socket: holds the port number (0: any) for the workers.

    A port some other process holds is refused first, even when that process also uses
    SO_REUSEPORT: another node must not silently share this one's connections."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    if port:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
            try:
                probe.bind(address)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock
