"""`hotswap up`: the control plane on the embedded stores plus local edge nodes, all in one.

The first command of README.md. It follows the current branch of a local repository (default: the
one around the working directory; `--path` names the fleet root inside it), starts the edge nodes
the fleet needs (in each region as many as the largest `replicas` placed there; `--nodes N` spreads
N over the regions instead), prints where everything listens and what to try, and stops
everything on Ctrl-C. Every port is checked before anything starts: a port given with `--port` or
`--node-port` that is taken is an error naming it and its holder; by default the control plane
takes 8080 (another free port when 8080 is taken, said so) and the nodes take free ports. It exits
non-zero, stopping what it started, when a node exits or does not join: the banner only ever lists
nodes that joined. The nodes serve filesystem grants only under `<data-dir>/grants`
(`hotswap edge --allow-dir`): a module's `capabilities.filesystem` host must lie there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from reconciler.api.authnames import EDGE_AUDIENCE
from reconciler.commands import ports
from reconciler.commands.serve import add_store_arguments, writer_banner

if TYPE_CHECKING:  # imported when the verb runs: `--help` loads no server
    from reconciler.server import ControlPlane
    from reconciler.spec.fleet import DesiredFleet

NODE_START_TIMEOUT = 30.0
HOST = "127.0.0.1"
DEFAULT_PORT = 8080
LOG_TAIL_LINES = 5
NODE_TOKEN_SECONDS = 30 * 24 * 3600.0
DEV_RATE_FACTOR = 100  # development: the spec's production rate limits times 100


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", type=Path, default=Path("."), help="local fleet repository (default .)")
    parser.add_argument("--path", default="", help="fleet root inside the repository, e.g. fleet-example")
    parser.add_argument("--branch", default=None, help="branch to follow (default: the checked-out one)")
    parser.add_argument(
        "--nodes",
        type=int,
        default=None,
        help="edge nodes to start, spread over the regions (default: in each region as many as the largest "
        "`replicas` placed there; 0: the control plane alone)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"control plane port (default {DEFAULT_PORT}, or a free one when it is taken); given and taken: an error",
    )
    parser.add_argument(
        "--node-port",
        type=int,
        default=None,
        help="first edge node port, the next nodes on the ports after it (default: free ports); taken: an error",
    )
    parser.add_argument(
        "--node-workers",
        type=int,
        default=1,
        help="server processes per edge node (`hotswap edge --workers`; default 1)",
    )
    parser.add_argument("--trust", type=Path, default=None, help="trust root (principals, roles, keys)")
    parser.add_argument("--heartbeat-seconds", type=float, default=2.0, help="node heartbeat period (default 2)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between fetches (default 10)")
    parser.add_argument("--log-level", default="WARNING", help="control plane log level (default WARNING)")
    parser.add_argument(
        "--log-format",
        choices=("json", "text"),
        default=None,
        help="control plane logs: json or text (default HOTSWAP_LOG_FORMAT, else text on a terminal)",
    )
    add_store_arguments(parser, ".hotswap")


def git_top_and_branch(repo: Path) -> tuple[Path, str]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ValueError(f"{repo}: not a Git repository with a commit ({done.stderr.strip()})")
        return done.stdout.strip()

    return Path(git("rev-parse", "--show-toplevel")), git("rev-parse", "--abbrev-ref", "HEAD")


def load(root: Path) -> DesiredFleet:
    from reconciler.spec.loader import load_fleet

    result = load_fleet(root)
    if result.fleet is None:
        problems = "\n".join(str(p.under(str(root))) for p in result.errors[:20])
        raise ValueError(f"the fleet in {root} is not valid:\n{problems}")
    return result.fleet


def regions_of(root: Path) -> list[str]:
    return load(root).spec.region_names


def node_regions(fleet: DesiredFleet, count: int | None) -> list[str]:
    """The region of each node to start: `count` spread over the regions in the Fleet's order, or
    (None) in each region as many nodes as the largest `replicas` placed there (1 for `all`)."""
    regions = fleet.spec.region_names
    if count is not None:
        return [regions[i % len(regions)] for i in range(count)]
    need = dict.fromkeys(regions, 1)
    for module in fleet.modules.values():
        placement = module.spec.placement
        replicas = placement.replicas if isinstance(placement.replicas, int) else 1
        for region in placement.regions or regions:
            if region in need:
                need[region] = max(need[region], replicas)
    return [region for i in range(max(need.values())) for region in regions if i < need[region]]


class NodeProcess(NamedTuple):
    node_id: str
    region: str
    port: int
    process: subprocess.Popen[bytes]


def start_node(
    control: str, node_id: str, region: str, port: int, data_dir: Path, token: str | None = None, workers: int = 1
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HOTSWAP_NODE_TOKEN": token} if token else None
    with log_of(data_dir, node_id).open("ab") as log:
        return subprocess.Popen(
        [
            sys.executable, "-m", "hotswap", "edge", "--control", control, "--region", region, "--id", node_id,
            "--port", str(port), "--cache-dir", str(data_dir / "nodes" / node_id / "cache"),
            "--workers", str(workers), "--allow-dir", str(grants_dir(data_dir)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )  # fmt: skip


def grants_dir(data_dir: Path) -> Path:
    """The one root under which `up`'s nodes serve filesystem grants (created by `up`)."""
    return data_dir / "grants"


def joined(plane: ControlPlane) -> set[str]:
    return {v.id for v in plane.hub.view() if v.status == "Healthy"}


async def wait_for_nodes(plane: ControlPlane, nodes: list[NodeProcess], timeout: float) -> list[NodeProcess]:
    """The nodes that did not join: [] once every node is Healthy; else (a node process exited, or
    `timeout` passed) the ones missing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        missing = [n for n in nodes if n.node_id not in joined(plane)]
        if not missing or loop.time() >= deadline or any(n.process.poll() is not None for n in missing):
            return missing
        await asyncio.sleep(0.1)


def write_secret(path: Path, text: str) -> None:
    """`text` into `path`, readable by this user only from the first byte (never chmod after writing)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file left by an earlier run keeps its mode otherwise
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")


def log_of(data_dir: Path, node_id: str) -> Path:
    return data_dir / "nodes" / f"{node_id}.log"


def why_not_joined(node: NodeProcess, data_dir: Path) -> str:
    """One node that did not join: its exit code or that it still runs, and the end of its log."""
    code = node.process.poll()
    state = f"exited with {code}" if code is not None else "did not join in time"
    try:
        tail = log_of(data_dir, node.node_id).read_text(errors="replace").strip().splitlines()[-LOG_TAIL_LINES:]
    except OSError:
        tail = []
    lines = [f"  edge node {node.node_id} ({node.region}, port {node.port}) {state}; {log_of(data_dir, node.node_id)}:"]
    return "\n".join(lines + [f"    {line}" for line in tail])


def _program() -> str:
    """How to call hotswap again: by name when it is on PATH, else the path it was run by (.venv/bin/...)."""
    if shutil.which("hotswap"):
        return "hotswap"
    return sys.argv[0] if sys.argv and sys.argv[0].endswith("hotswap") else f"{sys.executable} -m hotswap"


def example_call(fleet: DesiredFleet | None) -> tuple[str, str, str]:
    """(module, execute body, its file) to show: greeter in the example fleet, else a module of the
    fleet with an export whose arguments can be made up (numbers, an empty object, empty stdin)."""
    if fleet is not None and "greeter" in fleet.modules:
        body = '{"module": "greeter", "function": "greet", "args": {"name": "edge"}}'
        return "greeter", body, "modules/greeter.yaml"
    for name in sorted(fleet.modules if fleet is not None else ()):
        assert fleet is not None
        binary = fleet.binaries.get((name, fleet.modules[name].spec.version))
        where = fleet.locations.get(("Module", name))
        for export in binary.info.exports if binary is not None else ():
            if export.sig is None or export.name == "health" or export.convention in (None, "component"):
                continue
            call: dict[str, Any] = {"module": name, "function": export.name}
            if export.convention == "numeric":
                call["args"] = [1] * len(export.sig.params)
            elif export.convention == "json":
                call["args"] = {}
            else:
                call["stdin"] = ""
            return name, json.dumps(call), where.path if where is not None else f"modules/{name}.yaml"
    return "", "", ""


LOGIN_LINK_SECONDS = 900  # the banner's one-time console sign-in link


def banner(
    plane: ControlPlane,
    nodes: list[tuple[str, str, int]],
    fleet_dir: str,
    data_dir: Path,
    fleet: DesiredFleet | None = None,
) -> str:
    """What listens where and what to try; `nodes` are the (id, region, port) of nodes that joined."""
    module, body, path = example_call(fleet)
    lines = [
        "",
        f"hotswap is up: control plane {plane.url}, following {fleet_dir or '.'} on "
        f"{plane.options.branch} of {plane.options.repo}",
    ]
    for node_id, region, port in nodes:
        lines.append(f"  edge node {node_id:<18} {region:<12} http://127.0.0.1:{port}")
    login = plane.login_link(subject="up", roles=("admin",), ttl=LOGIN_LINK_SECONDS)
    lines.append(f"  Console:  {plane.url}/ui/  (sign in: {login}, one use, {LOGIN_LINK_SECONDS // 60} min)")
    lines += [
        f"  state, blobs and logs under {data_dir}/; filesystem grants only under {grants_dir(data_dir)}/",
        "",
        "Try:",
        f"  export HOTSWAP_TOKEN=$(cat {data_dir}/admin.token)   # an admin token (hotswap token --role ROLE)",
        f'  curl -s -H "Authorization: Bearer $HOTSWAP_TOKEN" {plane.url}/api/v1/wasm/nodes',
        *(
            [
                f'  curl -s -H "Authorization: Bearer $(cat {data_dir}/edge.token)" -X POST '
                f"http://127.0.0.1:{nodes[0][2]}/api/v1/wasm/execute -d '{body}'"
            ]
            if nodes and body
            else []
        ),
        f"  HOTSWAP_CONTROL={plane.url} {_program()} status --watch",
        *(
            [f"  edit {fleet_dir or '.'}/{path} (version, source), commit, and watch {module} roll out"]
            if module
            else []
        ),
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


async def up(args: argparse.Namespace) -> int:
    from reconciler.api.security import RateLimits
    from reconciler.server import ControlPlane, ServeOptions

    top, branch = git_top_and_branch(args.repo)
    fleet_root = top / args.path if args.path else top
    fleet = load(fleet_root)
    regions = node_regions(fleet, args.nodes)
    # Every port before anything starts: a taken port is an error now, not a node that never joins.
    port, note = ports.pick(HOST, args.port, DEFAULT_PORT, set(), "control plane", "--port")
    if note:
        print(f"hotswap up: {note}", flush=True)
    taken = {port}
    node_ports = []
    for i in range(len(regions)):
        asked = None if args.node_port is None else args.node_port + i
        node_port, _ = ports.pick(HOST, asked, None, taken, "edge node", "--node-port")
        taken.add(node_port)
        node_ports.append(node_port)
    data_dir: Path = args.data_dir.resolve()
    (data_dir / "nodes").mkdir(parents=True, exist_ok=True)
    grants_dir(data_dir).mkdir(exist_ok=True)
    plane = ControlPlane(
        ServeOptions(
            repo=str(top),
            branch=args.branch or branch,
            path=args.path,
            trust=args.trust,
            data_dir=data_dir,
            database_url=args.database_url,
            blob_url=args.blob_url,
            host=HOST,
            port=port,
            interval=args.interval,
            heartbeat_seconds=args.heartbeat_seconds,
            rate_limits=RateLimits().scaled(DEV_RATE_FACTOR),
        )
    )
    await plane.start()
    admin = plane.mint("admin", "admin", ttl_seconds=NODE_TOKEN_SECONDS)
    write_secret(data_dir / "admin.token", admin)
    # Nodes refuse API tokens: calls straight to a node carry one for nodes (hotswap token --audience edge).
    edge = plane.mint("developer", "developer", ttl_seconds=NODE_TOKEN_SECONDS, audience=EDGE_AUDIENCE)
    write_secret(data_dir / "edge.token", edge)
    nodes: list[NodeProcess] = []
    try:
        counts: Counter[str] = Counter()
        for region, node_port in zip(regions, node_ports, strict=True):
            counts[region] += 1
            node_id = f"edge-{region}-{counts[region]:02d}"
            token = plane.mint(node_id, "node", ttl_seconds=NODE_TOKEN_SECONDS)
            process = start_node(plane.url, node_id, region, node_port, data_dir, token, args.node_workers)
            nodes.append(NodeProcess(node_id, region, node_port, process))
        missing = await wait_for_nodes(plane, nodes, NODE_START_TIMEOUT)
        if missing:
            print(
                f"hotswap up: {len(missing)} of {len(nodes)} edge nodes did not join, so the fleet cannot come up "
                "whole; stopping",
                file=sys.stderr,
            )
            for node in missing:
                print(why_not_joined(node, data_dir), file=sys.stderr)
            return 1
        (data_dir / "control.url").write_text(plane.url + "\n")
        joined = [(n.node_id, n.region, n.port) for n in nodes]
        print(banner(plane, joined, args.path, data_dir, fleet), flush=True)
        print(f"Admin token (also in {data_dir}/admin.token):\n{admin}", flush=True)
        print(writer_banner(plane), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print("\nhotswap up: stopping", flush=True)
    finally:
        (data_dir / "control.url").unlink(missing_ok=True)
        for node in nodes:
            if node.process.poll() is None:
                os.killpg(node.process.pid, signal.SIGTERM)
        for node in nodes:
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(node.process.pid, signal.SIGKILL)
        await plane.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    from reconciler.apply.telemetry import setup_logging
    from reconciler.server import run_event_loop

    setup_logging(args.log_level, args.log_format)
    try:
        return run_event_loop(up(args))
    except (ValueError, OSError, ports.PortTakenError) as exc:
        print(f"hotswap up: {exc}", file=sys.stderr)
        return 1
