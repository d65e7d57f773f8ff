"""The fleet loader for a root whose files are known by content id: parse only the ids not seen before.

Where it sits: between the Git source's checkout (reconciler.gitsource.checkout), which keeps the
fleet root of the current commit on disk and knows each file's Git blob id, and the loader
(reconciler.spec.loader). A new commit usually changes one file of many; parsing and validating a
YAML file is what costs (ruamel's round-trip parser, about 2 ms a file), so:

    files (path -> blob id) -> for each fleet YAML file: the parsed, validated documents of
    (path, blob id) from the cache, or read and parse it now -> the loader's cross-document checks
    over all documents (`finish`), with binaries compiled once per (path, blob id)

The result is the loader's own: the same documents in the same order, the same problems with file
and line, the same fleet. Files without a known id (symlinks: what they name may change while they
do not) are read every time, as the loader reads them. Nothing is cached for a file that could not be
read, so its problem is said again by the next load.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

from reconciler.spec.documents import CACHE_ENTRIES, Collector, Doc, Parsed, read_file
from reconciler.spec.fleet import Binary
from reconciler.spec.limits import InputLimits, is_fleet_yaml
from reconciler.spec.loader import LoadResult, finish
from reconciler.spec.sources import read_binary

__all__ = ["IncrementalLoader"]

_Key = tuple[str, str]  # (path relative to the root, blob id)


def _bounded(cache: OrderedDict[_Key, Parsed] | OrderedDict[_Key, Binary | str], floor: int) -> None:
    while len(cache) > max(CACHE_ENTRIES, 2 * floor):
        cache.popitem(last=False)


class IncrementalLoader:
    """`load_fleet` for a root described by its files' content ids; keeps what it parsed by id.

    Not thread-safe: the checkout that owns one calls it under its lock."""

    def __init__(self, limits: InputLimits) -> None:
        self.limits = limits
        self._documents: OrderedDict[_Key, Parsed] = OrderedDict()
        self._binaries: OrderedDict[_Key, Binary | str] = OrderedDict()
        self.parsed = 0  # files read and parsed (not taken from the cache), for tests and the bench
        self._yaml: dict[str, bool] = {}  # what is_fleet_yaml said of a path, and each path's Path:
        self._paths: dict[tuple[Path, str], Path] = {}  # a revision's paths are mostly the last one's

    def _is_yaml(self, rel: str) -> bool:
        found = self._yaml.get(rel)
        if found is None:
            if len(self._yaml) > 2 * CACHE_ENTRIES:
                self._yaml.clear()
            found = self._yaml[rel] = is_fleet_yaml(rel)
        return found

    def _path(self, root: Path, rel: str) -> Path:
        found = self._paths.get((root, rel))
        if found is None:
            if len(self._paths) > 2 * CACHE_ENTRIES:
                self._paths.clear()
            found = self._paths[(root, rel)] = root / rel
        return found

    def load(self, root: Path, files: Mapping[str, str | None]) -> LoadResult:
        """The fleet under `root` (resolved, a directory) whose files are `files`: path -> blob id
        (None for a symlink). Every path the loader would read must be listed."""
        out = Collector()
        docs: list[Doc] = []
        candidates = sorted((rel for rel in files if self._is_yaml(rel)), key=lambda rel: rel.split("/"))
        count = 0
        for rel in candidates:
            file = self._path(root, rel)
            blob = files[rel]
            if blob is None and not file.is_file():  # a symlink to a folder or to nothing: not a file
                continue
            count += 1
            parsed = self._documents.get((rel, blob)) if blob is not None else None
            if parsed is None:
                self.parsed += 1
                parsed = read_file(rel, file, out, self.limits)
                if parsed is None:
                    continue
                if blob is not None:
                    self._documents[(rel, blob)] = parsed
            elif blob is not None:
                self._documents.move_to_end((rel, blob))
            out.problems.extend(parsed[1])
            docs.extend(Doc(rel, file, node, model) for node, model in parsed[0])
        _bounded(self._documents, len(files))

        def read_by_blob(root: Path, target: Path) -> Binary | str:
            rel = target.relative_to(root).as_posix()
            blob = files.get(rel)
            if blob is None:
                return read_binary(root, target)
            found = self._binaries.get((rel, blob))
            if found is None:
                found = read_binary(root, target)
                if not (isinstance(found, str) and found.startswith(f"{rel} cannot be read")):  # maybe transient
                    self._binaries[(rel, blob)] = found
                    _bounded(self._binaries, len(files))
            return found

        return finish(root, docs, count, out, read_by_blob)
