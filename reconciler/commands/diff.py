"""`hotswap diff [FLEET_DIR]`: what the next reconcile pass would change if FLEET_DIR were applied.

Like `flux diff`: it loads the fleet from the working tree, asks the control plane what it observes
(`GET /api/v1/wasm/snapshot`), runs the same planner locally and prints the rollouts it would start or
move and every node table it would change. Exit 0 when nothing would change, 1 when something would,
2 on an error. Without a reachable control plane it compares with the fleet at Git HEAD instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.commands.client import ClientError, add_control_argument, get_json

if TYPE_CHECKING:  # imported when the verb runs, so `--help` loads none of it
    from reconciler.spec.fleet import DesiredFleet


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("fleet_dir", nargs="?", default=".", help="the fleet root (default: .)")
    add_control_argument(parser)


def plan_lines(desired: DesiredFleet, data: dict[str, Any]) -> list[str]:
    """The lines of what the next pass would change (reconciler.planner.plandiff, shared with the console)."""
    from reconciler.planner.plandiff import plan_diff
    from reconciler.planner.snapshots import snapshot_from_json

    return list(plan_diff(snapshot_from_json(data, desired)).lines)


def run(args: argparse.Namespace) -> int:
    from reconciler.spec.loader import load_fleet

    fleet_dir = Path(args.fleet_dir)
    result = load_fleet(fleet_dir)
    if not result.ok or result.fleet is None:
        shown = "" if str(args.fleet_dir) in (".", "./") else str(args.fleet_dir)
        for problem in result.errors:
            print(problem.under(shown), file=sys.stderr)
        print("hotswap diff: the fleet is not valid (see `hotswap validate`)", file=sys.stderr)
        return 2
    try:
        data = get_json(args.control, "/api/v1/wasm/snapshot")
    except ClientError as exc:
        print(f"hotswap diff: {exc}; comparing with Git HEAD instead", file=sys.stderr)
        from reconciler.commands.validate import compare_with_base

        try:
            lines, _ = compare_with_base(result, fleet_dir, "HEAD", "")
        except ValueError as err:
            print(f"hotswap diff: {err}", file=sys.stderr)
            return 2
        print("\n".join(lines))
        return 0 if lines == ["no change against HEAD"] else 1
    lines = plan_lines(result.fleet, data)
    if not lines:
        print(f"no change: the control plane already runs what {args.fleet_dir} asks for")
        return 0
    print(f"against revision {str(data.get('revision') or '-')[:12]} as the control plane observes it now:")
    print("\n".join(lines))
    return 1
