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
`--workers N` (`edge.supervisor`) does the same: its supervisor keeps the table and the binaries
(this module's `ControlPlane` runs there), its workers serve them.

Where it sits: `ControlPlane` is the source `edge.run.run_node` takes for such a node; the target
(one process, or workers) is chosen by `edge.commands.edge` from `--workers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge.agent import Agent, AgentState
from edge.blobfetch import ControlPlaneBlobs, ControlPlaneLink
from edge.nodeapi import Registration
from edge.router import BlobSource
from edge.tablecache import DiskBlobs, SavedTables, TrustedKey

if TYPE_CHECKING:
    from edge.run import Signals, Started


@dataclass(frozen=True)
class ManagedOptions:
    control: str
    region: str
    node_id: str
    host: str = "127.0.0.1"  # with the port it serves, its URL unless `advertise` says another
    cache_dir: Path | None = None  # with one, the node keeps its table and binaries (edge.tablecache)
    advertise: str | None = None  # the URL others reach this node at (default http://host:port)
    token: str | None = None  # the node token the control plane minted (role node); HOTSWAP_NODE_TOKEN
    control_plane_key: TrustedKey | None = None  # pinned: saved tables must be signed with it (--control-plane-key)


def default_node_id(region: str) -> str:
    host = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-") or "node"
    return f"edge-{region}-{host}"[:63].rstrip("-")


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


class ControlPlane:
    """A managed node's source (`edge.run.Source`): the agent, and what the node keeps to stand alone."""

    def __init__(self, options: ManagedOptions) -> None:
        self.options = options
        self.started = time.monotonic()
        # Built before the router and the agent, and handed to both: the router's binaries and the
        # agent's calls go over the same sessions.
        self.link = ControlPlaneLink(options.control, options.token)
        self.saved, self.blobs = standing_alone(options, ControlPlaneBlobs(self.link))
        self.state = AgentState()  # the node's conditions read it before the agent exists
        self.conditions = self.state.conditions
        self._task: asyncio.Task[None] | None = None

    async def first(self, node: Started) -> None:
        pass  # the node serves at once, with an empty table: the agent brings the first (or restores it)

    async def follow(self, node: Started, port: int) -> Signals:
        options = self.options
        url = options.advertise or f"http://{options.host}:{port}"
        registration = Registration(
            id=options.node_id,
            region=options.region,
            hostname=socket.gethostname(),
            url=url,
            runtime_version=wasmtime_version(),
        )
        # on_public_key: execute calls now need a token the control plane signed
        agent = Agent(self.link, registration, node.table, on_public_key=node.trust, saved=self.saved, state=self.state)
        print(
            f"hotswap edge: node {options.node_id} ({options.region}) on {url}{node.described}, "
            f"control plane {options.control}",
            flush=True,
        )
        if await agent.restore():  # the whole node serves it before restore returns
            await node.say_conditions()
            say_serving_cached(agent, self.started)
        self._task = asyncio.create_task(agent.run(), name="agent")
        return {}

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.link.close()  # the agent closes it as it stops; this covers a node stopped before it


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
