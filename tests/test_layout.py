"""The folder layout and the import graph say the same as docs/architecture.md (issue 23).

`.importlinter`'s layers contract orders the control plane's parts; these tests keep it whole: every
part of `reconciler` is a layer of it (a new package cannot sit outside), no loose modules beside
the packages but the composition root and the exception tree, and what the control plane takes
from the node's package is an allow-list, each entry with its reason.
"""

from __future__ import annotations

import configparser
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]

# What the control plane may import from `edge`, and why: the wire contract and what both sides share.
EDGE_ALLOWED = {
    "edge.protocol": "the node protocol's types: the side that defines it owns them",
    "edge.nodeapi": "the node's requests (register, heartbeat) as the control plane parses them",
    "edge.auth": "role claims, read the same way by both sides",
    "edge.metrics": "metric families declared once, rendered to Prometheus and OTLP",
    "edge.telemetry": "the JSON log format and the trace id, the same in both processes",
    "edge.wasminfo": "a binary's description (imports, exports, memory) for admission at upload",
    "edge.wasm": "the parsing under edge.wasminfo",
    "edge.tablebinding": "the table binding's Merkle tree: the control plane builds it, the node folds a path",
    "edge.onepiece": "answers written in one piece: the node's execute route and the node protocol's answers",
}
LOOSE_ALLOWED = {"__init__.py", "server.py", "errors.py"}  # the composition root and the exception tree


def layers() -> list[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    text = config["importlinter:contract:layers"]["layers"]
    return [name.strip() for line in text.split("\n") for name in line.split("|") if name.strip()]


def test_every_part_of_the_control_plane_is_a_layer() -> None:
    parts = {
        f"reconciler.{p.stem if p.is_file() else p.name}"
        for p in (ROOT / "reconciler").iterdir()
        if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.name != "__init__.py")
    }
    missing = parts - {"reconciler.server", "reconciler.errors"} - set(layers())
    assert not missing, f"not in .importlinter's layers contract: {sorted(missing)}"
    assert {"reconciler.server", "reconciler.errors"} <= set(layers())


def test_no_loose_modules_beside_the_packages() -> None:
    loose = {p.name for p in (ROOT / "reconciler").glob("*.py")} - LOOSE_ALLOWED
    assert not loose, f"modules beside reconciler's packages (put each in the part it belongs to): {sorted(loose)}"


def test_the_control_plane_takes_only_the_allowed_edge_modules() -> None:
    graph = grimp.build_graph("reconciler", "edge")
    taken = {
        imported
        for module in graph.modules
        if module.startswith("reconciler")
        for imported in graph.find_modules_directly_imported_by(module)
        if imported.split(".")[0] == "edge"
    }
    extra = taken - set(EDGE_ALLOWED)
    assert not extra, f"reconciler imports {sorted(extra)} from edge; add each to EDGE_ALLOWED with a reason"
