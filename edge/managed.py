"""A node under a control plane (`hotswap edge --control URL --region R`): server plus agent.

The node serves its execute API at once (with an empty table), registers with the control plane
(with its node token), and from then on applies the tables it is assigned (`edge.agent`). The
control plane's public key comes back at registration; from then on execute calls need a JWT it
signed (roles developer or admin, `edge.auth`). If the control plane goes away
the node keeps serving what it has and the agent reconnects with backoff.

With a cache dir the node stands alone: it keeps its last signed table and the binaries it names on
disk (`edge.tablecache`), and after a restart serves that table, once it verifies, before it reaches
the control plane, saying `ServingCachedTable` in `GET /health` and its heartbeats until the control
plane answers. `--control-plane-key` pins the key that table must be signed with. A node run with
`--workers N` (`edge.workers`) does the same through `standing_alone` and `say_serving_cached`: its
supervisor keeps the table and the binaries, its workers serve them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from edge.agent import Agent, AgentState, ControlPlaneBlobs
from edge.auth import Authenticator
from edge.grants import GrantRoots
from edge.nodeapi import Registration
from edge.router import BlobSource, Router
from edge.runtime import Runtime
from edge.server import Node, NodeConfig, build_app
from edge.tablecache import DiskBlobs, SavedTables, TrustedKey
from edge.telemetry import configure_tracing, node_samples, start_metric_export


@dataclass(frozen=True)
class ManagedOptions:
    control: str
    region: str
    node_id: str
    host: str = "127.0.0.1"
    port: int = 0
    cache_dir: Path | None = None
    threads: int = 4
    grants: GrantRoots = field(default_factory=GrantRoots)  # where grants may lie (--allow-dir): none by default
    advertise: str | None = None  # the URL others reach this node at (default http://host:port)
    token: str | None = None  # the node token the control plane minted (role node); HOTSWAP_NODE_TOKEN
    workers: int = 1  # more than 1: a supervisor and that many server processes on one port (edge.workers)
    trace_ratio: float | None = None  # execute calls traced without a parent (default: OTel env, or 0.01)
    log_format: str | None = None  # for worker processes (--workers): json or text, as the node's own
    control_plane_key: TrustedKey | None = None  # pinned: saved tables must be signed with it (--control-plane-key)


def default_node_id(region: str) -> str:
    host = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-") or "node"
    return f"edge-{region}-{host}"[:63].rstrip("-")


class Blobs:
    """The router needs its blob source before the agent exists; this forwards once it does."""

    def __init__(self) -> None:
        self.target: ControlPlaneBlobs | None = None

    async def fetch(self, digest: str) -> bytes:
        assert self.target is not None
        return await self.target.fetch(digest)


def standing_alone(options: ManagedOptions, upstream: BlobSource) -> tuple[SavedTables | None, BlobSource]:
    """The node's saved tables and where its binaries come from: with a cache dir, the table it keeps
    and binaries kept on disk by digest (fetched from `upstream` when missing or wrong); without one,
    nothing kept and every binary from `upstream`. One place for both kinds of managed node."""
    if options.cache_dir is None:
        return None, upstream
    saved = SavedTables.under(options.cache_dir, options.node_id, options.control_plane_key)
    return saved, DiskBlobs(options.cache_dir / "blobs", upstream)


def say_serving_cached(agent: Agent, started: float) -> None:
    """The line operators (and tests) look for: the cached table serves, and how soon after the start."""
    print(
        f"hotswap edge: serving the cached table, generation {agent.state.applied_generation}, "
        f"{(time.monotonic() - started) * 1000:.0f} ms after the node started "
        f"({process_age() * 1000:.0f} ms after the process did)",
        flush=True,
    )


async def serve(node: Node, host: str, port: int, state: AgentState) -> tuple[web.AppRunner, int]:
    """`edge.server.start`, with the node's conditions in its health answer."""
    app = build_app(node, state.conditions)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    addresses = runner.addresses
    return runner, int(addresses[0][1]) if addresses else port


async def run_managed(options: ManagedOptions, *, ready: asyncio.Event | None = None) -> int:
    if options.workers > 1:
        from edge.workers import run_managed_workers

        return await run_managed_workers(options, ready=ready)
    started = time.monotonic()
    tracing = configure_tracing(options.node_id, ratio=options.trace_ratio)
    runtime = Runtime(cache_dir=options.cache_dir, grants=options.grants)
    blobs = Blobs()
    saved, source = standing_alone(options, blobs)
    router = Router(runtime, source)
    node = Node(runtime, router, NodeConfig(threads=options.threads, node_id=options.node_id))
    meters = start_metric_export(
        lambda: node_samples(router.stats, [m for _, m in router.metrics_total()], options.node_id),
        service="hotswap-edge",
        instance=options.node_id,
    )
    state = AgentState()
    runner, port = await serve(node, options.host, options.port, state)
    url = options.advertise or f"http://{options.host}:{port}"
    registration = Registration(
        id=options.node_id,
        region=options.region,
        hostname=socket.gethostname(),
        url=url,
        runtime_version=wasmtime_version(),
    )

    def trust_key(pem: str, issuer: str) -> None:  # execute calls now need a token the control plane signed
        node.auth = Authenticator(pem, issuer=issuer, node_id=options.node_id)

    agent = Agent(options.control, registration, router, token=options.token, on_public_key=trust_key, saved=saved)
    agent.state = state
    blobs.target = ControlPlaneBlobs(agent)
    print(
        f"hotswap edge: node {options.node_id} ({options.region}) on {url}, control plane {options.control}", flush=True
    )
    if await agent.restore():
        say_serving_cached(agent, started)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(agent.run(), name="agent")
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await runner.cleanup()
        runtime.close()
        await asyncio.to_thread(tracing.shutdown)  # the last spans go out
        if meters is not None:
            await asyncio.to_thread(meters.shutdown)
    return 0


def process_age() -> float:
    """Seconds since this process started (Linux: /proc; elsewhere since this module was imported)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(uptime - ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


_IMPORTED = time.monotonic()


def wasmtime_version() -> str:
    from importlib.metadata import version

    return f"wasmtime-{version('wasmtime')}"
