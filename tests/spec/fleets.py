"""Small fleets written to temporary folders, for loader and command tests."""

from __future__ import annotations

from pathlib import Path

FLEET = """\
apiVersion: hotswap.dev/v1
kind: Fleet
metadata:
  name: test
spec:
  regions:
    - name: us-east
    - name: eu-central
"""

STRATEGY = """\
apiVersion: hotswap.dev/v1
kind: RolloutStrategy
metadata:
  name: canary
spec:
  type: Canary
  canary: {steps: [50, 100], stepSeconds: 1}
"""

MODULE = """\
apiVersion: hotswap.dev/v1
kind: Module
metadata:
  name: adder
spec:
  version: 1.0.0
  source: {path: ../wasm/adder.wat}
  rollout: canary
"""

ADDER_WAT = """\
(module
  (func (export "add") (param i32 i32) (result i32)
    (i32.add (local.get 0) (local.get 1)))
  (func (export "health") (result i32) (i32.const 1)))
"""


def write_fleet(root: Path, files: dict[str, str | bytes | None] | None = None) -> Path:
    """A valid fleet under `root`, with `files` added, replaced, or (value None) removed."""
    tree: dict[str, str | bytes | None] = {
        "fleet.yaml": FLEET,
        "strategies/canary.yaml": STRATEGY,
        "modules/adder.yaml": MODULE,
        "wasm/adder.wat": ADDER_WAT,
    }
    tree.update(files or {})
    for rel, content in tree.items():
        path = root / rel
        if content is None:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root
