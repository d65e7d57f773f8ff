"""Scale: one control plane, a simulated fleet of 1,000 nodes carrying 10,000 module placements.

The control plane is the real one (`ControlPlane`, as `hotswap serve` runs it) in a child process,
with SQLite and the blob folder under a temp data dir, following a generated fleet repository. The
nodes are lightweight agents in this process: each speaks the real node protocol over HTTP (register
with a node token, long-poll its assignment, heartbeat with a running table that echoes what it was
assigned) and runs no wasm. For the canary, agents report metric deltas: requests in proportion to
each version's weight, no errors.

The agents speak HTTP/1.1 through bench/wire.py by default: a minimal keep-alive client, one
connection for each agent's long-poll and one for its heartbeats, so that the agents' process takes
little of the machine's CPU from the control planes it measures. `--agents aiohttp` puts them all on
one aiohttp connection pool instead, as the bench did before: the same calls through a full client,
to compare (the admin calls, reading rollout phases and leadership, are on aiohttp either way).

The fleet: 10 regions of N/10 nodes; in each region 9 modules with `replicas: all` (9 per node),
plus one module `edge-all` with `replicas: all` everywhere: 10 placements per node, 10,000 for
1,000 nodes. Measured:

- registration of every node, and until every agent has applied its first table;
- reconcile pass time (`controller.state.duration_ms`, every pass the control plane ran);
- a blue-green switch of `edge-all`: commit -> every agent has applied the new table (several runs);
- a canary of one regional module (steps 20/50/100) from commit to Promoted and converged;
- the control plane's memory (VmRSS and VmHWM of the child);
- the control plane's event loop lag: a task in the child sleeps 10 ms at a time and notes how late
  it wakes (max, p99, and the count of stalls over 50 ms), over the whole run and over the switches.

Several replicas (`--replicas 2`, DESIGN.md's high availability): each replica is a child process of
its own on one PostgreSQL (`--database-url`, else a private server started as bench/ha.py does, a
fresh schema either way), with one blob directory and one token-signing key between them. Agent k
registers with, long-polls and heartbeats replica k mod N only, as nodes behind a load balancer
would; the advisory-lock leader plans and publishes, the others wake their long-polls on its NOTIFY.
Memory, passes and loop lag are reported for each replica.

What holds a replica's event loop: `HOTSWAP_SCALE_STALLS=FILE` has each replica sample its loop
thread's stack while the loop is over 50 ms late (bench/stalls.py) and append, at the end, the
stacks that held it longest and the garbage collector's pauses to FILE. With
`HOTSWAP_SCALE_STALLS_SAMPLER=turns` the samples are taken inside the loop's thread, every
millisecond, and a hold over 50 ms is counted whole once it ends (`bench.stalls.TurnSampler`).

    python bench/scale.py [--nodes 1000] [--runs 3] [--heartbeat-seconds 5] [--quick] [--profile FILE]
                          [--replicas N] [--database-url postgresql://...] [--agents {wire,aiohttp}]
    (--quick: 100 nodes, 2 switches, 2 s heartbeats; a canary step lasts two heartbeats)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import gc
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stalls import StallSampler, TurnSampler, waited_for_cpu
from bench.stats import machine, percentile
from bench.wire import Wire, WireError
from reconciler.api.auth import AuthOptions, TokenAuthority, load_or_create_signing_key

REGIONS = 10
MODULES_PER_REGION = 9
GLOBAL = "edge-all"
CANARY = "m0-0"
HEARTBEAT_SECONDS = 5.0
LAG_TICK_S = 0.010  # the loop-lag monitor's sleep
STALL_MS = 50.0  # a wake-up later than this is a stall (issue 20: never blocked > 50 ms)
LONG_POLL_SECONDS = 25.0
CALL_TIMEOUT_S = LONG_POLL_SECONDS + 30  # any one call of an agent, a long-poll's wait included
PROGRESS_S = 15.0  # a waiting bench says how far the agents are this often (stderr)
REQUESTS_PER_SECOND = 100.0  # per node and module under canary, as the simulated agents report them
NODES_PATH = "/api/v1/wasm/nodes"

STRATEGIES = {
    "blue-green": """\
apiVersion: hotswap.dev/v1
kind: RolloutStrategy
metadata: {name: blue-green}
spec:
  type: BlueGreen
  blueGreen: {previewSeconds: 0, autoPromote: true, keepPreviousSeconds: 1}
  analysis: {minRequests: 0, onNoTraffic: proceed}
""",
    "canary": """\
apiVersion: hotswap.dev/v1
kind: RolloutStrategy
metadata: {name: canary}
spec:
  type: Canary
  canary: {steps: [20, 50, 100], stepSeconds: STEP}
  analysis: {maxErrorRate: 0.05, minRequests: 20, onNoTraffic: pause}
  autoRollback: true
""",
}


def figures(values: list[float]) -> str:
    if not values:
        return "no samples"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"median {statistics.median(values):.1f}, p99 {percentile(values, 0.99):.1f} (n={len(values)})"


# -- the fleet repository ---------------------------------------------------------------------------


def wat(value: int) -> str:
    run = f'(func (export "run") (result i32) (i32.const {value}))'
    return f'(module {run} (func (export "health") (result i32) (i32.const 1)))\n'


def module_doc(name: str, version: str, strategy: str, regions: list[str] | None) -> str:
    where = f"\n    regions: [{', '.join(regions)}]" if regions else ""
    return f"""\
apiVersion: hotswap.dev/v1
kind: Module
metadata: {{name: {name}}}
spec:
  version: {version}
  source: {{path: ../wasm/{name}-{version}.wat}}
  limits: {{memoryMB: 16, timeoutSeconds: 2}}
  placement:{where}
    replicas: all
  rollout: {strategy}
"""


class Repo:
    def __init__(self, root: Path, step_seconds: float) -> None:
        self.root = root
        self.fleet = root / "fleet"
        for sub in ("modules", "strategies", "wasm"):
            (self.fleet / sub).mkdir(parents=True)
        regions = "\n".join(f"    - {{name: r{i}}}" for i in range(REGIONS))
        (self.fleet / "fleet.yaml").write_text(
            "apiVersion: hotswap.dev/v1\nkind: Fleet\nmetadata: {name: scale}\nspec:\n  environment: dev\n"
            f"  regions:\n{regions}\n  nodeDefaults: {{maxModules: 100}}\n"
        )
        for name, text in STRATEGIES.items():
            (self.fleet / "strategies" / f"{name}.yaml").write_text(text.replace("STEP", f"{step_seconds:g}"))
        for r in range(REGIONS):
            for k in range(MODULES_PER_REGION):
                self.set_version(f"m{r}-{k}", "1.0.0", "canary", [f"r{r}"])
        self.set_version(GLOBAL, "1.0.0", "blue-green", None)
        self.git("init", "-q", "-b", "main")
        self.commit("fleet")

    def git(self, *args: str) -> str:
        env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com"}
        env |= {"GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com"}
        return subprocess.run(["git", *args], cwd=self.root, env=env, check=True, capture_output=True, text=True).stdout

    def set_version(self, name: str, version: str, strategy: str, regions: list[str] | None) -> None:
        major, minor, patch = (int(x) for x in version.split("."))
        (self.fleet / "wasm" / f"{name}-{version}.wat").write_text(wat(major * 10000 + minor * 100 + patch))
        (self.fleet / "modules" / f"{name}.yaml").write_text(module_doc(name, version, strategy, regions))

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)


# -- the control plane in a child process -----------------------------------------------------------


async def serve_child(args: argparse.Namespace) -> None:
    """The child: the real control plane, noting every pass's duration in a file."""
    import logging

    from reconciler.server import ControlPlane, ServeOptions

    raise_fd_limit()
    logging.basicConfig(level=logging.WARNING)
    plane = ControlPlane(
        ServeOptions(
            repo=args.repo,
            path="fleet",
            data_dir=Path(args.data),
            database_url=args.database_url,
            blob_url=args.blob_url,
            port=args.port,
            interval=1.0,
            heartbeat_seconds=args.heartbeat,
            auth=AuthOptions(private_key=Path(args.key)),
        )
    )
    await plane.start()
    controller = plane.controller
    reconcile = controller.reconcile
    passes = append_to(Path(args.passes))

    async def timed() -> float | None:
        started = time.time()
        try:
            return await reconcile()
        finally:
            steps = ",".join(f"{name}={ms:.1f}" for name, ms in controller.state.steps_ms.items())
            passes.write(f"{controller.state.duration_ms:.3f} {started:.6f} {steps or '-'}\n")  # time, start, steps
            passes.flush()

    controller.reconcile = timed  # type: ignore[method-assign]
    watch = os.environ.get("HOTSWAP_SCALE_WATCH")  # a line every 5 s on the hub's store writes (debugging)

    async def watching(out: IO[str]) -> None:
        hub = plane.hub
        batchers = (
            ("heartbeats", hub.heartbeat_writes),
            ("tables", hub.table_writes),
            ("shared", hub.shared_heartbeat_writes),
        )
        while True:  # "shared": heartbeats with their metric deltas, when replicas share PostgreSQL
            for name, writes in batchers:
                out.write(
                    f"{time.time():.1f} port={args.port} leader={controller.leader} {name} "
                    f"pending={len(writes._pending)} batches={writes.batches}\n"
                )
            out.flush()
            await asyncio.sleep(5)

    watcher = asyncio.create_task(watching(append_to(Path(watch)))) if watch else None
    lags: list[tuple[float, float, float]] = []  # (wall time, ms late, ms of it waiting for a CPU) a wake-up
    monitor = asyncio.create_task(lagging(lags))
    stalls_to = os.environ.get("HOTSWAP_SCALE_STALLS")  # where the code holding the loop is named (bench/stalls.py)
    # bench/stalls.py: "turns" samples inside the loop's thread and sees long turns whole
    sampling = TurnSampler if os.environ.get("HOTSWAP_SCALE_STALLS_SAMPLER") == "turns" else StallSampler
    sampler = sampling(threading.get_ident()) if stalls_to else None
    if sampler is not None:
        sampler.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    profile = cProfile.Profile() if args.profile else None
    if profile is not None:
        profile.enable()
    print("ready", flush=True)
    await stop.wait()
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.profile)
    if watcher is not None:
        watcher.cancel()
    monitor.cancel()
    if sampler is not None and stalls_to:
        sampler.stop()
        with append_to(Path(stalls_to)) as out:
            freezer = getattr(plane, "freezer", None)  # reconciler.server.LongLivedFreezer, where there is one
            frozen = f", gc freezes {freezer.freezes}, {gc.get_freeze_count()} objects frozen" if freezer else ""
            out.write(f"== replica on port {args.port} (leader={controller.leader}{frozen})\n{sampler.report(25)}\n")
    with append_to(Path(args.lags)) as out:
        out.writelines(f"{at:.3f} {ms:.2f} {waited:.2f}\n" for at, ms, waited in lags)
    await plane.stop()


async def lagging(lags: list[tuple[float, float, float]]) -> None:
    """How late the event loop wakes a task that sleeps LAG_TICK_S: what any callback waits at worst.
    Each tick also notes how much of that the loop's thread spent waiting for a CPU the kernel gave to
    another process (bench/stalls.py's `waited_for_cpu`; 0 where the kernel does not say): the rest
    is what the plane's own process held the loop."""
    waited = waited_for_cpu()
    while True:
        before = time.perf_counter()
        await asyncio.sleep(LAG_TICK_S)
        late = time.perf_counter() - before - LAG_TICK_S
        now = waited_for_cpu()
        preempted = now - waited if now is not None and waited is not None else 0.0
        waited = now
        lags.append((time.time(), max(late, 0.0) * 1000, preempted * 1000))


def lag_figures(lags: list[tuple[float, float, float]], since: float, until: float) -> dict[str, float]:
    """Lateness over the window (max, p99, ticks over STALL_MS), and the same less each tick's wait for
    a CPU (`held_*`): the loop held by the plane's process, not by the machine's other processes."""
    window = [(ms, waited) for at, ms, waited in lags if since <= at <= until]
    if not window:
        return {"max": 0.0, "p99": 0.0, "stalls": 0, "ticks": 0, "held_max": 0.0, "held_p99": 0.0, "held_stalls": 0}
    values = [ms for ms, _ in window]
    held = [max(ms - waited, 0.0) for ms, waited in window]
    return {
        "max": max(values),
        "p99": percentile(values, 0.99),
        "stalls": sum(ms > STALL_MS for ms in values),
        "ticks": len(values),
        "held_max": max(held),
        "held_p99": percentile(held, 0.99),
        "held_stalls": sum(ms > STALL_MS for ms in held),
    }


def append_to(path: Path) -> IO[str]:
    return path.open("a")  # open for the life of the process


def spawn(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, stdout=subprocess.PIPE)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def memory_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


# -- the simulated nodes ----------------------------------------------------------------------------


@dataclass
class SimAgent:
    id: str
    region: str
    token: str
    replica: int = 0  # the control-plane replica it speaks to (an index into Fleet.urls)
    generation: int = 0
    table: list[dict[str, Any]] = field(default_factory=list)
    applied_at: float = 0.0
    beat_now: asyncio.Event = field(default_factory=asyncio.Event)
    last_beat: float = field(default_factory=time.monotonic)
    listed: dict[tuple[str, str], float] = field(default_factory=dict)  # (module, version) -> first given
    reported: dict[tuple[str, str], float] = field(default_factory=dict)  # -> first heartbeat naming it, answered
    weighted: dict[tuple[str, str], float] = field(default_factory=dict)  # -> first given with a weight > 0
    traffic: set[str] = field(default_factory=set)

    def serves(self, module: str, version: str) -> bool:
        return any(e["module"] == module and e["version"] == version and e["weight"] == 100 for e in self.table)


class AgentCalls(Protocol):
    """The node protocol's calls as a `Fleet` makes them, on one client or another (`--agents`).
    A call that fails raises: a status other than the call's success as RuntimeError, a broken
    connection or a timeout as one of AGENT_ERRORS."""

    async def register(self, agent: SimAgent, body: dict[str, Any]) -> None: ...

    async def assignment(self, agent: SimAgent) -> dict[str, Any] | None:
        """The agent's next table (a long-poll after its generation); None when the wait ended without one."""
        ...

    async def heartbeat(self, agent: SimAgent, body: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...


AGENT_ERRORS = (aiohttp.ClientError, WireError, RuntimeError, TimeoutError)


def assignment_target(agent: SimAgent) -> str:
    return f"{NODES_PATH}/{agent.id}/assignment?after={agent.generation}&wait={LONG_POLL_SECONDS}"


class WireCalls:
    """The agents' calls through bench/wire.py (the default): for each agent one kept-alive connection
    for its long-poll and one for its heartbeats (registration goes on the latter)."""

    def __init__(self, urls: list[str]) -> None:
        self.ports = [urlsplit(url).port or 80 for url in urls]
        self.polls: dict[str, Wire] = {}
        self.beats: dict[str, Wire] = {}

    def wire(self, wires: dict[str, Wire], agent: SimAgent) -> Wire:
        wire = wires.get(agent.id)
        if wire is None:
            wire = wires[agent.id] = Wire(self.ports[agent.replica], agent.token, CALL_TIMEOUT_S)
        return wire

    async def register(self, agent: SimAgent, body: dict[str, Any]) -> None:
        answer = await self.wire(self.beats, agent).post_json(NODES_PATH, body)
        if answer.status not in (200, 201):
            raise RuntimeError(f"{agent.id}: registration {answer.status} {answer.text()}")

    async def assignment(self, agent: SimAgent) -> dict[str, Any] | None:
        answer = await self.wire(self.polls, agent).get(assignment_target(agent))
        if answer.status == 204:
            return None
        if answer.status != 200:
            raise RuntimeError(f"{answer.status} {answer.text()}")
        table: dict[str, Any] = answer.json()
        return table

    async def heartbeat(self, agent: SimAgent, body: dict[str, Any]) -> None:
        answer = await self.wire(self.beats, agent).post_json(f"{NODES_PATH}/{agent.id}/heartbeat", body)
        if answer.status != 200:
            raise RuntimeError(f"{answer.status} {answer.text()}")

    async def close(self) -> None:
        for wires in (self.polls, self.beats):
            for wire in wires.values():
                wire.close()
        await asyncio.sleep(0)  # the transports' closing callbacks run


class AiohttpCalls:
    """The agents' calls on aiohttp's client (`--agents aiohttp`): the whole fleet on one session's pool."""

    def __init__(self, urls: list[str], session: aiohttp.ClientSession) -> None:
        self.urls = urls
        self.session = session

    def headers(self, agent: SimAgent) -> dict[str, str]:
        return {"Authorization": f"Bearer {agent.token}"}

    async def register(self, agent: SimAgent, body: dict[str, Any]) -> None:
        url = f"{self.urls[agent.replica]}{NODES_PATH}"
        async with self.session.post(url, json=body, headers=self.headers(agent)) as response:
            if response.status not in (200, 201):
                raise RuntimeError(f"{agent.id}: registration {response.status} {await response.text()}")

    async def assignment(self, agent: SimAgent) -> dict[str, Any] | None:
        url = f"{self.urls[agent.replica]}{NODES_PATH}/{agent.id}/assignment"
        params = {"after": str(agent.generation), "wait": str(LONG_POLL_SECONDS)}
        async with self.session.get(url, params=params, headers=self.headers(agent)) as response:
            if response.status == 204:
                return None
            if response.status != 200:
                raise RuntimeError(f"{response.status} {await response.text()}")
            table: dict[str, Any] = await response.json()
            return table

    async def heartbeat(self, agent: SimAgent, body: dict[str, Any]) -> None:
        url = f"{self.urls[agent.replica]}{NODES_PATH}/{agent.id}/heartbeat"
        async with self.session.post(url, json=body, headers=self.headers(agent)) as response:
            if response.status != 200:
                raise RuntimeError(f"{response.status} {await response.text()}")

    async def close(self) -> None:
        pass  # the session is measure()'s


class Fleet:
    def __init__(self, urls: list[str], agents: list[SimAgent], calls: AgentCalls, heartbeat_seconds: float) -> None:
        self.urls = urls
        self.heartbeat_seconds = heartbeat_seconds
        self.agents = agents
        self.calls = calls
        self.changed = asyncio.Event()
        self.errors: list[str] = []

    async def register(self, agent: SimAgent) -> None:
        body = {"id": agent.id, "region": agent.region, "hostname": agent.id, "url": f"http://127.0.0.1:9/{agent.id}"}
        await self.calls.register(agent, body)

    async def assignments(self, agent: SimAgent) -> None:
        while True:
            try:
                table = await self.calls.assignment(agent)
            except AGENT_ERRORS as exc:
                self.errors.append(f"{agent.id} (replica {agent.replica}) assignment: {exc!r}")
                await asyncio.sleep(1)
                continue
            if table is None:
                continue
            agent.table = table["modules"]
            agent.generation = table["generation"]
            agent.applied_at = time.monotonic()
            for e in agent.table:
                agent.listed.setdefault((e["module"], e["version"]), agent.applied_at)
                if e["weight"] > 0:
                    agent.weighted.setdefault((e["module"], e["version"]), agent.applied_at)
            agent.beat_now.set()
            self.changed.set()

    def heartbeat_body(self, agent: SimAgent) -> dict[str, Any]:
        now = time.monotonic()
        elapsed, agent.last_beat = now - agent.last_beat, now
        metrics = []
        for e in agent.table:
            if e["module"] in agent.traffic and e["weight"] > 0:
                requests = round(REQUESTS_PER_SECOND * elapsed * e["weight"] / 100)
                metrics.append({"module": e["module"], "version": e["version"], "requests": requests, "errors": 0})
        running = [{k: e[k] for k in ("module", "version", "digest", "weight")} for e in agent.table]
        return {"generation": agent.generation, "running": running, "metrics": metrics}

    async def heartbeats(self, agent: SimAgent) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(agent.beat_now.wait(), self.heartbeat_seconds)
            agent.beat_now.clear()
            try:
                body = self.heartbeat_body(agent)
                await self.calls.heartbeat(agent, body)
                answered = time.monotonic()
                for r in body["running"]:
                    agent.reported.setdefault((r["module"], r["version"]), answered)
            except AGENT_ERRORS as exc:
                self.errors.append(f"{agent.id} (replica {agent.replica}) heartbeat: {exc!r}")

    async def until(
        self, condition: Callable[[], bool], what: str, timeout: float = 300.0, done: Callable[[SimAgent], bool] = bool
    ) -> float:
        """Wait until `condition()` holds (checked whenever an agent applies a table); returns when.
        Every PROGRESS_S a line on stderr says how many agents of each replica are `done`."""
        started = time.monotonic()
        deadline, progress = started + timeout, started + PROGRESS_S
        while not condition():
            self.changed.clear()
            now = time.monotonic()
            remaining = deadline - now
            if now >= progress:
                progress = now + PROGRESS_S
                counts = [
                    f"replica {i}: {sum(done(a) for a in self.agents if a.replica == i)}/"
                    f"{sum(a.replica == i for a in self.agents)}"
                    for i in range(len(self.urls))
                ]
                print(
                    f"{now - started:.0f} s waiting for {what}: {', '.join(counts)} done; {len(self.errors)} errors",
                    file=sys.stderr,
                    flush=True,
                )
            if remaining <= 0:
                raise TimeoutError(f"timed out waiting for {what}; agent errors: {self.errors[:5]}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.5))
        return time.monotonic()


def switched(agent: SimAgent, version: str) -> bool:
    return agent.serves(GLOBAL, version)


def everywhere(agents: list[SimAgent], version: str) -> bool:
    return all(switched(a, version) for a in agents)


async def api(session: aiohttp.ClientSession, url: str, token: str) -> Any:
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        if response.status == 404:
            return None
        return await response.json()


async def wait_phase(session: aiohttp.ClientSession, url: str, token: str, ident: str) -> tuple[str, float]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        body = await api(session, f"{url}/api/v1/wasm/deployments/{ident}", token)
        if body is not None and body["phase"] in ("Promoted", "RolledBack", "Paused"):
            return body["phase"], time.monotonic()
        await asyncio.sleep(0.5)  # each answer walks the fleet's view: at 1,000 nodes ~30 ms of the plane's loop
    raise TimeoutError(f"{ident} did not finish")


@dataclass
class Plane:
    """One control-plane replica in its child process, and the files it writes."""

    url: str
    process: subprocess.Popen[bytes]
    passes: Path
    lags: Path

    def memory(self) -> dict[str, int]:
        return memory_kb(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def passes_ms(self) -> list[float]:
        return [float(line.split()[0]) for line in self._pass_lines()]

    def pass_started(self) -> list[float]:
        """When each pass began (epoch seconds): which replica planned when."""
        return [float(line.split()[1]) for line in self._pass_lines()]

    def pass_steps(self) -> list[str]:
        """Each pass's wall time by step (`name=ms,...`; `-` for a pass that stopped before its steps)."""
        return [line.split()[2] if len(line.split()) > 2 else "-" for line in self._pass_lines()]

    def _pass_lines(self) -> list[str]:
        return self.passes.read_text().splitlines() if self.passes.exists() else []

    def lag_samples(self) -> list[tuple[float, float, float]]:
        lines = self.lags.read_text().splitlines() if self.lags.exists() else []
        return [(float(at), float(ms), float(waited)) for at, ms, waited in (line.split() for line in lines)]


async def start_planes(args: argparse.Namespace, work: Path, repo: Repo, key: Path) -> list[Plane]:
    """Spawn `args.replicas` control planes (one on SQLite, or all on `args.database_url`) and wait
    until every one serves HTTP."""
    shared = ["--database-url", args.database_url, "--blob-url", str(work / "blobs")] if args.database_url else []
    planes = []
    for i in range(args.replicas):
        port = free_port()
        profile = args.profile if args.replicas == 1 else f"{args.profile}.{i}"
        child = spawn(
            [
                sys.executable, __file__, "--child-serve", "--repo", str(repo.root), "--data", str(work / f"data-{i}"),
                "--port", str(port), "--heartbeat", str(args.heartbeat_seconds), "--key", str(key),
                "--passes", str(work / f"passes-{i}.txt"), "--lags", str(work / f"lags-{i}.txt"), *shared,
                *(["--profile", profile] if args.profile else []),
            ]
        )  # fmt: skip
        planes.append(Plane(f"http://127.0.0.1:{port}", child, work / f"passes-{i}.txt", work / f"lags-{i}.txt"))
    for plane in planes:
        assert plane.process.stdout is not None
        line = await asyncio.to_thread(plane.process.stdout.readline)
        if b"ready" not in line:
            raise RuntimeError(f"a control plane did not start: {line!r}")
    return planes


async def leads(session: aiohttp.ClientSession, plane: Plane, token: str) -> bool:
    """Whether the replica leads (holds the lease, plans and publishes); SQLite's one plane always does."""
    status = await api(session, f"{plane.url}/api/v1/wasm/status", token)
    return status is not None and status.get("leader") is True


async def leader_of(session: aiohttp.ClientSession, planes: list[Plane], token: str) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for i, plane in enumerate(planes):
            if await leads(session, plane, token):
                return i
        await asyncio.sleep(0.2)
    raise TimeoutError("no replica leads")


async def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    # A canary step lasts two heartbeats: every node of the step reports its traffic within it.
    repo = Repo(work / "repo", 2 * args.heartbeat_seconds)
    key = work / "signing-key.pem"  # one key for every replica: a token any of them minted is good on all
    load_or_create_signing_key(key)
    authority = TokenAuthority.load(AuthOptions(private_key=key), work / "bench")
    out: dict[str, Any] = {"nodes": args.nodes, "placements": args.nodes * (MODULES_PER_REGION + 1)}
    out["machine"] = machine()  # the load average as the run starts
    out["step_s"] = 2 * args.heartbeat_seconds
    out["store"] = "PostgreSQL" if args.database_url else "SQLite"
    out["agents_client"] = client = getattr(args, "agents", "wire")
    admin = authority.mint("bench", ("admin",))
    per_region = args.nodes // REGIONS
    agents = [
        SimAgent(
            f"n{r}-{i}", f"r{r}", authority.mint(f"n{r}-{i}", ("node",)), replica=(r * per_region + i) % args.replicas
        )
        for r in range(REGIONS)
        for i in range(per_region)
    ]
    planes = await start_planes(args, work, repo, key)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
    tasks: list[asyncio.Task[None]] = []
    calls: AgentCalls | None = None
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            leader = await leader_of(session, planes, admin)
            url = planes[leader].url  # the rollouts' phases are read where they are decided
            urls = [p.url for p in planes]
            calls = WireCalls(urls) if client == "wire" else AiohttpCalls(urls, session)
            fleet = Fleet(urls, agents, calls, args.heartbeat_seconds)
            gate = asyncio.Semaphore(100)

            async def register(agent: SimAgent) -> None:
                async with gate:
                    await fleet.register(agent)

            started = time.monotonic()
            await asyncio.gather(*(register(a) for a in agents))
            out["register_s"] = time.monotonic() - started

            def died(task: asyncio.Task[None]) -> None:  # an agent loop must not end quietly
                if not task.cancelled() and task.exception() is not None:
                    fleet.errors.append(f"{task.get_name()} ended: {task.exception()!r}")
                    print(f"agent loop ended: {task.get_name()}: {task.exception()!r}", file=sys.stderr, flush=True)

            for agent in agents:
                tasks.append(asyncio.create_task(fleet.assignments(agent), name=f"{agent.id} assignments"))
                tasks.append(asyncio.create_task(fleet.heartbeats(agent), name=f"{agent.id} heartbeats"))
            for task in tasks:
                task.add_done_callback(died)

            def first(agent: SimAgent) -> bool:
                return len(agent.table) == MODULES_PER_REGION + 1

            done = await fleet.until(lambda: all(first(a) for a in agents), "every first table", done=first)
            out["first_tables_s"] = done - started
            first_passes = [len(p.passes_ms()) for p in planes]  # the fleet's arrival
            await asyncio.sleep(2 * args.heartbeat_seconds)  # steady state: every agent has heartbeated
            steady = [p.memory() for p in planes]

            switches: list[float] = []
            # commit -> the first / the last agent given the new version, the last to report it, the first switched
            phases: list[tuple[float, float, float, float]] = []
            # per replica, commit -> its last agent given the new version, its last heartbeat naming it
            # answered, its last agent given the switch
            by_replica: list[list[tuple[float, float, float]]] = []
            switching = time.time()
            for run in range(args.runs):
                version = f"1.{run + 1}.0"
                repo.set_version(GLOBAL, version, "blue-green", None)
                repo.commit(f"{GLOBAL} {version}")
                committed = time.monotonic()
                reached = await fleet.until(
                    functools.partial(everywhere, agents, version),
                    f"{GLOBAL} {version}",
                    done=functools.partial(switched, version=version),
                )
                phase, _ = await wait_phase(session, url, admin, f"{GLOBAL}-v{version}")
                assert phase == "Promoted", phase
                switches.append(reached - committed)
                given = [a.listed[(GLOBAL, version)] - committed for a in agents]
                reported = max(a.reported.get((GLOBAL, version), reached) for a in agents) - committed
                weighted = min(a.weighted[(GLOBAL, version)] for a in agents) - committed
                phases.append((min(given), max(given), reported, weighted))
                by_replica.append(
                    [
                        (
                            max(a.listed[(GLOBAL, version)] for a in mine) - committed,
                            max(a.reported.get((GLOBAL, version), reached) for a in mine) - committed,
                            max(a.weighted[(GLOBAL, version)] for a in mine) - committed,
                        )
                        for mine in ([a for a in agents if a.replica == i] for i in range(len(planes)))
                    ]
                )
            out["switches_window"] = (switching, time.time())
            out["blue_green_s"] = switches
            out["blue_green_phases_s"] = phases
            out["blue_green_by_replica_s"] = by_replica

            canary_nodes = [a for a in agents if a.region == "r0"]
            for agent in canary_nodes:
                agent.traffic.add(CANARY)
            repo.set_version(CANARY, "1.1.0", "canary", ["r0"])
            repo.commit(f"{CANARY} 1.1.0")
            committed = time.monotonic()
            phase, promoted = await wait_phase(session, url, admin, f"{CANARY}-v1.1.0")
            assert phase == "Promoted", phase
            converged = await fleet.until(lambda: all(a.serves(CANARY, "1.1.0") for a in canary_nodes), "canary")
            out["canary_promoted_s"] = promoted - committed
            out["canary_converged_s"] = converged - committed
            end = [p.memory() for p in planes]
            cpu = [cpu_seconds(p.process.pid) for p in planes]
            out["agents_cpu_s"] = cpu_seconds(os.getpid())
            out["wall_s"] = time.monotonic() - started
            out["load_at_end"] = "/".join(f"{x:.1f}" for x in os.getloadavg())
            leading = [await leads(session, p, admin) for p in planes]  # a handover during the run shows here
            # The passes of the run, read before the planes stop: stopping the leader first hands the
            # lease to another replica, which plans once more before it is stopped too.
            passes = [(p.passes_ms(), p.pass_started(), p.pass_steps()) for p in planes]
            out["agent_errors"] = len(fleet.errors)
            out["agent_error_samples"] = fleet.errors[:5]
    finally:
        pending = set(tasks)
        while pending:  # on Python 3.11 asyncio.wait_for can swallow a cancellation: cancel until done
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1)
        if calls is not None:
            await calls.close()
        for plane in planes:
            plane.stop()
    out["planes"] = []
    for i, plane in enumerate(planes):
        lags = plane.lag_samples()
        out["planes"].append(
            {
                "url": plane.url,
                "leader": leading[i],
                "agents": sum(a.replica == i for a in agents),
                "first_passes": first_passes[i],
                "passes_ms": passes[i][0],
                "pass_started": passes[i][1],
                "pass_steps": passes[i][2],
                "memory_steady_kb": steady[i],
                "memory_end_kb": end[i],
                "cpu_s": cpu[i],
                "lag_all": lag_figures(lags, 0.0, float("inf")),
                "lag_switches": lag_figures(lags, *out["switches_window"]),
            }
        )
    return out


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def targets(out: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Issue 20's targets for the size run, each as (target, figure, met): 1,000 nodes on one control
    plane, or 5,000 agents on two replicas; none for another size."""
    planes = out["planes"]
    switches = out["blue_green_s"]
    if out["nodes"] == 1000 and len(planes) == 1:
        [plane] = planes
        passes = plane["passes_ms"][plane["first_passes"] :]
        pass_p99 = percentile(passes, 0.99) if passes else float("inf")
        median, p99 = statistics.median(switches), percentile(switches, 0.99)
        lag, peak = plane["lag_switches"]["max"], plane["memory_end_kb"]["VmHWM"] / 1024
        held = plane["lag_switches"]["held_max"]
        return [
            ("switch median < 2 s", f"{median:.1f} s", median < 2.0),
            ("switch p99 < 4 s", f"{p99:.1f} s", p99 < 4.0),
            ("pass p99 < 300 ms", f"{pass_p99:.0f} ms", pass_p99 < 300.0),
            (f"loop never late > {STALL_MS:g} ms over the switches", f"max {lag:.0f} ms", lag <= STALL_MS),
            (
                f"loop never held > {STALL_MS:g} ms by its own process (late less waits for a CPU)",
                f"max {held:.0f} ms",
                held <= STALL_MS,
            ),
            ("control plane RSS < 250 MB", f"peak {peak:.0f} MB", peak < 250.0),
        ]
    if out["nodes"] == 5000 and len(planes) == 2:
        slowest = max(switches)
        return [
            ("switch < 10 s", f"{slowest:.1f} s (slowest of {len(switches)})", slowest < 10.0),
            ("0 failed protocol calls", str(out["agent_errors"]), out["agent_errors"] == 0),
        ]
    return []


def report(out: dict[str, Any]) -> None:
    planes = out["planes"]
    arrival = [ms for p in planes for ms in p["passes_ms"][: p["first_passes"]]]
    passes = [ms for p in planes for ms in p["passes_ms"][p["first_passes"] :]]
    print(f"machine: {out['machine']}; at the end {out['load_at_end']}")
    print(f"simulated nodes: {out['nodes']}, module placements: {out['placements']}")
    clients = {"wire": "HTTP/1.1 through bench/wire.py", "aiohttp": "aiohttp's client, one pool"}
    print(f"the agents' client: {out['agents_client']} ({clients.get(out['agents_client'], '?')})")
    if len(planes) > 1:
        print(f"control-plane replicas: {len(planes)} on one {out['store']}, agents split between them")
    print(f"registration of every node: {out['register_s']:.2f} s")
    print(f"until every agent applied its first table: {out['first_tables_s']:.2f} s")
    print(f"reconcile pass while the fleet arrives: {figures(arrival)} ms (the first registers every binary)")
    print(f"reconcile pass after, through the rollouts: {figures(passes)} ms; max {max(passes, default=0):.1f} ms")
    slowest = sorted(
        (
            (ms, steps)
            for p in planes
            for ms, steps in list(zip(p["passes_ms"], p["pass_steps"], strict=False))[p["first_passes"] :]
        ),
        reverse=True,
    )[:3]
    for ms, steps in slowest:
        print(f"  a slowest pass, {ms:.1f} ms by step: {steps.replace(',', ', ')}")
    print(f"blue-green switch, commit -> every agent applied the new table: {figures(out['blue_green_s'])} s")
    first, last, reported, weighted = zip(*out["blue_green_phases_s"], strict=True)
    print(f"  of which commit -> the first agent given the new version (at weight 0): {figures(list(first))} s")
    print(f"  and commit -> the last agent given it: {figures(list(last))} s")
    print(f"  commit -> the last agent's heartbeat naming it answered: {figures(list(reported))} s")
    print(f"  commit -> the first agent given the switch (new version, weight > 0): {figures(list(weighted))} s")
    if len(out["planes"]) > 1:
        for i, plane in enumerate(out["planes"]):
            role = "leader" if plane["leader"] else "follower"
            last = [run[i] for run in out["blue_green_by_replica_s"]]
            given, answered, switched = (figures([phase[k] for phase in last]) for k in range(3))
            print(
                f"  replica {i} ({role}): commit -> its last agent given the new version {given} s, its last "
                f"heartbeat naming it answered {answered} s, its last agent given the switch {switched} s"
            )
    print(f"canary 20/50/100 ({out['step_s']:g} s steps), commit -> Promoted: {out['canary_promoted_s']:.2f} s")
    print(f"canary, commit -> every node of the region on the new version: {out['canary_converged_s']:.2f} s")
    for i, plane in enumerate(planes):
        name = "control plane"
        if len(planes) > 1:
            role = "leader" if plane["leader"] else "follower"
            name = f"replica {i} ({role}, {plane['agents']} agents, {len(plane['passes_ms'])} passes)"
        steady, end = plane["memory_steady_kb"], plane["memory_end_kb"]
        print(
            f"{name} memory: RSS {steady['VmRSS'] / 1024:.0f} MB steady, {end['VmRSS'] / 1024:.0f} MB at the end, "
            f"peak {end['VmHWM'] / 1024:.0f} MB"
        )
        for key, what in (("lag_all", "the whole run"), ("lag_switches", "the blue-green switches")):
            lag = plane[key]
            print(
                f"{name} loop lag over {what}: max {lag['max']:.1f} ms, p99 {lag['p99']:.1f} ms, "
                f"stalls > {STALL_MS:g} ms: {lag['stalls']} of {lag['ticks']} ticks of {LAG_TICK_S * 1000:g} ms; "
                f"less the waits for a CPU: max {lag['held_max']:.1f} ms, p99 {lag['held_p99']:.1f} ms, "
                f"stalls {lag['held_stalls']}"
            )
    cpu = ", ".join(f"{p['cpu_s']:.0f} s" for p in planes)
    print(f"CPU time, whole run ({out['wall_s']:.0f} s from registration to the end): control plane(s) {cpu}; ", end="")
    print(f"the agents' process ({out['agents_client']} client) {out['agents_cpu_s']:.1f} s")
    print(f"agent-side errors (failed calls): {out['agent_errors']}")
    for error in out["agent_error_samples"]:
        print(f"  {error}")
    for target, figure, met in targets(out):
        print(f"issue 20's target, {target}: {figure}, {'met' if met else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3, help="blue-green switches to time")
    parser.add_argument(
        "--heartbeat-seconds", type=float, default=None, help="node heartbeat period (default 5; 2 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="100 nodes, 2 switches, 2 s heartbeats")
    parser.add_argument("--replicas", type=int, default=1, help="control-plane replicas (more than 1: on PostgreSQL)")
    parser.add_argument(
        "--database-url",
        help="PostgreSQL for the replicas (a fresh schema in it); default with --replicas > 1: a private server",
    )
    parser.add_argument(
        "--agents",
        choices=("wire", "aiohttp"),
        default="wire",
        help="the agents' HTTP client: bench/wire.py's keep-alive connections (default), or aiohttp's to compare",
    )
    parser.add_argument("--child-serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repo", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--heartbeat", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--passes", help=argparse.SUPPRESS)
    parser.add_argument("--lags", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--blob-url", help=argparse.SUPPRESS)
    parser.add_argument("--profile", help="write the control plane's cProfile stats (event loop thread) here")
    args = parser.parse_args()
    if args.child_serve:
        from reconciler.server import run_event_loop

        run_event_loop(serve_child(args))  # the loop `hotswap serve` runs on
        return
    if args.quick:
        args.nodes, args.runs = 100, 2
        args.heartbeat_seconds = args.heartbeat_seconds or 2.0
    args.heartbeat_seconds = args.heartbeat_seconds or HEARTBEAT_SECONDS
    if args.profile:
        args.profile = os.path.abspath(args.profile)
    raise_fd_limit()
    work = Path(tempfile.mkdtemp(prefix="hotswap-scale-"))
    try:
        with contextlib.ExitStack() as stack:
            if args.replicas > 1 or args.database_url:
                from bench.ha import fresh_schema  # a private PostgreSQL as the tests start one, when none is given

                args.database_url = stack.enter_context(fresh_schema(args.database_url))
            report(asyncio.run(measure(args, work)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
