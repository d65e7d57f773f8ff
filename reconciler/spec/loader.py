"""The fleet loader: every YAML document under a fleet root to a `DesiredFleet`, or every problem.

Where it sits: the entry point for fleet input. `load_fleet` (the CLI, the Git source) and
`finish` (also `reconciler.spec.incremental`, which parses only changed files) run three steps, one
module each, read top-down:
- `reconciler.spec.documents`: find `*.yaml`/`*.yml` files (hidden folders skipped) -> parse each
  with ruamel.yaml, keeping line numbers -> validate each document against its kind's model;
- `reconciler.spec.assemble`: check what no single document can (duplicate names, references
  between documents, regions, gates, pins and overrides naming unknown versions) and build the
  `DesiredFleet`;
- `reconciler.spec.sources`: the files documents name (paths that leave the root, a `.wat`
  compiled, a binary that must be valid WebAssembly within its limits, a WIT package, a module
  that must implement its interface with the capabilities it is granted).
All problems are collected, none stops the others, so a pull request sees every mistake at once,
each as `path:line: field: message`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from reconciler.spec.assemble import assemble
from reconciler.spec.documents import Collector, Doc, fleet_files, read_file
from reconciler.spec.fleet import DesiredFleet, Problem
from reconciler.spec.limits import InputLimits
from reconciler.spec.sources import BinaryReader, read_binary

__all__ = ["LoadResult", "Problem", "finish", "load_documents", "load_fleet"]

DEFAULT_LIMITS = InputLimits()


@dataclass(frozen=True)
class LoadResult:
    fleet: DesiredFleet | None
    problems: tuple[Problem, ...]
    documents: int = 0
    files: int = 0

    @property
    def ok(self) -> bool:
        return self.fleet is not None and not self.errors

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "warning")


def load_documents(root: Path, out: Collector, limits: InputLimits = DEFAULT_LIMITS) -> tuple[list[Doc], int]:
    """Parse and validate every YAML file; problems go to `out`, documents come back with their nodes."""
    docs: list[Doc] = []
    files = fleet_files(root)
    for file in files:
        rel = file.relative_to(root).as_posix()
        parsed, problems = read_file(rel, file, out, limits) or ((), ())
        out.problems.extend(problems)
        docs.extend(Doc(rel, file, node, model) for node, model in parsed)
    return docs, len(files)


def load_fleet(root: Path, limits: InputLimits = DEFAULT_LIMITS) -> LoadResult:
    """Load and check the fleet under `root`. Never raises for bad input: problems say what is wrong.

    YAML files over `limits.yaml_bytes` are refused unread; the caller that exports a revision
    checks the revision's total first (reconciler.spec.limits)."""
    out = Collector()
    root = root.resolve()
    if not root.is_dir():
        out.add("", 0, "path", f"{root} is not a directory")
        return LoadResult(None, tuple(out.problems))
    docs, files = load_documents(root, out, limits)
    return finish(root, docs, files, out)


def finish(root: Path, docs: list[Doc], files: int, out: Collector, read: BinaryReader | None = None) -> LoadResult:
    """The cross-document checks over parsed documents, and the result (reconciler.spec.incremental uses it too)."""
    fleet = assemble(root, docs, out, read or read_binary)
    problems = tuple(sorted(out.problems, key=lambda p: (p.path, p.line, p.field)))
    if any(p.severity == "error" for p in problems):
        fleet = None
    elif fleet is not None:
        fleet = dataclasses.replace(fleet, warnings=problems)
    return LoadResult(fleet, problems, documents=len(docs), files=files)


def iter_problems(result: LoadResult) -> Iterator[str]:
    yield from (str(p) for p in result.problems)
