"""Which host directories a node may grant modules: only under the roots its operator allows.

Where it sits: a module's `capabilities.filesystem` comes from whoever wrote the table (a fleet
commit through the control plane, or a standalone node's admin endpoint); the node's operator
bounds it with `hotswap edge --allow-dir ROOT` (repeatable; none by default). `Runtime` checks every
granted directory with `GrantRoots.check` when it admits a binary (`Runtime._admit`), for modules
and components alike, so a grant outside the roots fails the load like any other load failure.

    served      a host directory that, with its symlinks resolved, is an allowed root or lies
                under one (roots are resolved too); on a standalone node also exactly one of the
                operator's own `--dir` grants, in its mode or read-only (not a directory under it:
                a table pushed to the admin endpoint gets no more than the folder's modules have)
    refused     anything else; and always, even under a root: `/`, and any directory that is,
                lies inside or contains one of the node's own paths (its cache dir, its module
                folder, its key file, its workers' sockets)

The check answers with the resolved path, which is what the sandbox then opens, so a symlink
changed after the check does not move the grant. `hotswap exec` (a local user's own command) runs
without bounds: its `Runtime` has no `GrantRoots`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edge.errors import LoadError

FIELD = "capabilities.filesystem"


def resolve(path: str | os.PathLike[str]) -> str:
    """The absolute path with every symlink resolved (as far as the path exists)."""
    return os.path.realpath(path)


def _within(path: str, root: str) -> bool:
    """Whether `path` is `root` or lies under it (both resolved)."""
    return os.path.commonpath([path, root]) == root


@dataclass(frozen=True)
class GrantRoots:
    """The roots a node may grant below, and the node's own paths it never grants (all resolved)."""

    roots: tuple[str, ...] = ()
    protected: tuple[tuple[str, str], ...] = ()  # (resolved path, what it is to the node)
    operator: tuple[tuple[str, bool], ...] = ()  # a standalone node's `--dir` grants: (resolved host, writable)

    @classmethod
    def of(
        cls, roots: Iterable[str | os.PathLike[str]], protected: Iterable[tuple[str | os.PathLike[str], str]]
    ) -> GrantRoots:
        resolved = tuple(dict.fromkeys(resolve(r) for r in roots))
        return cls(resolved, tuple((resolve(p), what) for p, what in protected))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GrantRoots:
        """What `dataclasses.asdict` of one made, after a trip through JSON (a worker's config)."""
        return cls(
            tuple(str(r) for r in data.get("roots", ())),
            tuple((str(p), str(w)) for p, w in data.get("protected", ())),
            tuple((str(h), bool(w)) for h, w in data.get("operator", ())),
        )

    def protect(self, path: str | os.PathLike[str], what: str) -> GrantRoots:
        """`path` (what it is to the node) never granted either."""
        return replace(self, protected=(*self.protected, (resolve(path), what)))

    def with_operator(self, grants: Iterable[tuple[str | os.PathLike[str], bool]]) -> GrantRoots:
        """These exact grants (host, writable) allowed as well: a standalone node's own `--dir`."""
        return replace(self, operator=(*self.operator, *((resolve(h), w) for h, w in grants)))

    def describe(self) -> str:
        if not self.roots:
            return "none: this node was started without --allow-dir"
        return ", ".join(self.roots)

    def check(self, host: str | os.PathLike[str], writable: bool = False) -> Path:
        """The resolved directory to open for a grant of `host`, or LoadError saying why not."""
        given = os.fspath(host)
        if not os.path.isabs(given):
            raise LoadError(f"{FIELD}: host {given!r} is not an absolute path")
        real = resolve(given)
        shown = given if real == given else f"{given} (resolves to {real})"
        if real == os.path.sep:
            raise LoadError(f"{FIELD}: host {shown} is the root of the host filesystem, which is never granted")
        for path, what in self.protected:
            if _within(real, path) or _within(path, real):
                raise LoadError(
                    f"{FIELD}: host {shown} holds or lies in this node's {what} {path}, which is never granted"
                )
        if any(real == h and (w or not writable) for h, w in self.operator):
            return Path(real)
        if not any(_within(real, root) for root in self.roots):
            raise LoadError(
                f"{FIELD}: host {shown} is not under a directory this node allows (--allow-dir: {self.describe()})"
            )
        return Path(real)
