"""Errors of the Git source, from reading the trust root to fetching and verifying the fleet repo.

    GitSourceError                  anything the Git source raises
    ├── TrustRootError              trust.yaml unreadable or invalid (`path:line: field: message` lines)
    ├── GitCommandError             a git command failed (its arguments and stderr in the message)
    │   └── FetchError              clone or fetch of the fleet repository failed (transient: retried)
    ├── ExportError                 a revision's tree cannot be written out (a symlink leaving it, ...)
    │   └── TooLargeError           a file or the revision is over its size cap (`problems` name them)
    ├── RewriteNotPendingError      `accept_history_rewrite` of a head that is not the one held
    └── ApproveError                `hotswap approve` could not make, sign or push its commit

A revision that does not verify or parse is not an exception: it is a `Stalled` condition in the
source's status (see reconciler.gitsource.status), and the last good revision stays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from reconciler.errors import ReconcilerError

if TYPE_CHECKING:
    from reconciler.spec.fleet import Problem


class GitSourceError(ReconcilerError):
    """Base of every Git source error."""


class TrustRootError(GitSourceError):
    """The trust root file is missing or invalid; `problems` holds one `path:line: field: message` each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class GitCommandError(GitSourceError):
    """A git command exited non-zero."""

    def __init__(self, args: Sequence[str], status: int, stderr: str) -> None:
        self.args_ = tuple(args)
        self.status = status
        self.stderr = stderr.strip()
        super().__init__(f"git {' '.join(self.args_)} failed ({status}): {self.stderr or 'no message'}")


class FetchError(GitCommandError):
    """Clone or fetch failed; the source keeps its last good revision and tries again later."""


class ExportError(GitSourceError):
    """A revision's tree could not be written out for the loader; `problems` name the files."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"{self.problems[0]}{more}" if self.problems else "cannot export the revision")


class TooLargeError(ExportError):
    """A file or the whole revision is over its cap (reconciler.spec.limits); nothing was exported."""


class RewriteNotPendingError(GitSourceError):
    """An accepted rewrite must name the head the source holds as `HistoryRewritten`, and only that."""


class ApproveError(GitSourceError):
    """The approval commit could not be made, signed or pushed."""
