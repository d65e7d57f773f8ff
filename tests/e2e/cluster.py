"""A real local cluster for end-to-end tests: a fleet Git repository in a temp dir, the control plane
(in the test's event loop, so its code is measured), edge node processes on 127.0.0.1, and a load
generator that records which version served every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from reconciler.api.auth import EDGE_AUDIENCE
from reconciler.server import ControlPlane, ServeOptions
from tests.git.gitutil import git

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "fleet-example"
DEADLINE = 60.0

FAST_STRATEGIES = {
    "strategies/canary.yaml": """\
apiVersion: hotswap.dev/v1
kind: RolloutStrategy
metadata: {name: canary}
spec:
  type: Canary
  canary: {steps: [20, 50, 100], stepSeconds: 0.6}
  analysis: {maxErrorRate: 0.05, minRequests: 20, onNoTraffic: pause}
  autoRollback: true
""",
    "strategies/blue-green.yaml": """\
apiVersion: hotswap.dev/v1
kind: RolloutStrategy
metadata: {name: blue-green}
spec:
  type: BlueGreen
  blueGreen: {previewSeconds: 0.3, autoPromote: true, keepPreviousSeconds: 1}
  analysis: {maxErrorRate: 0.05, minRequests: 0, onNoTraffic: proceed}
""",
    "strategies/rolling.yaml": """\
apiVersion: hotswap.dev/v1
kind: RolloutStrategy
metadata: {name: rolling}
spec:
  type: Rolling
  rolling: {batchSize: 1, batchSeconds: 0.5}
  analysis: {maxErrorRate: 0.05, minRequests: 0, onNoTraffic: proceed}
""",
}


# Pauses a rollout leaves by itself as requests come (reconciler.planner.machine.INCONCLUSIVE, less
# CannotProgress, which waits for a person).
WAITING_FOR_TRAFFIC = frozenset({"NoTraffic", "BaselineDegraded"})


async def poll(condition: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = DEADLINE) -> None:
    """Wait until `condition()` holds, checking every 50 ms; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


class FleetRepo:
    """A Git repository holding under `fleet/` a copy of fleet-example (with fast strategies), or only
    `files` (path under `fleet/` -> text) when given."""

    def __init__(self, root: Path, files: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.fleet = root / "fleet"
        if files is None:
            shutil.copytree(EXAMPLE, self.fleet)
            files = FAST_STRATEGIES
        for rel, text in files.items():
            (self.fleet / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.fleet / rel).write_text(text)
        git(root, "init", "-q", "-b", "main")
        self.commit("fleet")

    def commit(self, message: str, *, key: Path | None = None, trailers: Sequence[str] = ()) -> str:
        """Commit everything; signed with the SSH private key `key` when given."""
        git(self.root, "add", "-A")
        sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}"] if key else []
        extra = [x for t in trailers for x in ("--trailer", t)]
        git(self.root, *sign, "commit", "-q", "--allow-empty", *(["-S"] if key else []), "-m", message, *extra)
        return git(self.root, "rev-parse", "HEAD").strip()

    def edit(self, rel: str, old: str, new: str) -> None:
        path = self.fleet / rel
        text = path.read_text()
        assert old in text, f"{old!r} not in {rel}"
        path.write_text(text.replace(old, new))

    def derive_wat(self, base: str, name: str, **replace: str) -> str:
        """A new module source made from an existing one by text replacement (a new build)."""
        text = (self.fleet / "wasm" / base).read_text()
        for old, new in replace.items():
            assert old in text, f"{old!r} not in {base}"
            text = text.replace(old, new)
        (self.fleet / "wasm" / name).write_text(text)
        return name

    def set_module(self, name: str, version: str, source: str, **replace: str) -> str:
        rel = f"modules/{name}.yaml"
        text = (self.fleet / rel).read_text()
        lines = []
        for line in text.splitlines():
            if line.startswith("  version: "):
                lines.append(f"  version: {version}")
            elif line.startswith("  source: "):
                lines.append(f"  source: {{path: ../wasm/{source}}}")
            else:
                lines.append(line)
        text = "\n".join(lines) + "\n"
        for old, new in replace.items():
            text = text.replace(old, new)
        (self.fleet / rel).write_text(text)
        return self.commit(f"{name} {version}")


def spawn_edge(
    control: str, token: str, node_id: str, region: str, data: Path, workers: int = 1, flags: Sequence[str] = ()
) -> EdgeProcess:
    """An edge node process joining the control plane at `control` with the node token `token`
    (`workers` > 1: that many server processes under a supervisor, `hotswap edge --workers`), and
    any other `flags` of `hotswap edge`."""
    log = data / f"{node_id}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HOTSWAP_NODE_TOKEN": token}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "hotswap", "edge", "--control", control, "--region", region,
                "--id", node_id, "--port", "0", "--cache-dir", str(data / "cache" / node_id),
                "--threads", "2", "--log-level", "WARNING", "--workers", str(workers), *flags,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )  # fmt: skip
    return EdgeProcess(node_id, region, process, log)


class LoadTarget(Protocol):
    """What the load generator needs: where the nodes are, and headers that authorise execute calls."""

    def node_urls(self) -> dict[str, str]: ...

    def edge_headers(self, role: str = "developer") -> dict[str, str]: ...


def kill_process(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL, as a crash would end it."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL when it has not exited 10 s later."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            kill_process(process)


@dataclass
class EdgeProcess:
    node_id: str
    region: str
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        kill_process(self.process)

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class Cluster:
    repo: FleetRepo
    plane: ControlPlane
    data: Path
    nodes: list[EdgeProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.plane.url

    def start_node(self, node_id: str, region: str, workers: int = 1, flags: Sequence[str] = ()) -> EdgeProcess:
        node = spawn_edge(self.url, self.plane.mint(node_id, "node"), node_id, region, self.data, workers, flags)
        self.nodes.append(node)
        return node

    def token(self, role: str = "developer", subject: str | None = None) -> str:
        """A token the control plane signed for calls to its API (nodes refuse it)."""
        return self.plane.mint(subject or f"test-{role}", role)

    def edge_token(self, role: str = "developer", subject: str | None = None) -> str:
        """A token the control plane signed for execute calls straight to the nodes (the API refuses it)."""
        return self.plane.mint(subject or f"test-{role}", role, audience=EDGE_AUDIENCE)

    def headers(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role)}"}

    def edge_headers(self, role: str = "developer") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.edge_token(role)}"}

    def node_urls(self) -> dict[str, str]:
        return {v.id: v.url for v in self.plane.hub.view() if v.status == "Healthy"}

    def serving(self, module: str) -> dict[str, set[tuple[str, int]]]:
        """Node id -> {(version, weight)} the node reports for `module`."""
        out: dict[str, set[tuple[str, int]]] = {}
        for view in self.plane.hub.view():
            out[view.id] = {(v, w) for m, v, _, w in view.running if m == module}
        return out

    def latest(self, module: str) -> Any:
        from reconciler.planner import latest_records

        return latest_records(self.plane.controller.book.records()).get(module)

    async def restart_control_plane(self) -> None:
        """Stop the control plane and start a new one on the same port and data (a crash and restart)."""
        options = self.plane.options
        port = int(self.url.rsplit(":", 1)[1])
        await self.plane.stop()
        self.plane = ControlPlane(replace(options, port=port))
        await self.plane.start()

    async def stop_control_plane(self) -> None:
        """Stop the control plane (the nodes lose it); `start_control_plane` brings it back."""
        await self.plane.stop()

    async def start_control_plane(self) -> None:
        """A new control plane on the same port and data as the stopped one."""
        port = int(self.url.rsplit(":", 1)[1])
        self.plane = ControlPlane(replace(self.plane.options, port=port))
        await self.plane.start()

    async def wait_ready(self, count: int) -> None:
        def ready() -> bool:
            views = [v for v in self.plane.hub.view() if v.status == "Healthy"]
            table_ok = all(v.applied_generation == v.generation and v.generation > 0 for v in views)
            return len(views) >= count and table_ok

        try:
            await poll(ready, f"{count} healthy nodes running their tables")
        except AssertionError as exc:  # say what each node was doing, for a failure seen only in CI
            raise AssertionError(f"{exc}\n{self.describe_nodes()}") from None

    def describe_nodes(self) -> str:
        """Each node as the control plane sees it, and the end of each node process's log."""
        lines = [
            f"  {v.id}: {v.status}, generation {v.applied_generation}/{v.generation}, failed {v.failed}"
            for v in self.plane.hub.view()
        ]
        for node in self.nodes:
            exit_code = node.process.poll()
            tail = node.log.read_text(errors="replace")[-1500:] if node.log.exists() else "(no log)"
            lines.append(f"  --- {node.node_id} (exit {exit_code}) log:\n{tail}")
        return "\n".join(lines)

    async def wait_phase(self, module: str, version: str, phases: Sequence[str]) -> Any:
        def reached() -> bool:
            record = self.latest(module)
            return record is not None and record.target.version == version and record.phase.value in phases

        await poll(reached, f"{module}@{version} to reach {' or '.join(phases)}")
        return self.latest(module)

    async def wait_ended(self, module: str, version: str) -> Any:
        """The rollout of `module` to `version` once it has ended: promoted, rolled back, or paused for
        a reason a person must act on. A step with too few requests pauses (NoTraffic) and is judged
        again as requests come: on a busy machine that pause is on the way, not the end."""

        def ended() -> bool:
            record = self.latest(module)
            if record is None or record.target.version != version:
                return False
            phase = record.phase.value
            waiting = phase == "Paused" and record.reason in WAITING_FOR_TRAFFIC
            return phase in ("Promoted", "RolledBack", "Paused") and not waiting

        await poll(ended, f"{module}@{version} to be promoted, rolled back or paused for a person")
        return self.latest(module)

    async def wait_all_serving(self, module: str, version: str, nodes: Sequence[str]) -> None:
        def converged() -> bool:
            serving = self.serving(module)
            return all(serving.get(n) == {(version, 100)} for n in nodes)

        await poll(converged, f"every node serving only {module}@{version}")


@dataclass
class LoadResult:
    versions: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    module_errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0


class Load:
    """Requests in a loop to every healthy node, until stopped; every response is checked."""

    def __init__(
        self,
        cluster: LoadTarget,
        module: str,
        function: str,
        args: Callable[[int], Any],
        targets: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        """`targets` narrows the nodes called (default: every healthy node)."""
        self.cluster = cluster
        self.targets = targets or (lambda: list(cluster.node_urls().values()))
        self.module = module
        self.function = function
        self.args = args
        self.result = LoadResult()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Load:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _one(self, session: aiohttp.ClientSession, url: str, i: int) -> None:
        body = {"module": self.module, "function": self.function, "args": self.args(i)}
        self.result.sent += 1
        try:
            async with session.post(f"{url}/api/v1/wasm/execute", json=body) as response:
                data = await response.json(content_type=None)
                version = response.headers.get("X-Hotswap-Version")
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.result.failures.append(f"{url}: {type(exc).__name__}: {exc}")
            return
        if response.status == 200:
            if version is None or data.get("version") != version:
                self.result.failures.append(f"{url}: 200 without a version: {data}")
            else:
                self.result.versions[version] += 1
        elif response.status >= 500 and data.get("error") in ("trap", "timeout", "memory", "cpu"):
            self.result.module_errors[f"{data.get('version')}:{data.get('error')}"] += 1
        else:
            self.result.failures.append(f"{url}: {response.status} {data}")

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        headers = self.cluster.edge_headers("developer")
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            i = 0
            while not self._stop.is_set():
                urls = list(self.targets())
                if not urls:
                    await asyncio.sleep(0.05)
                    continue
                await asyncio.gather(*(self._one(session, url, i + k) for k, url in enumerate(urls)))
                i += len(urls)


async def start_cluster(
    tmp: Path,
    regions: Sequence[tuple[str, str]],
    heartbeat: float = 0.25,
    port: int = 0,
    trust: Path | None = None,
    database_url: str | None = None,
    blob_url: str | None = None,
    files: Mapping[str, str] | None = None,
) -> Cluster:
    """`files`: the fleet repository's files (see `FleetRepo`); default a copy of fleet-example."""
    repo = FleetRepo(tmp / "repo", files)
    data = tmp / "data"
    data.mkdir()
    plane = ControlPlane(
        ServeOptions(
            repo=str(repo.root),
            path="fleet",
            data_dir=data / "control",
            port=port,
            trust=trust,
            database_url=database_url,
            blob_url=blob_url,
            interval=0.5,
            heartbeat_seconds=heartbeat,
        )
    )
    await plane.start()
    cluster = Cluster(repo, plane, data)
    for node_id, region in regions:
        cluster.start_node(node_id, region)
    return cluster


async def stop_cluster(cluster: Cluster) -> None:
    # Off the event loop: a node's last export may go to a receiver served by this very loop.
    await asyncio.gather(*(asyncio.to_thread(node.stop) for node in cluster.nodes))
    await cluster.plane.stop()


# Four nodes over the example's three regions: two in us-east, and apac-east where greeter runs its
# 1.0.0 override (so greeter's rollouts reach only the others).
FOUR_NODES = [
    ("edge-us-east-1", "us-east"),
    ("edge-us-east-2", "us-east"),
    ("edge-eu-central-1", "eu-central"),
    ("edge-apac-east-1", "apac-east"),
]
GREETER_NODES = [n for n, r in FOUR_NODES if r != "apac-east"]


@contextlib.asynccontextmanager
async def ready_cluster(tmp: Path, regions: Sequence[tuple[str, str]]) -> AsyncIterator[Cluster]:
    """A cluster whose nodes all run their tables, calc 1.0.0 on every one; stopped after."""
    cluster = await start_cluster(tmp, regions)
    try:
        await cluster.wait_ready(len(regions))
        await cluster.wait_all_serving("calc", "1.0.0", [n for n, _ in regions])
        yield cluster
    finally:
        await stop_cluster(cluster)
