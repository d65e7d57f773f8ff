"""`hotswap serve`: the control plane (the container's command).

Follows a fleet repository, keeps the embedded stores under --data-dir (or PostgreSQL and S3), and
serves the API and the node protocol. Settings come from flags, or from HOTSWAP_* environment
variables named after them (HOTSWAP_REPO, HOTSWAP_DATABASE_URL, HOTSWAP_WEBHOOK_SECRET, ...).
`--max-yaml-bytes`, `--max-revision-bytes` and `--max-files` cap what one revision of the fleet
repository may hold (reconciler.spec.limits); sizes take a unit: 1MiB, 512KiB, 64M.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.commands.token import add_auth_arguments, auth_options

if TYPE_CHECKING:  # the rest is imported when the verb runs: `--help` loads no server
    from reconciler.server import ControlPlane, ServeOptions


def env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"HOTSWAP_{name}", default)


_UNITS = {"": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2}
_UNITS |= {"g": 1000**3, "gb": 1000**3, "gib": 1024**3}


def heartbeat_period(text: str) -> float:
    from edge.nodeapi import HEARTBEAT_SECONDS  # here: `hotswap serve --help` loads no pydantic

    low, high = HEARTBEAT_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not low <= seconds <= high:  # nodes refuse a registration answer outside these
        raise argparse.ArgumentTypeError(f"must be {low} to {high:g} seconds, not {text}")
    return seconds


def size(text: str) -> int:
    """`1048576`, `1MiB`, `512KiB`, `64M` -> bytes (an argparse type)."""
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS or int(match.group(1)) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (bytes, or with a unit: 512KiB, 1MiB, 64M)")
    return int(match.group(1)) * _UNITS[unit]


# The caps on one revision of the fleet repository; each also reads HOTSWAP_<FLAG> (HOTSWAP_MAX_FILES).
_INPUT_LIMITS = (
    ("--max-yaml-bytes", "largest fleet YAML file of a revision (default 1MiB)"),
    ("--max-revision-bytes", "largest total of the files under the fleet root in one revision (default 64MiB)"),
    ("--max-files", "most files under the fleet root in one revision (default 10000)"),
)


def add_store_arguments(parser: argparse.ArgumentParser, data_dir: str) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(env("DATA_DIR", data_dir) or data_dir),
        help=f"embedded state and blobs (default {data_dir})",
    )
    parser.add_argument("--database-url", default=env("DATABASE_URL"), help="postgresql://... instead of SQLite")
    parser.add_argument(
        "--blob-url",
        default=env("BLOB_URL"),
        help="s3://bucket?endpoint=host:port&secure=false instead of the local blob folder",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repo",
        default=env("REPO"),
        required=env("REPO") is None,
        help="the fleet repository: a local path or any URL git can fetch",
    )
    parser.add_argument("--branch", default=env("BRANCH", "main"), help="branch to follow (default main)")
    parser.add_argument("--path", default=env("PATH_IN_REPO", ""), help="fleet root inside the repository")
    parser.add_argument("--trust", type=Path, default=env("TRUST"), help="trust root (principals, roles, keys)")
    parser.add_argument(
        "--git-signing-key",
        type=Path,
        default=env("GIT_SIGNING_KEY"),
        help="SSH private key that signs API commits (default <data-dir>/auth/git-signing-key, made on first use)",
    )
    parser.add_argument("--host", default=env("HOST", "127.0.0.1"), help="address to listen on")
    parser.add_argument("--port", type=int, default=int(env("PORT", "8080") or 8080), help="port (default 8080)")
    parser.add_argument(
        "--interval",
        type=float,
        default=float(env("INTERVAL", "30") or 30),
        help="seconds between fetches (default 30)",
    )
    parser.add_argument(
        "--heartbeat-seconds",
        type=heartbeat_period,
        default=5.0,
        help="node heartbeat period (default 5; 0.05 to 3600)",
    )

    for flag, text in _INPUT_LIMITS:
        given = env(flag.removeprefix("--").replace("-", "_").upper())
        # None: reconciler.spec.limits.InputLimits' default
        parser.add_argument(flag, type=size, default=None if given is None else size(given), help=text)
    parser.add_argument(
        "--webhook-secret",
        default=env("WEBHOOK_SECRET"),
        help="shared secret of POST /api/v1/wasm/webhook (HMAC-SHA256)",
    )
    parser.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--log-format",
        choices=("json", "text"),
        default=None,
        help="json (one object a line) or text; default HOTSWAP_LOG_FORMAT, else text on a terminal, json otherwise",
    )
    parser.add_argument("--tls-cert", type=Path, default=env("TLS_CERT"), help="PEM certificate chain: serve HTTPS")
    parser.add_argument("--tls-key", type=Path, default=env("TLS_KEY"), help="PEM private key of --tls-cert")
    parser.add_argument(
        "--rate-limit",
        action="append",
        default=[],
        metavar="CLASS=N",
        help="requests per minute per user: registration (10), deployment (20), execution (1000), other (off)",
    )
    add_store_arguments(parser, ".hotswap")
    add_auth_arguments(parser)


def options(args: argparse.Namespace) -> ServeOptions:
    from reconciler.api.security import RateLimits, parse_rate_limit
    from reconciler.server import ServeOptions
    from reconciler.spec.limits import InputLimits

    defaults = InputLimits()
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    limits = RateLimits().with_overrides(dict(parse_rate_limit(text) for text in args.rate_limit))
    return ServeOptions(
        repo=args.repo,
        branch=args.branch,
        path=args.path,
        trust=args.trust,
        git_signing_key=args.git_signing_key,
        data_dir=args.data_dir,
        database_url=args.database_url,
        blob_url=args.blob_url,
        host=args.host,
        port=args.port,
        interval=args.interval,
        heartbeat_seconds=args.heartbeat_seconds,
        webhook_secret=args.webhook_secret,
        auth=auth_options(args),
        rate_limits=limits,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        input_limits=InputLimits(
            yaml_bytes=args.max_yaml_bytes or defaults.yaml_bytes,
            revision_bytes=args.max_revision_bytes or defaults.revision_bytes,
            files=args.max_files or defaults.files,
        ),
    )


def writer_banner(plane: ControlPlane) -> str:
    """How the control plane signs API commits, and the trust file line that makes them verify."""
    from reconciler.gitsource.acting import trust_line  # `hotswap up --help` stays light

    key = plane.writer.public_key
    holder = plane.source.trust.holder_of(key)
    if holder is not None and holder.is_control_plane:
        acts = ", ".join(sorted(holder.acts_for))
        return f"API commits are signed as {holder.name}, acting for the caller's roles among [{acts}]"
    where = plane.options.trust or "your trust file (--trust)"
    return (
        f"API approvals and signed API writes need the control plane in {where}; add under principals:\n"
        f"{trust_line(key)}\n"
        "and give each caller's token the principal's name as subject (hotswap token --subject NAME)"
    )


async def serve(plane: ControlPlane) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await plane.start()
    print(f"hotswap serve: listening on {plane.url}, following {plane.options.repo}", flush=True)
    print(writer_banner(plane), flush=True)
    try:
        await stop.wait()
    finally:
        await plane.stop()


def run(args: argparse.Namespace) -> int:
    from reconciler.apply.telemetry import setup_logging
    from reconciler.server import ControlPlane, run_event_loop

    setup_logging(args.log_level, args.log_format)
    try:
        run_event_loop(serve(ControlPlane(options(args))))
    except (ValueError, OSError) as exc:
        print(f"hotswap serve: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1  # bad options; a port, file or service that fails
    return 0
