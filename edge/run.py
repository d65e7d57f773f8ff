"""One way to run a node: `run_node(source, target)`, for the four kinds `hotswap edge` starts.

Where it sits: `edge.commands.edge` reads the flags and builds a source and a target; this module
starts the target, lets the source feed it tables until SIGTERM or SIGINT, and closes both.

    source (where tables come from)                      target (where they run)
    edge.standalone.Folder: a folder, SIGHUP rescans     OneProcess: a runtime, router and execute server here
    edge.managed.ControlPlane: the agent                 Workers: N worker processes (edge.supervisor)

A source needs of a target only a `Started` node: its table target (`edge.agent.TableTarget`: a
`Router` or a `WorkerPool`), the port it serves, a way to trust the control plane's key and to pass
on the node's conditions. The order is the same for every kind: the target starts (workers take the
empty table), the source gives its first table (a folder's scan, so a one-process node never serves
an empty one), the port serves, then the source follows (the agent registers with the port's URL).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from edge.agent import TableTarget
from edge.auth import ISSUER, Authenticator
from edge.grants import GrantRoots
from edge.router import BlobSource, Router
from edge.runtime import Runtime
from edge.server import Node, NodeConfig, build_app, take_execute_shortcut
from edge.supervisor import PoolOptions, WorkerPool
from edge.telemetry import Tracing, configure_tracing, node_samples, start_metric_export

Conditions = Callable[[], Iterable[str]]
Signals = dict[signal.Signals, Callable[[], object]]


class Started(Protocol):
    """A target once started: what a source feeds and follows."""

    host: str
    described: str  # how the banner names the target: "" or " with N workers"

    @property
    def table(self) -> TableTarget: ...

    async def serve(self) -> int:
        """Listen (once the first table is in); returns the port."""
        ...

    def versions(self) -> int: ...  # the module versions it serves

    def trust(self, pem: str, issuer: str) -> None:
        """Execute calls need a token this key verifies from now on."""
        ...

    async def say_conditions(self) -> None: ...  # the node's conditions changed outside a table

    async def close(self) -> None: ...


class Target(Protocol):
    async def start(self, blobs: BlobSource, conditions: Conditions | None) -> Started: ...


class Source(Protocol):
    @property
    def blobs(self) -> BlobSource: ...  # where the node's binaries come from

    @property
    def conditions(self) -> Conditions | None: ...  # what GET /health says of the node (None: nothing)

    async def first(self, node: Started) -> None:
        """The first table, before the port serves."""
        ...

    async def follow(self, node: Started, port: int) -> Signals:
        """Start feeding the node (returns at once); the signals it answers while the node runs."""
        ...

    async def close(self) -> None: ...


async def run_node(source: Source, target: Target) -> int:
    node = await target.start(source.blobs, source.conditions)
    try:
        await source.first(node)
        port = await node.serve()
        extra = await source.follow(node, port)
        await _until_stopped(extra)
    finally:
        await source.close()
        await node.close()
    return 0


async def _until_stopped(extra: Signals) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    for sig, handler in extra.items():
        loop.add_signal_handler(sig, handler)
    await stop.wait()


# -- the two targets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OneProcess:
    """The node in this process: one runtime, one router, the execute server."""

    host: str = "127.0.0.1"
    port: int = 0
    threads: int = 4
    admin: bool = False
    node_id: str = "standalone"
    auth: Authenticator | None = None  # a standalone node's --key; a managed node trusts the control plane's
    cache_dir: Path | None = None
    grants: GrantRoots = field(default_factory=GrantRoots)
    trace_ratio: float | None = None
    export_metrics: bool = False  # OTLP metrics (a managed node)

    async def start(self, blobs: BlobSource, conditions: Conditions | None) -> _InProcess:
        tracing = configure_tracing(self.node_id, ratio=self.trace_ratio)
        runtime = Runtime(cache_dir=self.cache_dir, grants=self.grants)
        router = Router(runtime, blobs)
        node = Node(
            runtime, router, NodeConfig(threads=self.threads, admin=self.admin, node_id=self.node_id), self.auth
        )
        meters = None
        if self.export_metrics:
            meters = start_metric_export(
                lambda: node_samples(router.stats, [m for _, m in router.metrics_total()], self.node_id),
                service="hotswap-edge",
                instance=self.node_id,
            )
        return _InProcess(self, node, conditions, tracing, meters)


class _InProcess:
    described = ""

    def __init__(
        self, options: OneProcess, node: Node, conditions: Conditions | None, tracing: Tracing, meters: Any
    ) -> None:
        self.options = options
        self.host = options.host
        self.node = node
        self.router = node.router
        self.conditions = conditions
        self.tracing = tracing
        self.meters = meters
        self.runner: web.AppRunner | None = None

    @property
    def table(self) -> TableTarget:
        return self.router

    async def serve(self) -> int:
        self.runner = web.AppRunner(build_app(self.node, self.conditions), access_log=None, handle_signals=False)
        await self.runner.setup()
        take_execute_shortcut(self.runner)
        await web.TCPSite(self.runner, self.host, self.options.port, backlog=1024).start()
        addresses = self.runner.addresses
        return int(addresses[0][1]) if addresses else self.options.port

    def versions(self) -> int:
        return len(self.router.slots())

    def trust(self, pem: str, issuer: str) -> None:
        self.node.trust(Authenticator(pem, issuer=issuer, node_id=self.options.node_id))

    async def say_conditions(self) -> None:
        pass  # GET /health reads them when asked

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        self.node.runtime.close()
        await asyncio.to_thread(self.tracing.shutdown)  # the last spans go out
        if self.meters is not None:
            await asyncio.to_thread(self.meters.shutdown)


@dataclass(frozen=True)
class Workers:
    """The node in N worker processes on one port, under this process as their supervisor."""

    options: PoolOptions

    async def start(self, blobs: BlobSource, conditions: Conditions | None) -> _Pool:
        root = logging.getLevelName(logging.getLogger().getEffectiveLevel())  # the workers log as this process does
        pool = WorkerPool(replace(self.options, log_level=root), blobs, conditions=conditions)
        await pool.start()
        return _Pool(pool)


class _Pool:
    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.host = pool.options.host
        self.described = f" with {pool.options.count} workers"
        self._keys: set[asyncio.Task[None]] = set()

    @property
    def table(self) -> TableTarget:
        return self.pool

    async def serve(self) -> int:
        return self.pool.port  # each worker listens once it has its first table

    def versions(self) -> int:
        return len(self.pool.running)

    def trust(self, pem: str, issuer: str = ISSUER) -> None:
        task = self.pool.trust(pem, issuer)
        self._keys.add(task)
        task.add_done_callback(self._keys.discard)

    async def say_conditions(self) -> None:
        await self.pool.say_conditions()

    async def close(self) -> None:
        await self.pool.close()
