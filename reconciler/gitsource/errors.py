"""Errors of the Git source, from reading the trust root to fetching and verifying the fleet repo.

    GitSourceError                  anything the Git source raises
    ├── TrustRootError              trust.yaml unreadable or invalid (`path:line: field: message` lines)
    ├── GitCommandError             a git command failed (its arguments and stderr in the message)
    │   └── FetchError              clone or fetch of the fleet repository failed (transient: retried)
    └── ApproveError                `hotswap approve` could not make, sign or push its commit

A revision that does not verify or parse is not an exception: it is a `Stalled` condition in the
source's status (see reconciler.gitsource.status), and the last good revision stays.
"""

from __future__ import annotations

from collections.abc import Sequence


class GitSourceError(Exception):
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


class ApproveError(GitSourceError):
    """The approval commit could not be made, signed or pushed."""
