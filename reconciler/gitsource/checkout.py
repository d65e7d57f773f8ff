"""The fleet root of one commit, kept on disk and moved from commit to commit by what changed.

Where it sits: under the Git source (reconciler.gitsource.source), in place of exporting the whole
tree for every revision. `Checkout.load(sha)`:

    git ls-tree -r (paths, modes, blob ids; the sizes of blobs not seen before from one
    `git cat-file --batch-check`) -> the size caps (`TooLargeError`, nothing read) -> the blobs
    new or changed since the last load, in one `git cat-file --batch` -> every path and symlink
    checked -> remove what the tree no longer has, write what is new -> no symlink resolving
    outside the root (`ExportError` naming it) -> the incremental loader
    (reconciler.spec.incremental), which parses only YAML files whose blob ids it has not parsed

The rules are those of `GitRepo.export` (tarfile's "data" filter): only files, folders and
symlinks; no path and no symlink reaching outside the root, none absolute. What is on disk is known
only after a move that completed; when one fails half-way the folder is wiped and written whole at
the next load. One lock: the source's sync and `fleet_at` of an older commit may both use it.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path

from reconciler.gitsource.errors import ExportError, TooLargeError
from reconciler.gitsource.gitrepo import GitRepo, TreeEntry
from reconciler.spec.fleet import Problem
from reconciler.spec.incremental import IncrementalLoader
from reconciler.spec.limits import InputLimits, size_problems
from reconciler.spec.loader import LoadResult

__all__ = ["Checkout"]


def _same(a: TreeEntry | None, b: TreeEntry | None) -> bool:
    return a is not None and b is not None and (a.mode, a.kind, a.oid) == (b.mode, b.kind, b.oid)


def _refused(rel: str, why: str) -> Problem:
    return Problem(rel, 0, "file", f"cannot be exported: {why}")


def _remove(target: Path) -> None:
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)


class Checkout:
    """The tree of one commit under `path`, on disk at `directory / "fleet"`, and its parsed fleet."""

    def __init__(self, repo: GitRepo, path: str, directory: Path, limits: InputLimits) -> None:
        self.repo = repo
        self.path = path
        self.limits = limits
        directory.mkdir(parents=True, exist_ok=True)
        self.root = directory.resolve() / "fleet"
        self.loader = IncrementalLoader(limits)
        self.written = 0  # files written (not the ones left as they were), for tests and the bench
        self._on_disk: dict[str, TreeEntry] | None = None  # None: unknown, wipe before the next move
        self._sizes: dict[str, int] = {}  # blob id -> bytes, so that only new blobs are asked about
        self._lock = threading.Lock()

    def load(self, sha: str) -> LoadResult:
        """The fleet at commit `sha` (`path` must exist there). `TooLargeError` before anything is
        read, `ExportError` for a tree that cannot be written out safely."""
        with self._lock:
            entries = {e.path: e for e in self.repo.tree_entries(sha, self.path, self._sizes)}
            too_large = size_problems([(e.path, e.size) for e in entries.values()], self.limits)
            if too_large:
                raise TooLargeError(too_large)
            self._move(entries)
            escaping = [
                _refused(rel, f"{rel!r} would link to {os.path.realpath(self.root / rel)}, outside the fleet root")
                for rel, e in entries.items()
                if e.is_symlink and not Path(os.path.realpath(self.root / rel)).is_relative_to(self.root)
            ]
            if escaping:
                raise ExportError(escaping)
            files = {rel: None if e.is_symlink else e.oid for rel, e in entries.items() if e.kind == "blob"}
            return self.loader.load(self.root, files)

    def _move(self, entries: Mapping[str, TreeEntry]) -> None:
        before = self._on_disk
        if before is None:
            if self.root.exists() or self.root.is_symlink():
                _remove(self.root)
            self.root.mkdir()
            before = {}
        new = [e for rel, e in entries.items() if not _same(before.get(rel), e)]
        contents = self.repo.blobs([e.oid for e in new if e.kind == "blob"])
        problems = [p for e in new if (p := self._unsafe(e, contents)) is not None]
        if problems:
            raise ExportError(problems)  # nothing changed on disk yet
        self._on_disk = None
        gone = [rel for rel, e in before.items() if not _same(entries.get(rel), e)]
        for rel in sorted(gone, key=lambda r: -r.count("/")):  # deepest first
            target = self.root / rel
            _remove(target)
            for parent in target.parents:  # folders left empty go too, as they would not be exported
                if parent == self.root or any(parent.iterdir()):
                    break
                parent.rmdir()
        for e in new:
            self._write(e, contents)
        self._on_disk = dict(entries)
        if len(self._sizes) > 4 * len(entries) + 1024:  # forget the sizes of blobs long gone
            self._sizes = {e.oid: e.size for e in entries.values() if e.kind == "blob"}

    @staticmethod
    def _unsafe(entry: TreeEntry, contents: Mapping[str, bytes]) -> Problem | None:
        rel = entry.path
        if rel.startswith("/") or any(part in ("", ".", "..") for part in rel.split("/")):
            return _refused(rel, f"{rel!r} is not a path inside the fleet root")
        if entry.kind not in ("blob", "commit"):
            return _refused(rel, f"{rel!r} is a {entry.kind}, not a file, folder or symlink")
        if entry.is_symlink and os.path.isabs(os.fsdecode(contents[entry.oid])):
            return _refused(rel, f"{rel!r} is a link to an absolute path")
        return None

    def _write(self, entry: TreeEntry, contents: Mapping[str, bytes]) -> None:
        target = self.root / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.path.realpath(target.parent) != str(target.parent):  # a symlink on the way out of the root
            raise ExportError([_refused(entry.path, f"{entry.path!r} is under a symlink")])
        if target.exists() or target.is_symlink():
            _remove(target)
        if entry.kind == "commit":  # a submodule: an empty folder, as `git archive` writes it
            target.mkdir()
        elif entry.is_symlink:
            os.symlink(os.fsdecode(contents[entry.oid]), target)
        else:
            mode = 0o755 if entry.mode == "100755" else 0o644
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            with os.fdopen(fd, "wb") as out:
                out.write(contents[entry.oid])
        self.written += 1
