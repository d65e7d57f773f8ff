"""A thin seam over GitPython: run git in one repository, read commits of the first-parent chain.

Where it sits: under the Git source (reconciler.gitsource.source) and the verifier. Everything
that asks git a question goes through `GitRepo.run`, so a failing command always becomes a
`GitCommandError` carrying git's own message, and reads use one `git log` for many commits.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import git

from reconciler.gitsource.errors import ExportError, GitCommandError, TooLargeError
from reconciler.spec.approvals import (
    ADOPT_TRAILER,
    API_APPROVED_BY_TRAILER,
    APPROVE_TRAILER,
    APPROVED_BY_TRAILER,
    REQUESTED_BY_TRAILER,
)
from reconciler.spec.fleet import Problem
from reconciler.spec.limits import InputLimits, size_problems

__all__ = ["CommitInfo", "GitRepo", "TreeEntry"]

_FIELD = "\x1f"
_RECORD = "\x1e"
_LOG_FORMAT = _FIELD.join(
    [
        "%H",
        "%P",
        "%ct",
        "%s",
        f"%(trailers:key={APPROVE_TRAILER},valueonly,separator=%x1d)",
        f"%(trailers:key={APPROVED_BY_TRAILER},valueonly,separator=%x1d)",
        f"%(trailers:key={ADOPT_TRAILER},valueonly,separator=%x1d)",
        f"%(trailers:key={API_APPROVED_BY_TRAILER},valueonly,separator=%x1d)",
        f"%(trailers:key={REQUESTED_BY_TRAILER},valueonly,separator=%x1d)",
    ]
)


@dataclass(frozen=True)
class CommitInfo:
    """What the Git source needs of one commit, without its signature (that is the verifier's job)."""

    sha: str
    parents: tuple[str, ...]
    committed_at: datetime
    subject: str
    approves: tuple[str, ...]  # Hotswap-Approve trailer values
    approved_by: tuple[str, ...]  # Approved-by trailer values
    adopts: tuple[str, ...] = ()  # Hotswap-Adopt values: SHAs (or prefixes) of unverified commits
    api_approved_by: tuple[str, ...] = ()  # Hotswap-Approved-By: who approved, on a control-plane commit
    requested_by: tuple[str, ...] = ()  # Hotswap-Requested-By: who asked, on a control-plane commit

    @property
    def is_merge(self) -> bool:
        return len(self.parents) > 1

    @property
    def short(self) -> str:
        return self.sha[:12]

    def describe(self) -> str:
        return f"{self.short} ({self.subject!r})" if self.subject else self.short


@dataclass(frozen=True)
class TreeEntry:
    """One line of `git ls-tree -r -l`: a blob (mode 100644/100755, or 120000 for a symlink) or a
    submodule (kind "commit")."""

    path: str
    mode: str
    kind: str
    oid: str
    size: int

    @property
    def is_symlink(self) -> bool:
        return self.mode == "120000"


def _values(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split("\x1d") if v.strip())


class GitRepo:
    """One local repository (bare or not), driven through GitPython's `Git.execute`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.repo = git.Repo(path)

    @classmethod
    def init_bare(cls, path: Path) -> GitRepo:
        path.mkdir(parents=True, exist_ok=True)
        git.Repo.init(path, bare=True)
        return cls(path)

    def run(
        self,
        args: Sequence[str],
        *,
        config: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        error: type[GitCommandError] = GitCommandError,
        timeout: float | None = 300,
    ) -> str:
        """`git [-c config]... args...` in this repository; its stdout, or `error` with its stderr."""
        command = ["git", *(x for c in config for x in ("-c", c)), *args]
        status, out, err = self.repo.git.execute(
            command,
            with_extended_output=True,
            with_exceptions=False,
            env=dict(env) if env else None,
            kill_after_timeout=timeout,
            strip_newline_in_stdout=False,
        )
        if status != 0:
            raise error(list(args), int(status), str(err))
        return str(out)

    def run_bytes(self, args: Sequence[str]) -> bytes:
        status, out, err = self.repo.git.execute(
            ["git", *args], with_extended_output=True, with_exceptions=False, stdout_as_string=False
        )
        if status != 0:
            raise GitCommandError(list(args), int(status), err.decode() if isinstance(err, bytes) else str(err))
        assert isinstance(out, bytes)
        return out

    def _batch(self, args: Sequence[str], lines: Sequence[str]) -> bytes:
        """`git args...` with `lines` on its standard input; its stdout."""
        with tempfile.TemporaryFile() as stdin:
            stdin.write("".join(f"{line}\n" for line in lines).encode())
            stdin.seek(0)
            status, out, err = self.repo.git.execute(
                ["git", *args],
                istream=stdin,
                kill_after_timeout=300,
                with_extended_output=True,
                with_exceptions=False,
                stdout_as_string=False,
                strip_newline_in_stdout=False,
            )
        if status != 0:
            raise GitCommandError(list(args), int(status), err.decode() if isinstance(err, bytes) else str(err))
        assert isinstance(out, bytes)
        return out

    def resolve(self, ref: str) -> str | None:
        try:
            return self.run(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"]).strip() or None
        except GitCommandError:
            return None

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        try:
            self.run(["merge-base", "--is-ancestor", ancestor, descendant])
        except GitCommandError as exc:
            if exc.status == 1:
                return False
            raise
        return True

    def merge_base(self, a: str, b: str) -> str | None:
        try:
            return self.run(["merge-base", a, b]).strip() or None
        except GitCommandError:
            return None

    def first_parent_log(self, head: str, since: str | None = None, limit: int | None = None) -> list[CommitInfo]:
        """First-parent commits reachable from `head` and not from `since`, newest first."""
        args = ["log", "--first-parent", f"--format={_LOG_FORMAT}{_RECORD}"]
        if limit is not None:
            args.append(f"--max-count={limit}")
        args.append(head)
        if since is not None:
            args.append(f"^{since}")
        return self._parse_log(self.run([*args, "--"]))

    def commits(self, shas: Sequence[str]) -> list[CommitInfo]:
        """These commits, in the order given."""
        if not shas:
            return []
        return self._parse_log(self.run(["log", "--no-walk=unsorted", f"--format={_LOG_FORMAT}{_RECORD}", *shas]))

    @staticmethod
    def _parse_log(out: str) -> list[CommitInfo]:
        commits = []
        for raw in out.split(_RECORD):
            record = raw.strip("\n")
            if not record:
                continue
            sha, parents, ct, subject, approves, approved_by, adopts, api_by, requested = record.split(_FIELD)
            commits.append(
                CommitInfo(
                    sha,
                    tuple(parents.split()),
                    datetime.fromtimestamp(int(ct), tz=UTC),
                    subject,
                    _values(approves),
                    _values(approved_by),
                    tuple(s for v in _values(adopts) for s in v.replace(",", " ").split()),
                    _values(api_by),
                    _values(requested),
                )
            )
        return commits

    def changed_files(self, old: str, new: str, path: str = "") -> list[str]:
        """Paths (repository-relative) that differ between two commits under `path`."""
        out = self.run(["diff", "--name-only", "-z", "--no-renames", old, new, "--", path or "."])
        return [p for p in out.split("\0") if p]

    def read_blob(self, sha: str, path: str) -> bytes | None:
        try:
            return self.run_bytes(["cat-file", "blob", f"{sha}:{path}"])
        except GitCommandError:
            return None

    def blob_size(self, sha: str, path: str) -> int | None:
        """The size in bytes of the file `path` at `sha` (without reading it), or None."""
        try:
            return int(self.run(["cat-file", "-s", f"{sha}:{path}"]).strip())
        except (GitCommandError, ValueError):
            return None

    def tree_sizes(self, sha: str, path: str = "") -> list[tuple[str, int]]:
        """Every file under `path` at `sha` (relative to `path`) with its size, read from the tree alone."""
        return [(e.path, e.size) for e in self.tree_entries(sha, path)]

    def tree_entries(self, sha: str, path: str = "", sizes: dict[str, int] | None = None) -> list[TreeEntry]:
        """Every entry under `path` at `sha` (paths relative to `path`), read from the trees alone.

        Without `sizes`, `git ls-tree -r -l` (which reads every blob's header: ~20 ms for 1,000 files);
        with it, `git ls-tree -r` and the sizes of blobs not in `sizes` (blob id -> bytes) from one
        `git cat-file --batch-check`, added to `sizes`."""
        treeish = f"{sha}:{path}" if path else sha
        args = ["ls-tree", "-r", "-z", treeish] if sizes is not None else ["ls-tree", "-r", "-l", "-z", treeish]
        rows = []
        for line in os.fsdecode(self.run_bytes(args)).split("\0"):
            meta, _, rel = line.partition("\t")
            fields = meta.split()
            if len(fields) == (3 if sizes is not None else 4):  # mode type object [size]
                rows.append((rel, fields))
        if sizes is None:  # a submodule's size is "-"
            return [TreeEntry(rel, m, k, o, int(n) if n.isdigit() else 0) for rel, (m, k, o, n) in rows]
        unknown = [o for _, (_, k, o) in rows if k == "blob" and o not in sizes]
        if unknown:
            sizes.update(self._sizes(unknown))
        return [TreeEntry(rel, m, k, o, sizes.get(o, 0) if k == "blob" else 0) for rel, (m, k, o) in rows]

    def _sizes(self, oids: Sequence[str]) -> dict[str, int]:
        found = {}
        for line in self._batch(["cat-file", "--batch-check"], oids).decode("ascii", "replace").splitlines():
            fields = line.split()
            if len(fields) != 3:
                raise GitCommandError(["cat-file", "--batch-check"], 1, line)
            found[fields[0]] = int(fields[2])
        return found

    def blobs(self, oids: Sequence[str]) -> dict[str, bytes]:
        """The contents of these blobs, in one `git cat-file --batch`; an id git does not have is an error."""
        wanted = list(dict.fromkeys(oids))
        if not wanted:
            return {}
        out = self._batch(["cat-file", "--batch"], wanted)
        found: dict[str, bytes] = {}
        at = 0
        for oid in wanted:
            end = out.index(b"\n", at)
            header = out[at:end].decode("ascii", "replace").split()
            if len(header) != 3 or header[0] != oid:
                raise GitCommandError(["cat-file", "--batch"], 1, f"{oid}: {' '.join(header[1:]) or 'no answer'}")
            size = int(header[2])
            found[oid] = out[end + 1 : end + 1 + size]
            at = end + 2 + size
        return found

    def trees(self, shas: Sequence[str]) -> dict[str, str]:
        """The tree of each commit, in one call."""
        if not shas:
            return {}
        out = self.run(["rev-parse", *(f"{s}^{{tree}}" for s in shas)]).split()
        return dict(zip(shas, out, strict=True))

    def tree(self, sha: str, path: str = "") -> str | None:
        """The tree object of `path` (the whole tree when "") at commit `sha`; None when it is not there."""
        return self.resolve_object(f"{sha}:{path}" if path else f"{sha}^{{tree}}")

    def resolve_object(self, spec: str) -> str | None:
        try:
            return self.run(["rev-parse", "--verify", "--quiet", spec]).strip() or None
        except GitCommandError:
            return None

    def has_path(self, sha: str, path: str) -> bool:
        if not path:
            return True
        try:
            self.run(["cat-file", "-e", f"{sha}:{path}"])
        except GitCommandError:
            return False
        return True

    def export(self, sha: str, path: str, dest: Path, limits: InputLimits | None = None) -> None:
        """Write the tree of `sha` under `path` into `dest` (which becomes the fleet root).

        With `limits`, the files' sizes are checked from the tree first (`TooLargeError`, nothing
        written); a member that cannot be written safely (a symlink leaving `dest`, a device) is
        an `ExportError` naming it."""
        if limits is not None:
            too_large = size_problems(self.tree_sizes(sha, path), limits)
            if too_large:
                raise TooLargeError(too_large)
        dest.mkdir(parents=True, exist_ok=True)
        treeish = f"{sha}:{path}" if path else sha
        data = self.run_bytes(["archive", "--format=tar", treeish])
        try:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                _extract(tar, dest)
        except tarfile.TarError as exc:
            member = getattr(exc, "tarinfo", None)
            name = member.name if isinstance(member, tarfile.TarInfo) else ""
            raise ExportError([Problem(name, 0, "file", f"cannot be exported: {exc}")]) from None


def _extract(tar: tarfile.TarFile, dest: Path) -> None:
    """`extractall(filter="data")` where Python has it (3.11.4+). Debian 12's Python 3.11.2 does not,
    so there the same rule by hand: only files, folders and symlinks, none reaching outside `dest`."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    root = dest.resolve()
    for member in tar.getmembers():
        target = (root / member.name).resolve()
        link = (target.parent / member.linkname).resolve() if member.issym() else target
        if not (member.isfile() or member.isdir() or member.issym()):
            raise tarfile.TarError(f"{member.name}: not a file, folder or symlink")
        if not (target.is_relative_to(root) and link.is_relative_to(root)):
            raise tarfile.TarError(f"{member.name}: outside the fleet root")
    tar.extractall(dest)  # every member checked above
