"""A node in several processes (`hotswap edge --workers N`): one supervisor, N workers on one port.

Where it sits: instead of one process serving, a supervisor (this module's `WorkerPool`) owns the
module table and the link to the control plane (the agent) or to the folder (standalone scan), and
N worker processes (`python -m edge.workers`) each run the execute server with their own runtime
and router, all listening on the same port (SO_REUSEPORT: the kernel spreads connections).

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
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from edge.agent import Agent, AgentState, ControlPlaneBlobs
from edge.auth import ISSUER, Authenticator
from edge.errors import LoadError
from edge.grants import GrantRoots
from edge.nodeapi import Registration
from edge.protocol import ModuleEntry, ModuleTable, VersionMetrics
from edge.router import ApplyReport, BlobSource, Counters, Router
from edge.runtime import Runtime
from edge.server import Node, NodeConfig, build_app
from edge.smoke import SmokeOutcome
from edge.standalone import DirectorySource
from edge.telemetry import configure_tracing, setup_logging

if TYPE_CHECKING:
    from edge.managed import ManagedOptions

log = logging.getLogger("hotswap.edge.workers")
WORKER_HEADER = "X-Hotswap-Worker"
COLLECT_SECONDS = 0.1
START_SECONDS = 120.0  # a worker's start: imports, and its first table (modules may compile)
_ENTRIES = TypeAdapter(list[ModuleEntry])
_METRICS = TypeAdapter(list[VersionMetrics])
Key = tuple[str, str]


class WorkerStartError(Exception):
    """A worker process did not come up."""


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker process is started with (JSON on its command line)."""

    index: int
    host: str
    port: int
    run_dir: str
    cache_dir: str | None = None
    threads: int = 4
    admin: bool = False
    node_id: str = "standalone"
    public_key: str | None = None
    issuer: str = ISSUER
    log_level: str = "WARNING"
    log_format: str | None = None
    trace_ratio: float | None = None
    grants: Mapping[str, Any] = field(default_factory=dict)  # the node's GrantRoots (--allow-dir), as JSON
    conditions: bool = False  # a managed node: GET /health carries the conditions the supervisor sends

    def socket_path(self) -> str:
        return worker_socket(self.run_dir, self.index)

    def grant_roots(self) -> GrantRoots:
        """The node's grant roots; the worker's sockets are never granted either."""
        return GrantRoots.from_json(self.grants).protect(self.run_dir, "worker sockets")


def worker_socket(run_dir: str, index: int) -> str:
    return os.path.join(run_dir, f"worker-{index}.sock")


def supervisor_socket(run_dir: str) -> str:
    return os.path.join(run_dir, "supervisor.sock")


# -- wire helpers ----------------------------------------------------------------------------------


def report_json(
    report: ApplyReport, running: Sequence[ModuleEntry] = (), smoke: Mapping[Key, SmokeOutcome] | None = None
) -> dict[str, Any]:
    """A worker's apply report; `running` carries each version's weight as it serves it (0 for a
    failed smoke check), `smoke` the smoke outcome of each loaded version that has smoke calls."""
    return {
        "generation": report.generation,
        "loaded": list(report.loaded),
        "kept": list(report.kept),
        "retired": list(report.retired),
        "failed": report.failed,
        "running": [e.model_dump(mode="json", by_alias=True) for e in running],
        "smoke": [[m, v, o.passed, o.error] for (m, v), o in (smoke or {}).items()],
    }


def report_from_json(data: dict[str, Any]) -> tuple[ApplyReport, list[ModuleEntry], dict[Key, SmokeOutcome]]:
    report = ApplyReport(
        int(data["generation"]),
        tuple(data["loaded"]),
        tuple(data["kept"]),
        tuple(data["retired"]),
        dict(data["failed"]),
    )
    smoke = {(str(m), str(v)): SmokeOutcome(bool(passed), error) for m, v, passed, error in data.get("smoke", [])}
    return report, _ENTRIES.validate_python(data.get("running", [])), smoke


def served(router: Router) -> tuple[list[ModuleEntry], dict[Key, SmokeOutcome]]:
    """What a worker's router serves: entries at the weight each version takes, and smoke outcomes."""
    slots = router.slots()
    running = [
        s.entry.model_copy(update={"weight": s.weight}) if s.weight != s.entry.weight else s.entry for s in slots
    ]
    smoke = {(s.module, s.version): s.smoke for s in slots if s.smoke is not None}
    return running, smoke


def _metrics_json(rows: Sequence[VersionMetrics]) -> bytes:
    return _METRICS.dump_json(list(rows), by_alias=True)


# The counts a worker's delta adds into the node's (every integer both shapes have: requests,
# traps, timeouts, ...; `errors` is derived), so a counter added to both is summed without a change here.
SUMMED_COUNTS = tuple(
    f.name for f in fields(Counters) if f.type in ("int", int) and f.name in VersionMetrics.model_fields
)


def add_metrics(counters: Counters, m: VersionMetrics) -> None:
    """Add one version's delta (from a worker) into the node's counters."""
    for name in SUMMED_COUNTS:
        setattr(counters, name, getattr(counters, name) + getattr(m, name))
    for i, count in enumerate(m.latency_buckets[: len(counters.buckets)]):
        counters.buckets[i] += count
    counters.latency_sum_ms += m.latency_sum_ms
    counters.last_error = m.last_error or counters.last_error


def as_metrics(key: Key, c: Counters) -> VersionMetrics:
    return VersionMetrics(
        module=key[0],
        version=key[1],
        errors=c.errors,
        latency_buckets=tuple(c.buckets),
        latency_sum_ms=c.latency_sum_ms,
        last_error=c.last_error if c.errors else None,
        **{name: getattr(c, name) for name in SUMMED_COUNTS},
    )


# -- the supervisor --------------------------------------------------------------------------------


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
    session: aiohttp.ClientSession
    ready: bool = False


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
    python: Sequence[str] = field(default_factory=lambda: (sys.executable, "-m", "edge.workers"))


class WorkerPool:
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

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> int:
        """Reserve the port, start every worker (each applies the current table); returns the port."""
        try:
            self._reserved = _reserve_port(self.options.host, self.options.port)
            self.port = int(self._reserved.getsockname()[1])
            self._hub = web.AppRunner(self._hub_app(), access_log=None, handle_signals=False)
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
        worker.ready = False
        if worker.process.returncode is None:
            worker.process.terminate()
            try:
                async with asyncio.timeout(15):
                    await worker.process.wait()
            except TimeoutError:
                worker.process.kill()
                await worker.process.wait()
        await worker.session.close()

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
            worker.ready = False
            await worker.session.close()
            if self._closing:
                return
            self.restarts += 1
            log.warning("worker %d (pid %d) exited with %s; starting it again", index, worker.process.pid, code)

    async def _spawn(self, index: int) -> _Worker:
        path = worker_socket(self.run_dir, index)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
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
        session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=path), timeout=aiohttp.ClientTimeout(total=None, sock_connect=5)
        )
        worker = _Worker(index, process, session)
        self._workers[index] = worker
        try:
            deadline = time.monotonic() + START_SECONDS
            while True:
                if process.returncode is not None:
                    raise WorkerStartError(f"worker {index} exited with {process.returncode} while starting")
                if time.monotonic() > deadline:
                    process.kill()
                    raise WorkerStartError(f"worker {index} did not start within {START_SECONDS:g}s")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get("http://worker/ready") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.05)
            async with self._lock:  # the current table, then the port: no request meets an empty table
                await self._push(worker, self.table)
                worker.ready = True
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            process.kill()
            await process.wait()
            await session.close()
            raise WorkerStartError(f"worker {index} failed to take its table: {exc}") from None
        except BaseException:
            await session.close()
            raise
        return worker

    # -- the table -----------------------------------------------------------------------------

    async def _push(
        self, worker: _Worker, table: ModuleTable
    ) -> tuple[ApplyReport, list[ModuleEntry], dict[Key, SmokeOutcome]]:
        body = {
            "table": table.model_dump(mode="json", by_alias=True),
            "publicKey": self.public_key,
            "issuer": self.issuer,
            "conditions": list(self._said),  # a restarted worker says what the others say from its start
        }
        async with worker.session.put("http://worker/table", json=body) as response:
            if response.status != 200:
                raise ValueError(f"worker {worker.index}: table: {response.status} {await response.text()}")
            return report_from_json(await response.json())

    async def apply_table(
        self,
        entries: Sequence[ModuleEntry],
        generation: int | None = None,
        traceparents: Mapping[str, str] | None = None,
    ) -> ApplyReport:
        """Every live worker applies the table; returns once all did (their reports merged)."""
        async with self._lock:
            table = ModuleTable(
                generation=self.table.generation if generation is None else generation,
                modules=tuple(entries),
                traceparents=dict(traceparents or {}),
            )
            live = [w for w in self._workers if w is not None and w.ready]
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
            first = reports[0][0]
            common = set.intersection(*({_identity(e) for e in running} for _, running, _ in reports))
            self.running = [e for e in reports[0][1] if _identity(e) in common]
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
            live = [w for w in self._workers if w is not None and w.ready]
            body = {"conditions": list(now)}
            results = await asyncio.gather(
                *(w.session.put("http://worker/conditions", json=body) for w in live), return_exceptions=True
            )
            for result in results:
                if not isinstance(result, BaseException):
                    result.release()

    def trust(self, pem: str, issuer: str = ISSUER) -> asyncio.Task[None]:
        """`set_public_key` in a task, with the key taken at once: a table pushed before the task runs
        (the cached table, applied right after its key is known) already carries it, so no worker
        serves that table to callers without a token."""
        self.public_key, self.issuer = pem, issuer
        return asyncio.get_running_loop().create_task(self.set_public_key(pem, issuer))

    async def set_public_key(self, pem: str, issuer: str = ISSUER) -> None:
        """Execute calls need tokens this key verifies, on every worker (and on workers started later)."""
        self.public_key, self.issuer = pem, issuer
        body = {"publicKey": pem, "issuer": issuer}
        async with self._lock:
            live = [w for w in self._workers if w is not None and w.ready]
            await asyncio.gather(*(w.session.put("http://worker/key", json=body) for w in live), return_exceptions=True)

    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w is not None and w.ready]

    # -- metrics -------------------------------------------------------------------------------

    async def _delta(self, worker: _Worker) -> list[VersionMetrics]:
        async with worker.session.post("http://worker/delta") as response:
            return _METRICS.validate_json(await response.read())

    async def collect(self) -> None:
        """Take every live worker's deltas into the node's counters."""
        live = [w for w in self._workers if w is not None and w.ready]
        for result in await asyncio.gather(*(self._delta(w) for w in live), return_exceptions=True):
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

    def metrics_delta(self) -> list[VersionMetrics]:
        """Per version, what the node's counters gained since the previous call (for heartbeats)."""
        out = []
        for key, now in self.counters.items():
            delta = now.minus(self.shipped.get(key, Counters()))
            self.shipped[key] = now.copy()
            if delta.requests:
                out.append(as_metrics(key, delta))
        return out

    def metrics_total(self) -> list[VersionMetrics]:
        return [as_metrics(key, c) for key, c in self.counters.items()]

    # -- what workers ask ----------------------------------------------------------------------

    def _hub_app(self) -> web.Application:
        app = web.Application(client_max_size=1024**3)

        async def blob(request: web.Request) -> web.Response:
            try:
                data = await self.source.fetch(request.match_info["digest"])
            except LoadError as exc:
                return web.Response(status=502, text=exc.message)
            except Exception as exc:
                return web.Response(status=502, text=f"cannot fetch {request.match_info['digest']}: {exc}")
            return web.Response(body=data)

        async def table(request: web.Request) -> web.Response:
            parsed = ModuleTable.model_validate_json(await request.read())
            report = await self.apply_table(parsed.modules, parsed.generation, parsed.traceparents)
            return web.json_response(report_json(report))

        async def metrics(request: web.Request) -> web.Response:
            await self.collect()
            return web.Response(body=_metrics_json(self.metrics_total()), content_type="application/json")

        app.router.add_get("/blobs/{digest}", blob)
        app.router.add_put("/table", table)
        app.router.add_get("/metrics", metrics)
        return app


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


# -- the two kinds of node -------------------------------------------------------------------------


def _root_level() -> str:
    return logging.getLevelName(logging.getLogger().getEffectiveLevel())


async def _until_stopped(extra: dict[signal.Signals, Callable[[], object]] | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    for sig, handler in (extra or {}).items():
        loop.add_signal_handler(sig, handler)
    await stop.wait()


async def serve_standalone(source: DirectorySource, options: PoolOptions) -> int:
    """`hotswap edge --standalone DIR --workers N`: the folder's table on N workers; SIGHUP rescans."""
    pool = WorkerPool(replace(options, log_level=_root_level()), source)
    generation = 0
    rescans: set[asyncio.Task[None]] = set()

    async def rescan() -> None:
        nonlocal generation
        scan = source.scan()
        for problem in scan.problems:
            print(f"hotswap edge: {problem}", file=sys.stderr)
        generation += 1
        report = await pool.apply_table(scan.entries, generation)
        for name, message in report.failed.items():
            print(f"hotswap edge: {name}: {message}", file=sys.stderr)

    def on_hup() -> None:
        task = asyncio.get_running_loop().create_task(rescan())
        rescans.add(task)
        task.add_done_callback(rescans.discard)

    port = await pool.start()
    try:
        await rescan()
        print(
            f"hotswap edge: serving {len(pool.running)} module version(s) from {source.folder} "
            f"with {options.count} workers on http://{options.host}:{port}",
            flush=True,
        )
        await _until_stopped({signal.SIGHUP: on_hup})
    finally:
        await pool.close()
    return 0


async def run_managed_workers(options: ManagedOptions, *, ready: asyncio.Event | None = None) -> int:
    """`hotswap edge --control URL --workers N`: the agent here, the execute servers in N workers."""
    from edge.managed import Blobs, say_serving_cached, standing_alone, wasmtime_version

    started = time.monotonic()
    blobs = Blobs()
    saved, source = standing_alone(options, blobs)  # the supervisor keeps the table and the binaries
    state = AgentState()
    pool = WorkerPool(
        PoolOptions(
            count=options.workers,
            host=options.host,
            port=options.port,
            cache_dir=options.cache_dir,
            threads=options.threads,
            node_id=options.node_id,
            grants=options.grants,
            log_level=_root_level(),
            log_format=options.log_format,
            trace_ratio=options.trace_ratio,
        ),
        source,
        conditions=state.conditions,
    )
    port = await pool.start()
    keys: set[asyncio.Task[None]] = set()

    def trust_key(pem: str, issuer: str) -> None:  # execute calls now need a token the control plane signed
        task = pool.trust(pem, issuer)
        keys.add(task)
        task.add_done_callback(keys.discard)

    url = options.advertise or f"http://{options.host}:{port}"
    registration = Registration(
        id=options.node_id,
        region=options.region,
        hostname=socket.gethostname(),
        url=url,
        runtime_version=wasmtime_version(),
    )
    agent = Agent(options.control, registration, pool, token=options.token, on_public_key=trust_key, saved=saved)
    agent.state = state
    blobs.target = ControlPlaneBlobs(agent)
    print(
        f"hotswap edge: node {options.node_id} ({options.region}) on {url} with {options.workers} workers, "
        f"control plane {options.control}",
        flush=True,
    )
    if await agent.restore():  # every worker serves it before restore returns
        await pool.say_conditions()
        say_serving_cached(agent, started)
    task = asyncio.create_task(agent.run(), name="agent")
    if ready is not None:
        ready.set()
    try:
        await _until_stopped()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pool.close()
    return 0


# -- a worker --------------------------------------------------------------------------------------


class SupervisorBlobs:
    """A worker's blob source: the supervisor, which asks the node's own source."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def fetch(self, digest: str) -> bytes:
        async with self.session.get(f"http://supervisor/blobs/{digest}") as response:
            if response.status != 200:
                raise LoadError(await response.text())
            return await response.read()


async def run_worker(config: WorkerConfig) -> int:
    """One worker: the execute server on the shared port (once it has a table) and its control socket."""
    parent = os.getppid()
    tracing = configure_tracing(config.node_id, ratio=config.trace_ratio)
    runtime = Runtime(cache_dir=Path(config.cache_dir) if config.cache_dir else None, grants=config.grant_roots())
    session = aiohttp.ClientSession(
        connector=aiohttp.UnixConnector(path=supervisor_socket(config.run_dir)),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
    )
    router = Router(runtime, SupervisorBlobs(session))

    def authenticator(pem: str, issuer: str) -> Authenticator:
        return Authenticator(pem, issuer=issuer, node_id=config.node_id)

    auth = authenticator(config.public_key, config.issuer) if config.public_key else None
    node = Node(runtime, router, NodeConfig(threads=config.threads, admin=config.admin, node_id=config.node_id), auth)

    async def forward_table(table: ModuleTable) -> ApplyReport:
        async with session.put("http://supervisor/table", data=table.model_dump_json(by_alias=True)) as response:
            return report_from_json(await response.json())[0]

    async def node_metrics() -> list[VersionMetrics]:
        async with session.get("http://supervisor/metrics") as response:
            return _METRICS.validate_json(await response.read())

    node.forward_table = forward_table
    node.node_metrics = node_metrics
    said: list[str] = []  # the node's conditions, as the supervisor last sent them
    app = build_app(node, (lambda: said) if config.conditions else None)
    name = str(config.index)

    async def tag(request: web.Request, response: web.StreamResponse) -> None:
        response.headers[WORKER_HEADER] = name

    app.on_response_prepare.append(tag)
    public = web.AppRunner(app, access_log=None, handle_signals=False)
    serving = False

    async def take_table(request: web.Request) -> web.Response:
        nonlocal serving
        body = await request.json()
        try:
            table = ModuleTable.model_validate(body["table"])
        except (KeyError, ValidationError) as exc:
            return web.Response(status=400, text=f"table: {exc}")
        if body.get("publicKey"):
            node.auth = authenticator(body["publicKey"], body.get("issuer") or ISSUER)
        said[:] = body.get("conditions") or []
        report = await router.apply_table(table.modules, table.generation, table.traceparents)
        if not serving:
            await public.setup()
            await web.TCPSite(public, config.host, config.port, backlog=1024, reuse_port=True).start()
            serving = True
        return web.json_response(report_json(report, *served(router)))

    async def take_key(request: web.Request) -> web.Response:
        body = await request.json()
        node.auth = authenticator(body["publicKey"], body.get("issuer") or ISSUER)
        return web.Response(status=204)

    async def take_conditions(request: web.Request) -> web.Response:
        said[:] = (await request.json())["conditions"]
        return web.Response(status=204)

    async def delta(request: web.Request) -> web.Response:
        return web.Response(body=_metrics_json(router.metrics_delta()), content_type="application/json")

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    control_app = web.Application(client_max_size=64 * 1024**2)
    control_app.router.add_put("/table", take_table)
    control_app.router.add_put("/key", take_key)
    control_app.router.add_put("/conditions", take_conditions)
    control_app.router.add_post("/delta", delta)
    control_app.router.add_get("/ready", ready)
    control = web.AppRunner(control_app, access_log=None, handle_signals=False)
    await control.setup()
    await web.UnixSite(control, config.socket_path()).start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():  # a worker whose supervisor is gone stops too
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await stop.wait()
            if os.getppid() != parent:
                log.warning("worker %d: the supervisor is gone; stopping", config.index)
                break
    finally:
        if serving:
            await public.cleanup()
        await control.cleanup()
        await session.close()
        runtime.close()
        tracing.shutdown()
    return 0


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m edge.workers CONFIG_JSON (started by `hotswap edge --workers N`)", file=sys.stderr)
        return 2
    config = WorkerConfig(**json.loads(argv[0]))
    setup_logging(config.log_level, config.log_format, edgeNodeId=config.node_id, worker=str(config.index))
    import uvloop

    return uvloop.run(run_worker(config))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
