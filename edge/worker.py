"""One worker process of a node in several processes: `python -m edge.worker CONFIG_JSON`.

Where it sits: the supervisor (`edge.supervisor.WorkerPool`) starts N of these with a
`WorkerConfig` on the command line. Each runs the node's execute server (`edge.server`) with its
own runtime and router, on the port every worker shares (SO_REUSEPORT), and answers the supervisor
on its own unix socket (`edge.ipc.worker_app`). It binds the shared port only once its first table
is applied, so no caller meets a worker with an empty table. Binaries, admin tables and the node's
metrics go through the supervisor (`edge.ipc.SupervisorLink`); a worker whose supervisor is gone
stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from edge.auth import Authenticator
from edge.ipc import WORKER_HEADER, Applied, Key, SupervisorLink, WorkerConfig, worker_app
from edge.protocol import ModuleEntry, ModuleTable, VersionMetrics
from edge.router import Router
from edge.runtime import Runtime
from edge.server import Node, NodeConfig, build_app, take_execute_shortcut
from edge.smoke import SmokeOutcome
from edge.telemetry import configure_tracing, setup_logging

log = logging.getLogger("hotswap.edge.workers")


def served(router: Router) -> tuple[list[ModuleEntry], dict[Key, SmokeOutcome]]:
    """What a worker's router serves: entries at the weight each version takes, and smoke outcomes."""
    slots = router.slots()
    running = [
        s.entry.model_copy(update={"weight": s.weight}) if s.weight != s.entry.weight else s.entry for s in slots
    ]
    smoke = {(s.module, s.version): s.smoke for s in slots if s.smoke is not None}
    return running, smoke


class Worker:
    """A worker's execute server and what it does with the supervisor's messages (`edge.ipc.WorkerSide`)."""

    def __init__(self, config: WorkerConfig, runtime: Runtime, supervisor: SupervisorLink) -> None:
        self.config = config
        self.router = Router(runtime, supervisor)
        auth = self._authenticator(config.public_key, config.issuer) if config.public_key else None
        node_config = NodeConfig(threads=config.threads, admin=config.admin, node_id=config.node_id)
        self.node = Node(runtime, self.router, node_config, auth, whole=supervisor)
        self.said: list[str] = []  # the node's conditions, as the supervisor last sent them
        app = build_app(self.node, (lambda: self.said) if config.conditions else None)
        app.on_response_prepare.append(self._tag)
        self.public = web.AppRunner(app, access_log=None, handle_signals=False)
        self.serving = False

    def _authenticator(self, pem: str, issuer: str) -> Authenticator:
        return Authenticator(pem, issuer=issuer, node_id=self.config.node_id)

    async def _tag(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers[WORKER_HEADER] = str(self.config.index)

    async def take_table(
        self, table: ModuleTable, public_key: str | None, issuer: str, conditions: Sequence[str]
    ) -> Applied:
        if public_key:
            self.take_key(public_key, issuer)
        self.said[:] = conditions
        report = await self.router.apply_table(table.modules, table.generation, table.traceparents)
        if not self.serving:
            await self.public.setup()
            take_execute_shortcut(self.public)
            await web.TCPSite(self.public, self.config.host, self.config.port, backlog=1024, reuse_port=True).start()
            self.serving = True
        return Applied(report, *served(self.router))

    def take_key(self, public_key: str, issuer: str) -> None:
        self.node.trust(self._authenticator(public_key, issuer))

    def take_conditions(self, conditions: Sequence[str]) -> None:
        self.said[:] = conditions

    def metrics_delta(self) -> list[VersionMetrics]:
        return self.router.metrics_delta()


async def run_worker(config: WorkerConfig) -> int:
    """One worker: the execute server on the shared port (once it has a table) and its control socket."""
    parent = os.getppid()
    tracing = configure_tracing(config.node_id, ratio=config.trace_ratio)
    runtime = Runtime(cache_dir=Path(config.cache_dir) if config.cache_dir else None, grants=config.grant_roots())
    supervisor = SupervisorLink(config.run_dir)
    worker = Worker(config, runtime, supervisor)
    control = web.AppRunner(worker_app(worker), access_log=None, handle_signals=False)
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
        if worker.serving:
            await worker.public.cleanup()
        await control.cleanup()
        await supervisor.close()
        runtime.close()
        tracing.shutdown()
    return 0


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m edge.worker CONFIG_JSON (started by `hotswap edge --workers N`)", file=sys.stderr)
        return 2
    config = WorkerConfig(**json.loads(argv[0]))
    setup_logging(config.log_level, config.log_format, edgeNodeId=config.node_id, worker=str(config.index))
    import uvloop

    return uvloop.run(run_worker(config))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
