"""`hotswap up`: the control plane on the embedded stores plus local edge nodes, all in one.

The first command of README.md. It follows the current branch of a local repository (default: the
one around the working directory; `--path` names the fleet root inside it), starts `--nodes N` edge
node processes spread over the fleet's regions, prints where everything listens and what to try,
and stops everything on Ctrl-C. The nodes serve filesystem grants only under `<data-dir>/grants`
(`hotswap edge --allow-dir`): a module's `capabilities.filesystem` host must lie there.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from reconciler.api.security import RateLimits
from reconciler.auth import EDGE_AUDIENCE
from reconciler.commands.serve import add_store_arguments
from reconciler.server import ControlPlane, ServeOptions
from reconciler.spec.loader import load_fleet
from reconciler.telemetry import setup_logging

NODE_START_TIMEOUT = 30.0
NODE_TOKEN_SECONDS = 30 * 24 * 3600.0
DEV_RATE_FACTOR = 100  # development: the spec's production rate limits times 100


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", type=Path, default=Path("."), help="local fleet repository (default .)")
    parser.add_argument("--path", default="", help="fleet root inside the repository, e.g. fleet-example")
    parser.add_argument("--branch", default=None, help="branch to follow (default: the checked-out one)")
    parser.add_argument("--nodes", type=int, default=3, help="edge nodes to start (default 3; 0: none)")
    parser.add_argument("--port", type=int, default=8080, help="control plane port (default 8080)")
    parser.add_argument("--node-port", type=int, default=9001, help="first edge node port (default 9001)")
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


def regions_of(root: Path) -> list[str]:
    result = load_fleet(root)
    if result.fleet is None:
        problems = "\n".join(str(p.under(str(root))) for p in result.errors[:20])
        raise ValueError(f"the fleet in {root} is not valid:\n{problems}")
    return result.fleet.spec.region_names


def start_node(
    control: str, node_id: str, region: str, port: int, data_dir: Path, token: str | None = None, workers: int = 1
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HOTSWAP_NODE_TOKEN": token} if token else None
    with (data_dir / "nodes" / f"{node_id}.log").open("ab") as log:
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


async def wait_for_nodes(plane: ControlPlane, count: int, timeout: float) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        healthy = sum(1 for v in plane.hub.view() if v.status == "Healthy")
        if healthy >= count:
            return healthy
        await asyncio.sleep(0.1)
    return sum(1 for v in plane.hub.view() if v.status == "Healthy")


def _program() -> str:
    """How to call hotswap again: by name when it is on PATH, else the path it was run by (.venv/bin/...)."""
    if shutil.which("hotswap"):
        return "hotswap"
    return sys.argv[0] if sys.argv and sys.argv[0].endswith("hotswap") else f"{sys.executable} -m hotswap"


def banner(plane: ControlPlane, nodes: list[tuple[str, str, int]], fleet_dir: str, data_dir: Path) -> str:
    lines = [
        "",
        f"hotswap is up: control plane {plane.url}, following {fleet_dir or '.'} on "
        f"{plane.options.branch} of {plane.options.repo}",
    ]
    for node_id, region, port in nodes:
        lines.append(f"  edge node {node_id:<18} {region:<12} http://127.0.0.1:{port}")
    lines += [
        f"  state, blobs and logs under {data_dir}/; filesystem grants only under {grants_dir(data_dir)}/",
        "",
        "Try:",
        f"  export HOTSWAP_TOKEN=$(cat {data_dir}/admin.token)   # an admin token (hotswap token --role ROLE)",
        f'  curl -s -H "Authorization: Bearer $HOTSWAP_TOKEN" {plane.url}/api/v1/wasm/nodes',
        f'  curl -s -H "Authorization: Bearer $(cat {data_dir}/edge.token)" -X POST '
        f"http://127.0.0.1:{nodes[0][2] if nodes else 9001}/api/v1/wasm/execute "
        '-d \'{"module": "greeter", "function": "greet", "args": {"name": "edge"}}\'',
        f"  HOTSWAP_CONTROL={plane.url} {_program()} status --watch",
        f"  edit {fleet_dir or '.'}/modules/greeter.yaml (version, source), commit, and watch the canary",
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


async def up(args: argparse.Namespace) -> int:
    top, branch = git_top_and_branch(args.repo)
    fleet_root = top / args.path if args.path else top
    regions = regions_of(fleet_root)
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
            port=args.port,
            interval=args.interval,
            heartbeat_seconds=args.heartbeat_seconds,
            rate_limits=RateLimits().scaled(DEV_RATE_FACTOR),
        )
    )
    await plane.start()
    admin = plane.mint("admin", "admin", ttl_seconds=NODE_TOKEN_SECONDS)
    (data_dir / "admin.token").write_text(admin + "\n")
    (data_dir / "admin.token").chmod(0o600)
    # Nodes refuse API tokens: calls straight to a node carry one for nodes (hotswap token --audience edge).
    edge = plane.mint("developer", "developer", ttl_seconds=NODE_TOKEN_SECONDS, audience=EDGE_AUDIENCE)
    (data_dir / "edge.token").write_text(edge + "\n")
    (data_dir / "edge.token").chmod(0o600)
    processes: list[subprocess.Popen[bytes]] = []
    nodes = []
    try:
        for i in range(args.nodes):
            region = regions[i % len(regions)]
            node_id = f"edge-{region}-{i // len(regions) + 1:02d}"
            port = args.node_port + i
            token = plane.mint(node_id, "node", ttl_seconds=NODE_TOKEN_SECONDS)
            processes.append(start_node(plane.url, node_id, region, port, data_dir, token, args.node_workers))
            nodes.append((node_id, region, port))
        healthy = await wait_for_nodes(plane, args.nodes, NODE_START_TIMEOUT)
        if healthy < args.nodes:
            print(
                f"hotswap up: only {healthy} of {args.nodes} nodes joined; see {data_dir}/nodes/*.log", file=sys.stderr
            )
        print(banner(plane, nodes, args.path, data_dir), flush=True)
        print(f"Admin token (also in {data_dir}/admin.token):\n{admin}", flush=True)
        print(f"API commits are signed with: {plane.writer.public_key}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print("\nhotswap up: stopping", flush=True)
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        await plane.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format)
    try:
        return asyncio.run(up(args))
    except (ValueError, OSError) as exc:
        print(f"hotswap up: {exc}", file=sys.stderr)
        return 1
