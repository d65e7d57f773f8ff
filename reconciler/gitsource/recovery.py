"""Moving past unverified commits without rewriting history: signed reverts and adoptions.

Where it sits: inside the Git source's verification (reconciler.gitsource.source), after every new
first-parent commit has its verdict (signature, trust root, the signer's role). Protected branches
forbid force-pushes, so an unsigned commit, or one signed by a key nobody trusts, must be
recoverable by adding commits. `walk()` goes through the new commits oldest first, from the last
verified commit (the anchor), and keeps the unverified ones it meets as pending. A trusted commit
clears what is pending in one of two ways:

- **revert**: it is signed by a principal with an author role and its tree (the whole repository)
  is exactly the anchor's, e.g. `git revert` of the unverified commit, signed (of every commit
  since, when signed ones came after it). Nothing of the unverified commits is left.
- **adopt**: it is signed by a principal with an adopt role (`roles.adopt`, admin by default) and
  carries `Hotswap-Adopt: <sha> [<sha>...]` naming the unverified commits (full SHAs or prefixes of
  at least 12 hex digits); it takes responsibility for exactly those it names. One that is not
  named stays pending.

Any other trusted commit on top of a pending one is checked but changes nothing: its content
includes the unverified change. A head with anything pending is held (`UnverifiedCommit`), so
nothing unverified is ever applied on its own authority. The threat: someone who can push to the
branch (a leaked forge token, a careless merge of an unsigned commit) but holds no trusted key
must not get a change applied; a trusted person must look and either undo it (revert) or vouch
for it by name (adopt). Each recovery is returned as a `Recovery` so the source can report it in
its events and the control plane in its audit log.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from reconciler.gitsource.gitrepo import CommitInfo
from reconciler.gitsource.trust import RolePolicy
from reconciler.gitsource.verify import CommitCheck
from reconciler.spec.approvals import ADOPT_TRAILER

__all__ = ["MIN_SHA_PREFIX", "Recovery", "Walk", "walk"]

MIN_SHA_PREFIX = 12
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class Recovery:
    """A signed commit that moved the source past unverified commits, and how."""

    kind: Literal["revert", "adopt"]
    commit: str
    principal: str
    covered: tuple[str, ...]  # the unverified commits it moved past, oldest first
    anchor: str  # the last verified commit before them

    def describe(self) -> str:
        names = ", ".join(c[:12] for c in self.covered)
        if self.kind == "revert":
            return (
                f"signed commit {self.commit[:12]} by {self.principal} restores the tree of verified commit "
                f"{self.anchor[:12]}: moved past unverified {names}"
            )
        return f"{self.principal} adopted unverified {names} in signed commit {self.commit[:12]}"


@dataclass(frozen=True)
class Walk:
    """The outcome: recoveries made, commits still unverified (oldest first), and notes on why a
    trusted commit's adoption did not count."""

    recoveries: tuple[Recovery, ...] = ()
    pending: tuple[CommitCheck, ...] = ()
    notes: tuple[str, ...] = ()
    anchor: str | None = None  # the last verified commit with nothing pending before it

    def hint(self) -> str:
        """What a human can do about what is pending (for the Stalled message)."""
        if not self.pending:
            return ""
        named = " ".join(c.sha for c in self.pending)
        restore = f"restores the tree of {self.anchor[:12]}" if self.anchor else "restores the last verified tree"
        return (
            f"; to move past without rewriting history, push a signed commit that {restore} "
            f"(git revert), or an adopter's signed commit with '{ADOPT_TRAILER}: {named}'"
            + "".join(f"; {note}" for note in self.notes)
        )


@dataclass
class _State:
    anchor: str | None
    anchor_tree: str | None
    pending: list[CommitCheck] = field(default_factory=list)
    recoveries: list[Recovery] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _named(values: Sequence[str], pending: Sequence[CommitCheck]) -> tuple[set[str], list[str]]:
    """The pending SHAs `values` name, and the values that name none of them."""
    named: set[str] = set()
    stray: list[str] = []
    for value in values:
        token = value.strip().lower()
        hits = [c.sha for c in pending if c.sha.startswith(token)]
        if len(token) < MIN_SHA_PREFIX or not _HEX.fullmatch(token) or len(hits) != 1:
            stray.append(value)
        else:
            named.add(hits[0])
    return named, stray


def walk(
    commits: Sequence[CommitInfo],
    checks: dict[str, CommitCheck],
    tree: Callable[[str], str | None],
    roles: RolePolicy,
    anchor: str | None,
) -> Walk:
    """Go through `commits` (oldest first; `checks` their verdicts after the role check) from the
    verified commit `anchor`. `tree(sha)` is a commit's tree, asked only when a
    trusted commit meets pending ones."""
    state = _State(anchor, None)
    anchor_tree_known = False
    for commit in commits:
        check = checks[commit.sha]
        if not check.trusted:
            state.pending.append(check)
            continue
        if state.pending:
            if not anchor_tree_known:
                state.anchor_tree = tree(state.anchor) if state.anchor else None
                anchor_tree_known = True
            _recover(state, commit, check, tree, roles)
        if not state.pending:
            state.anchor, anchor_tree_known = commit.sha, False
    return Walk(tuple(state.recoveries), tuple(state.pending), tuple(state.notes), state.anchor)


def _recover(
    state: _State, commit: CommitInfo, check: CommitCheck, tree: Callable[[str], str | None], roles: RolePolicy
) -> None:
    """Adopt what `commit` names (when its signer may), then move past the rest if it is a revert."""
    principal = check.principal or ""
    anchor = state.anchor or ""
    if commit.adopts:
        _adopt(state, commit, principal, check.roles, roles, anchor)
    if (
        state.pending
        and check.roles & roles.author
        and state.anchor_tree is not None
        and tree(commit.sha) == state.anchor_tree
    ):
        covered = tuple(c.sha for c in state.pending)
        state.recoveries.append(Recovery("revert", commit.sha, principal, covered, anchor))
        state.pending.clear()


def _adopt(
    state: _State, commit: CommitInfo, principal: str, held: frozenset[str], roles: RolePolicy, anchor: str
) -> None:
    if not held & roles.adopt:
        state.notes.append(
            f"{ADOPT_TRAILER} in {commit.short} ignored: {principal} ({RolePolicy.spell(held)}) may not adopt "
            f"(adopt roles: {RolePolicy.spell(roles.adopt)})"
        )
        return
    named, stray = _named(commit.adopts, state.pending)
    if stray:
        state.notes.append(
            f"{ADOPT_TRAILER} in {commit.short} names {', '.join(stray)}: not an unverified commit before it "
            f"(a SHA or a prefix of at least {MIN_SHA_PREFIX} hex digits)"
        )
    if named:
        covered = tuple(c.sha for c in state.pending if c.sha in named)
        state.recoveries.append(Recovery("adopt", commit.sha, principal, covered, anchor))
        state.pending[:] = [c for c in state.pending if c.sha not in named]
