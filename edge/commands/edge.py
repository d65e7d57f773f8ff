"""`hotswap edge`: run an edge node.

`--standalone DIR` serves the modules of a folder without a control plane (see
`edge.standalone`); SIGHUP rescans the folder. Such a node listens on 127.0.0.1 and accepts plain
calls; it refuses another address unless `--key` gives a public key to check JWTs against.
`--control URL --region R [--id ID]` runs a node managed by a control plane (`edge.managed`).
Either kind runs in this process or, with `--workers N`, in N processes under this one
(`edge.supervisor`): this module picks the source and the target, `edge.run.run_node` runs them.
Either kind grants modules host directories only under its `--allow-dir` roots (none by default;
a standalone node's own `--dir` grants are allowed as given), never its cache dir, module folder or
key (`edge.grants`).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when the verb runs, so `--help` loads no runtime or server
    from edge.grants import GrantRoots
    from edge.protocol import Capabilities
    from edge.run import Source, Target

DEFAULT_PORT = 8081


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hotswap" / "modules"


def configure(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--standalone", metavar="DIR", type=Path, help="serve NAME[@X.Y.Z].wasm|.wat (or NAME-X.Y.Z) files"
    )
    mode.add_argument("--control", metavar="URL", help="control plane to take assignments from")
    parser.add_argument("--region", help="region this node joins (with --control)")
    parser.add_argument("--id", help="node id (with --control)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any)")
    parser.add_argument("--key", type=Path, help="PEM public key: execute calls need a JWT it verifies")
    parser.add_argument(
        "--issuer",
        default="hotswap",
        help="standalone with --key, or with --control-plane-key: the `iss` tokens and tables must carry "
        "(default hotswap)",
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="precompiled module cache")
    parser.add_argument(
        "--allow-dir",
        action="append",
        default=[],
        type=Path,
        metavar="ROOT",
        help="host directory under which modules' filesystem grants are served (repeatable; default none: "
        "every grant is refused)",
    )
    parser.add_argument(
        "--advertise",
        metavar="URL",
        default=os.environ.get("HOTSWAP_ADVERTISE"),
        help="with --control: the URL others reach this node's execute API at (HOTSWAP_ADVERTISE; "
        "default http://HOST:PORT)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("HOTSWAP_NODE_TOKEN"),
        help="with --control: the node token (role node) the control plane minted (HOTSWAP_NODE_TOKEN)",
    )
    parser.add_argument(
        "--control-plane-key",
        type=Path,
        default=os.environ.get("HOTSWAP_CONTROL_PLANE_KEY"),
        metavar="PEM",
        help="with --control: the control plane's public key; the table the node keeps on disk and serves after "
        "a restart must be signed with it (HOTSWAP_CONTROL_PLANE_KEY; default: the key of the last registration)",
    )
    parser.add_argument("--threads", type=int, default=4, help="worker threads for long calls (default 4)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="server processes on the one port (SO_REUSEPORT), under a supervisor that keeps their tables "
        "and sums their metrics (default 1: one process)",
    )
    parser.add_argument("--memory-mb", type=int, default=128, help="standalone: memory limit per module")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="standalone: timeout per call")
    parser.add_argument("--cpu-percent", type=int, default=100, help="standalone: CPU share per module")
    parser.add_argument(
        "--env", action="append", default=[], metavar="K=V", help="standalone: environment variable for every module"
    )
    parser.add_argument(
        "--dir",
        action="append",
        default=[],
        metavar="HOST:GUEST[:ro|rw]",
        help="standalone: directory every module may open (read-only unless rw)",
    )
    parser.add_argument("--no-admin", action="store_true", help="standalone: no loopback admin endpoint")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--log-format",
        choices=("json", "text"),
        default=None,
        help="json (one object a line) or text; default HOTSWAP_LOG_FORMAT, else text on a terminal, json otherwise",
    )
    parser.add_argument(
        "--trace-ratio",
        type=float,
        default=None,
        help="with an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT): share of execute calls without a "
        "traceparent that are traced (default OTEL_TRACES_SAMPLER_ARG, else 0.01)",
    )


def run(args: argparse.Namespace) -> int:
    from edge.managed import default_node_id
    from edge.protocol import Limits
    from edge.telemetry import setup_logging

    node_id = args.id or (default_node_id(args.region) if args.region else "standalone")
    setup_logging(args.log_level, args.log_format, edgeNodeId=node_id)
    if args.workers < 1:
        print(f"hotswap edge: --workers {args.workers}: at least 1", file=sys.stderr)
        return 2
    # the flags as the modes read them: the cache dir filled in (a new namespace, not the parser's)
    args = argparse.Namespace(**{**vars(args), "cache_dir": args.cache_dir or default_cache_dir()})
    if args.control is not None:
        return _managed(args)
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback and args.key is None:
        print(
            f"hotswap edge: refusing to listen on {args.host} without --key: a standalone node accepts "
            "plain calls, so it only listens on 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    key = None
    if args.key is not None:
        try:
            key = args.key.read_text()
        except OSError as exc:
            print(f"hotswap edge: --key: {exc}", file=sys.stderr)
            return 2
    try:
        limits = Limits(memory_mb=args.memory_mb, timeout_seconds=args.timeout_s, cpu_percent=args.cpu_percent)
        capabilities = standalone_capabilities(args.env, args.dir)
        own = [(args.cache_dir, "cache dir"), (args.standalone, "module folder"), (args.key, "key file (--key)")]
        grants = standalone_grants(node_grants(args.allow_dir, own), capabilities)
    except ValueError as exc:
        print(f"hotswap edge: {exc}", file=sys.stderr)
        return 2
    if not args.standalone.is_dir():
        print(f"hotswap edge: --standalone {args.standalone}: not a directory", file=sys.stderr)
        return 2
    from edge.standalone import DirectorySource, Folder

    source = Folder(DirectorySource(args.standalone, limits, capabilities))
    return _run_node(source, _target(args, "standalone", grants, key=key, managed=False))


def _run_node(source: Source, target: Target) -> int:
    import uvloop

    from edge.run import run_node

    try:
        return uvloop.run(run_node(source, target))
    except OSError as exc:
        print(f"hotswap edge: {exc}", file=sys.stderr)
        return 1


def standalone_capabilities(env: list[str], dirs: list[str]) -> Capabilities:
    """`--env K=V` and `--dir HOST:GUEST[:ro|rw]` as the capabilities every module of the folder gets."""
    from edge.protocol import Capabilities, Mount

    variables = {}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--env {item!r}: expected K=V")
        variables[key] = value
    grants = []
    for spec in dirs:
        parts = spec.split(":")
        mode = parts.pop() if len(parts) == 3 else "ro"
        if len(parts) != 2 or not all(parts) or mode not in ("ro", "rw"):
            raise ValueError(f"--dir {spec!r}: expected HOST:GUEST[:ro|rw]")
        grants.append(Mount(host=str(Path(parts[0]).resolve()), guest=parts[1], mode=mode))
    return Capabilities(env=variables, filesystem=tuple(grants))


def node_grants(allow: list[Path], own: list[tuple[Path | None, str]]) -> GrantRoots:
    """The `--allow-dir` roots (each must be a directory) and the node's own paths, never granted."""
    from edge.grants import GrantRoots

    for root in allow:
        if not root.is_dir():
            raise ValueError(f"--allow-dir {root}: not a directory")
    return GrantRoots.of(allow, [(path, what) for path, what in own if path is not None])


def standalone_grants(grants: GrantRoots, capabilities: Capabilities) -> GrantRoots:
    """`grants` that also allow the operator's own `--dir` grants exactly as given (each still
    checked: never `/`, never the node's own paths). A table pushed to the admin endpoint gets no
    directory under them, and none of them writable when the operator's is read-only."""
    from edge.errors import LoadError

    grants = grants.with_operator((g.host, g.mode == "rw") for g in capabilities.filesystem)
    for grant in capabilities.filesystem:
        try:
            grants.check(grant.host, grant.mode == "rw")
        except LoadError as exc:
            raise ValueError(f"--dir {grant.host}:{grant.guest}: {exc.message}") from None
    return grants


def _target(args: argparse.Namespace, node_id: str, grants: GrantRoots, *, key: str | None, managed: bool) -> Target:
    """Where the node's tables run: this process, or `--workers N` processes under it. `key`: a
    standalone node's `--key` (a managed node trusts the control plane's key once it registers)."""
    from edge.auth import Authenticator
    from edge.run import OneProcess, Workers
    from edge.supervisor import PoolOptions

    admin = not managed and not args.no_admin  # a managed node takes tables from its control plane only
    if args.workers > 1:
        options = PoolOptions(
            count=args.workers,
            host=args.host,
            port=args.port,
            cache_dir=args.cache_dir,
            threads=args.threads,
            admin=admin,
            node_id=node_id,
            grants=grants,
            public_key=key,
            issuer=args.issuer,
            log_format=args.log_format,
            trace_ratio=args.trace_ratio,
        )
        return Workers(options)
    return OneProcess(
        host=args.host,
        port=args.port,
        threads=args.threads,
        admin=admin,
        node_id=node_id,
        auth=Authenticator(key, issuer=args.issuer) if key is not None else None,
        cache_dir=args.cache_dir,
        grants=grants,
        trace_ratio=args.trace_ratio,
        export_metrics=managed,
    )


def _managed(args: argparse.Namespace) -> int:
    from edge.managed import ControlPlane, ManagedOptions, default_node_id

    if not args.region:
        print("hotswap edge: --control needs --region", file=sys.stderr)
        return 2
    try:
        grants = node_grants(args.allow_dir, [(args.cache_dir, "cache dir"), (args.control_plane_key, "key file")])
    except ValueError as exc:
        print(f"hotswap edge: {exc}", file=sys.stderr)
        return 2
    pinned = None
    if args.control_plane_key is not None:
        from edge.tablecache import TrustedKey

        try:
            pinned = TrustedKey(Path(args.control_plane_key).read_text(), args.issuer, pinned=True)
        except OSError as exc:
            print(f"hotswap edge: --control-plane-key: {exc}", file=sys.stderr)
            return 2
    options = ManagedOptions(
        control=args.control,
        region=args.region,
        node_id=args.id or default_node_id(args.region),
        host=args.host,
        cache_dir=args.cache_dir,
        token=args.token,
        advertise=args.advertise,
        control_plane_key=pinned,
    )
    return _run_node(ControlPlane(options), _target(args, options.node_id, grants, key=None, managed=True))
