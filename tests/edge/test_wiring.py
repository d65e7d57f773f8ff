"""No wiring by assignment: nothing in `edge/` sets an attribute of an object other than `self`.

Issue 23: each process has a composition root (`edge.run.run_node`, `edge.worker.run_worker`) that
builds its objects in order and hands each its dependencies through the constructor; a value that
changes at runtime (a key learned at registration, a version's in-flight count) changes through a
method of the object that owns it. This scans the package's syntax for the alternative (`a.b = ...`,
`a.b += ...`, `a.b: T = ...`, `setattr(a, ...)` where `a` is not `self` or `cls`), so a new one is
seen in review, not found later by a reader who wonders who set it.

What must stay is listed below with its reason: APIs that are configured by attribute (ctypes
structures and prototypes, `wasmtime.Config`), and records a function builds and returns.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

EDGE = Path(__file__).resolve().parents[2] / "edge"
OWN = frozenset({"self", "cls"})


@dataclass(frozen=True)
class Allowed:
    path: str  # relative to edge/
    bases: frozenset[str]  # the objects written to, as the source spells them
    reason: str


ALLOWED = (
    Allowed(
        "_ffi.py",
        frozenset({"setter", "call", "increment"}),
        "ctypes function prototypes declare argtypes/restype by attribute",
    ),
    Allowed(
        "server.py",
        frozenset({"server", "request"}),
        "the execute shortcut: aiohttp's server takes its handler, and a request its match info, by attribute",
    ),
    Allowed(
        "witvalues.py",
        frozenset({"out", "of", "of.result", "of.variant", "entry"}),
        "wasmtime's C component values (ctypes unions and records) are filled field by field",
    ),
    Allowed("component.py", frozenset({"record"}), "wasmtime.component.Record is filled field by field"),
    Allowed(
        "component.py",
        frozenset({"inst.state", "state"}),
        "the deadline and sandbox refusals of the call in progress, read by wasmtime's callbacks",
    ),
    Allowed("numeric.py", frozenset({"buf[i]", "self._trap"}), "a call's ctypes argument buffer and trap pointer"),
    Allowed("instance.py", frozenset({"config"}), "wasmtime.WasiConfig is configured by attribute"),
    Allowed(
        "runtime.py", frozenset({"config", "self.linker"}), "wasmtime.Config and Linker are configured by attribute"
    ),
    Allowed("loaded.py", frozenset({"CALL"}), "a threading.local: the deadline of the call on this thread"),
    Allowed("runtime.py", frozenset({"CALL"}), "a threading.local: poll_oneoff marks the call on this thread expired"),
    Allowed("wasm.py", frozenset({"config"}), "wasmtime.Config is configured by attribute"),
    Allowed(
        "wasmbinary.py",
        frozenset({"out", "r"}),
        "the binary parser fills the description it returns and moves its cursor",
    ),
)


@dataclass(frozen=True)
class Write:
    path: str
    line: int
    base: str
    code: str

    def __str__(self) -> str:
        return f"edge/{self.path}:{self.line}: {self.code}"


def writes(tree: ast.AST, path: str) -> list[Write]:
    """Every assignment to an attribute of something other than `self`/`cls`, and every such setattr."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets, line = node.targets, node.lineno
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets, line = [node.target], node.lineno
        else:
            targets, line = [], 0
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr"):
            if node.args and not (isinstance(node.args[0], ast.Name) and node.args[0].id in OWN):
                found.append(Write(path, node.lineno, ast.unparse(node.args[0]), ast.unparse(node)))
            continue
        for target in targets:
            for sub in ast.walk(target):  # a tuple target, `a.b, c = ...`, too
                own = isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id in OWN
                if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store) and not own:
                    found.append(Write(path, line, ast.unparse(sub.value), ast.unparse(node)))
    return found


def all_writes(root: Path = EDGE) -> list[Write]:
    return [
        write
        for file in sorted(root.rglob("*.py"))
        for write in writes(ast.parse(file.read_text(), str(file)), file.relative_to(root).as_posix())
    ]


def allowed(write: Write, listed: tuple[Allowed, ...] = ALLOWED) -> bool:
    return any(write.path == a.path and write.base in a.bases for a in listed)


def test_no_attribute_of_another_object_is_assigned_in_edge() -> None:
    wiring = [str(w) for w in all_writes() if not allowed(w)]
    assert wiring == [], "pass it to the constructor, or change it through a method of its owner:\n" + "\n".join(wiring)


def test_every_allowed_write_is_still_there() -> None:
    """An entry nothing matches any more is removed, so the list stays the short list of what must stay."""
    seen = {(w.path, w.base) for w in all_writes()}
    stale = [a for a in ALLOWED if not all((a.path, base) in seen for base in a.bases)]
    assert stale == []


def test_the_scan_sees_wiring() -> None:
    source = """
class Node:
    def __init__(self, supervisor):
        self.whole = supervisor
        self.part.x = 1
        cls.y = 2

def wire(node, supervisor, args):
    node.forward_table = supervisor.forward_table
    node.count += 1
    args.cache: str = "dir"
    node.a, b = 1, 2
    setattr(node, "auth", None)
    setattr(self, "ok", None)
"""
    found = sorted((w.line, w.base) for w in writes(ast.parse(source), "example.py"))
    assert found == [(5, "self.part"), (9, "node"), (10, "node"), (11, "args"), (12, "node"), (13, "node")]
