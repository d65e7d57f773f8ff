"""`hotswap validate [FLEET_DIR]`: the check a fleet repository runs on every pull request.

Prints every problem as `path:line: field: message` and exits 1, or a one-line summary and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from reconciler.spec.loader import LoadResult, load_fleet


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("fleet_dir", nargs="?", default=".", help="the fleet root (default: .)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print problems only")


def summary(result: LoadResult) -> str:
    fleet = result.fleet
    assert fleet is not None
    versions = sum(len(m.spec.all_versions()) for m in fleet.modules.values())

    def count(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    return (
        f"fleet {fleet.name!r} ({fleet.spec.environment}): {count(len(fleet.modules), 'module')} "
        f"({count(versions, 'version')}), {count(len(fleet.strategies), 'strategy').replace('ys', 'ies')}, "
        f"{count(len(fleet.interfaces), 'interface')}, {count(len(fleet.spec.regions), 'region')} "
        f"in {count(result.files, 'file')}"
    )


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    shown = str(args.fleet_dir)
    result = load_fleet(Path(args.fleet_dir))
    for problem in result.problems:
        print(problem.under("" if shown in (".", "./") else shown))
    elapsed = time.perf_counter() - started
    if not result.ok:
        errors = len(result.errors)
        files = len({p.path for p in result.errors})
        print(
            f"invalid: {errors} problem{'s' if errors != 1 else ''} in {files} file{'s' if files != 1 else ''}",
            file=sys.stderr,
        )
        return 1
    if not args.quiet:
        print(f"valid: {summary(result)} ({elapsed * 1000:.0f} ms)")
    return 0
