"""`hotswap init [DIR]`: start a fleet repository of your own.

Writes a minimal valid fleet into DIR (default: .): a Fleet with one region, one module with its
WAT source, one strategy written the way README's "Rollout strategies" shows (every optional field
left out), and a CI workflow (`.github/workflows/hotswap.yaml`) that runs `hotswap validate --base
origin/main` on every pull request. DIR becomes a Git repository when it is not inside one. Nothing
is overwritten: when a file it would write exists, it writes none and says which.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

FLEET = """\
# The fleet: where nodes may join (regions, in rollout order) and who must approve.
apiVersion: hotswap.dev/v1
kind: Fleet
metadata: {{name: {name}}}
spec:
  environment: dev
  regions:
    - {{name: local}}
"""

MODULE = """\
# A module: its version, where its binary is, and how a new version rolls out.
# Change `version` and `source` (e.g. to a wasm/adder-1.1.0.wat), commit, and watch it roll out.
apiVersion: hotswap.dev/v1
kind: Module
metadata: {name: adder}
spec:
  version: 1.0.0
  source: {path: ../wasm/adder-1.0.0.wat}
  healthCheck: {function: health}
  rollout: blue-green
"""

STRATEGY = """\
# strategies/blue-green.yaml: the new version is loaded next to the old one at 0 %, then takes all traffic
apiVersion: hotswap.dev/v1
kind: RolloutStrategy
metadata: {name: blue-green}
spec:
  type: BlueGreen
  blueGreen: {previewSeconds: 0, keepPreviousSeconds: 0}   # defaults: 30 s preview, old one kept 300 s
"""

WAT = """\
;; adder 1.0.0: the numeric calling convention (i32/i64/f32/f64 in and out; args a JSON array).
;; hotswap exec wasm/adder-1.0.0.wat add 20 22   ->   42
(module
  (func (export "add") (param i32 i32) (result i32)
    (i32.add (local.get 0) (local.get 1)))
  (func (export "health") (result i32) (i32.const 1)))
"""

WORKFLOW = """\
# Every pull request: is the fleet valid, and what would it change compared with main?
name: hotswap
on:
  pull_request:
  push:
    branches: [main]
jobs:
  validate:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with: {fetch-depth: 0}          # --base needs origin/main's history
      - uses: actions/setup-python@v5
        with: {python-version: "3.11"}
      - run: pip install hotswap        # or: pip install git+https://<where your hotswap comes from>
      - run: hotswap validate --base origin/main
"""


def files(name: str) -> dict[str, str]:
    """Path under DIR -> content, for a fleet named `name`."""
    return {
        "fleet.yaml": FLEET.format(name=name),
        "modules/adder.yaml": MODULE,
        "strategies/blue-green.yaml": STRATEGY,
        "wasm/adder-1.0.0.wat": WAT,
        ".github/workflows/hotswap.yaml": WORKFLOW,
        ".gitignore": "# hotswap up keeps its state, tokens and keys here: never commit them\n.hotswap/\n",
    }


def fleet_name(folder: Path) -> str:
    """The folder's name as a fleet name (lower case, letters, digits and dashes), or `fleet`."""
    name = re.sub(r"[^a-z0-9-]+", "-", folder.resolve().name.lower()).strip("-")
    return name[:63].strip("-") or "fleet"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", nargs="?", type=Path, default=Path("."), help="where to write the fleet (default: .)")
    parser.add_argument("--name", default=None, help="the Fleet's name (default: the folder's name)")


def _inside_git(folder: Path) -> bool:
    done = subprocess.run(
        ["git", "rev-parse", "--is-inside-work-tree"], cwd=folder, capture_output=True, text=True, check=False
    )
    return done.returncode == 0 and done.stdout.strip() == "true"


def run(args: argparse.Namespace) -> int:
    folder: Path = args.dir
    content = files(args.name or fleet_name(folder))
    present = [rel for rel in content if (folder / rel).exists()]
    if present:
        print(f"hotswap init: {folder} already has {', '.join(present)}; nothing written", file=sys.stderr)
        return 1
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for rel, text in content.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(text)
        made_repo = not _inside_git(folder)
        if made_repo:
            subprocess.run(["git", "init", "-q", "-b", "main"], cwd=folder, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"hotswap init: {exc}", file=sys.stderr)
        return 1
    for rel in content:
        print(f"wrote {folder / rel}")
    if made_repo:
        print(f"made {folder} a Git repository (branch main)")
    print(
        "\nNext:\n"
        f"  cd {folder} && hotswap validate\n"
        '  git add -A && git commit -m "A fleet"\n'
        "  hotswap up                      # the control plane and a local node, following this repository"
    )
    return 0
