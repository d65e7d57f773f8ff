"""The Git source: follows one branch (and sub-path) of the fleet repository and yields revisions.

Where it sits: first in the control plane's flow. `hotswap serve` builds one `GitSource`; its `run()`
loop fetches every `interval` seconds, at once when `trigger()` is called (the webhook handler in
reconciler.gitsource.webhook does so) and, for a repository on a local path, when its refs change
on disk (watchfiles). Each sync:

    fetch -> head moved? -> history rewritten? -> when signing is already required, verify every
    new first-parent commit (signature, trust root, the signer's role) before reading any file ->
    check the sizes of the head's files from the tree (`git ls-tree`) -> parse the fleet at head
    (skipped when nothing under the fleet root changed; reconciler.gitsource.checkout writes and
    parses only the files whose blob ids changed) -> when the head's own
    policy switches signing on, verify now -> scan the new commits for approvals -> a new `Revision`

A head that cannot be used (unsigned or untrusted commit, a signer whose roles may not author it,
a file or revision over its cap, an invalid fleet, a tree that cannot be exported, rewritten
history under signing policy) never replaces the last good revision: the reason goes to `status()`
as Flux-like conditions (`Stalled`), naming the commit and the file (file:line for YAML). A head
that failed so is not read again; the next commit is. Signing is required when the trust root says
so, when the last good revision's policy says so (a commit cannot switch it off for itself), or
when the new head's policy says so; in that last case the caps of `SourceConfig.limits` (and the
YAML reader's refusal of anchors and aliases) are what bound the reading before verification. On
the first sync with no `last_applied` revision known, only the head commit is verified.

A force-push that removes the applied revision from the branch is always reported. Without signing
policy it is followed (and recorded in `status().events`); with signing policy it is held
(`Stalled`, `HistoryRewritten`) until `accept_history_rewrite(head)` says a human looked at that
head; the acceptance is used by that one rewrite.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import tempfile
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from reconciler.gitsource.approving import ApprovalScanner
from reconciler.gitsource.checkout import Checkout
from reconciler.gitsource.errors import (
    ExportError,
    FetchError,
    GitCommandError,
    GitSourceError,
    RewriteNotPendingError,
    TooLargeError,
)
from reconciler.gitsource.gitrepo import CommitInfo, GitRepo
from reconciler.gitsource.recovery import Recovery, walk
from reconciler.gitsource.status import Failure, Reason, SourceStatus, conditions
from reconciler.gitsource.trust import TrustRoot
from reconciler.gitsource.verify import CommitCheck, Verifier, authorised, on_behalf
from reconciler.spec.approvals import Approval, RejectedApproval
from reconciler.spec.fleet import DesiredFleet, Problem
from reconciler.spec.limits import InputLimits
from reconciler.spec.loader import LoadResult

__all__ = ["FleetParser", "GitSource", "Revision", "SourceConfig", "Verification"]

FleetParser = Callable[[Path], LoadResult]
MAX_EVENTS = 20
UNVERIFIED = frozenset({Reason.UNVERIFIED_COMMIT, Reason.HISTORY_REWRITTEN})
log = logging.getLogger(__name__)


def _default_parser(root: Path, limits: InputLimits) -> LoadResult:
    from reconciler.spec.loader import load_fleet

    return load_fleet(root, limits)


@dataclass(frozen=True)
class SourceConfig:
    url: str  # a local path or any URL git can fetch
    branch: str = "main"
    path: str = ""  # the fleet root inside the repository
    interval: float = 30.0  # seconds between fetches when nothing triggers one
    limits: InputLimits = field(default_factory=InputLimits)  # file, revision and file-count caps

    @property
    def local_path(self) -> Path | None:
        """The repository's directory when `url` is a path on this machine."""
        url = self.url.removeprefix("file://")
        if "://" in url:
            return None
        candidate = Path(url).expanduser()
        return candidate.resolve() if candidate.exists() else None


@dataclass(frozen=True)
class Verification:
    """Signature checks of the commits a revision brought (oldest first), and whether they were required.

    `recoveries` are the signed reverts and adoptions that moved past unverified commits
    (reconciler.gitsource.recovery); `pending` the unverified commits nothing moved past."""

    required: bool
    checks: tuple[CommitCheck, ...] = ()
    recoveries: tuple[Recovery, ...] = ()
    pending: tuple[CommitCheck, ...] = ()
    hint: str = ""  # what a human can do about `pending`

    @property
    def failure(self) -> CommitCheck | None:
        return self.pending[0] if self.pending else None

    @property
    def ok(self) -> bool:
        return not self.required or self.failure is None

    @property
    def verified(self) -> bool:
        """Every commit checked was signed by a trusted principal, or moved past by a signed revert or
        adoption (and at least one was checked)."""
        return bool(self.checks) and self.failure is None


@dataclass(frozen=True)
class Revision:
    """One commit of the tracked branch, parsed and checked: what the reconciler plans from."""

    sha: str
    committed_at: datetime
    subject: str
    fleet: DesiredFleet | None
    problems: tuple[Problem, ...]
    verification: Verification
    approvals: tuple[Approval, ...] = ()
    rejected_approvals: tuple[RejectedApproval, ...] = ()

    @property
    def ok(self) -> bool:
        return self.fleet is not None and self.verification.ok

    @property
    def short(self) -> str:
        return self.sha[:12]


@dataclass
class _Found:
    """Approvals over a revision's whole first-parent history, before the policy filters them."""

    approvals: list[Approval] = field(default_factory=list)
    rejected: list[RejectedApproval] = field(default_factory=list)


class GitSource:
    """Follows `config.branch` of `config.url`; `sync()` is blocking, `run()` is the async loop."""

    def __init__(
        self,
        config: SourceConfig,
        trust: TrustRoot,
        cache_dir: Path,
        *,
        parse: FleetParser | None = None,
        last_applied: str | None = None,
    ) -> None:
        self.config = config
        self.trust = trust
        self.cache_dir = cache_dir
        self.parse = parse or functools.partial(_default_parser, limits=config.limits)
        self.path = config.path.strip("/")
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.verifier = Verifier(trust, cache_dir / "trust")
        self.repo = self._open_mirror(cache_dir / "mirror.git")
        # the default loader reads only what changed (by blob id); a parser given reads an export
        self.checkout = Checkout(self.repo, self.path, cache_dir / "checkout", config.limits) if parse is None else None
        self.scanner = ApprovalScanner(self.repo, self.verifier, trust, self.path, config.limits)
        self._lock = threading.Lock()
        self._good: Revision | None = None
        self._good_found = _Found()
        self._good_tree: str | None = None  # the tree of the fleet root at the last good revision
        self._resume = last_applied
        self._observed: str | None = None
        self._attempted: str | None = None
        self._failure: Failure | None = None
        self._accepted_rewrite: str | None = None  # the held rewritten head a human accepted, until used
        self._events: deque[str] = deque(maxlen=MAX_EVENTS)
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.fetches = 0

    # -- reading ----------------------------------------------------------------------------------

    @property
    def latest(self) -> Revision | None:
        """The last good revision (parsed, and verified when required)."""
        return self._good

    @property
    def failure(self) -> Failure | None:
        """Why the observed head was not taken (None when it was); for an invalid fleet, every problem."""
        return self._failure

    def status(self) -> SourceStatus:
        good = self._good
        return SourceStatus(
            url=self.config.url,
            branch=self.config.branch,
            path=self.path,
            observed_revision=self._observed,
            last_applied_revision=good.sha if good else None,
            # the last applied revision verified, and no unverified or rewritten head held over it
            verified=bool(good and good.verification.verified)
            and not (self._failure is not None and self._failure.reason in UNVERIFIED),
            conditions=conditions(self.config.branch, good.sha if good else None, self._failure),
            events=tuple(self._events),
        )

    def accept_history_rewrite(self, head: str) -> None:
        """A human looked at a force-push: follow the rewritten branch at `head`, once.

        `head` must be the head held as `HistoryRewritten` now (`RewriteNotPendingError` otherwise,
        naming the one held, if any); a later rewrite needs an acceptance of its own."""
        with self._lock:
            failure = self._failure
            held = failure.commit if failure is not None and failure.reason is Reason.HISTORY_REWRITTEN else None
            if held is None or held != head:
                pending = f"the held rewrite's head is {held}" if held else "no rewritten history is held"
                raise RewriteNotPendingError(f"{head} is not a rewritten head waiting for acceptance; {pending}")
            self._accepted_rewrite = head
            self._attempted = None

    # -- fetching ---------------------------------------------------------------------------------

    def _open_mirror(self, path: Path) -> GitRepo:
        if (path / "HEAD").exists():
            repo = GitRepo(path)
            repo.run(["remote", "set-url", "origin", self.config.url])
            return repo
        repo = GitRepo.init_bare(path)
        repo.run(["remote", "add", "origin", self.config.url])
        return repo

    @property
    def _tracking_ref(self) -> str:
        return f"refs/remotes/origin/{self.config.branch}"

    def fetch(self) -> str:
        """Fetch the tracked branch (following force-pushes); the head's SHA."""
        self.fetches += 1
        branch = self.config.branch
        self.repo.run(
            ["fetch", "--no-tags", "--force", "--quiet", "origin", f"+refs/heads/{branch}:{self._tracking_ref}"],
            error=FetchError,
            timeout=120,
        )
        head = self.repo.resolve(self._tracking_ref)
        if head is None:
            raise FetchError(["fetch"], 1, f"branch {branch!r} has no commit")
        return head

    # -- one sync ---------------------------------------------------------------------------------

    def sync(self) -> SourceStatus:
        """Fetch, and take the head as the new revision if it parses and verifies. Never raises for git."""
        with self._lock:
            try:
                head = self.fetch()
            except GitCommandError as exc:
                self._failure = Failure(Reason.FETCH_FAILED, f"fetching {self.config.url}: {exc.stderr or exc}")
                return self.status()
            self._observed = head
            if self._good is not None and head == self._good.sha:
                self._failure = None
            elif head != self._attempted:
                self._attempted = head
                try:
                    self._failure = self._take(head)
                except GitCommandError as exc:
                    self._attempted = None  # try this head again at the next sync
                    self._failure = Failure(Reason.FETCH_FAILED, f"reading commit {head[:12]}: {exc}", head)
                except Exception as exc:  # a bug must not pass for success: stalled until the next commit
                    log.exception("git source: reading commit %s failed", head)
                    self._failure = Failure(
                        Reason.SYNC_FAILED, f"reading commit {head[:12]} failed: {type(exc).__name__}: {exc}", head
                    )
                if self._failure is not None:
                    log.warning("git source: %s: %s", self._failure.reason, self._failure.message)
                else:
                    log.info("git source: new revision %s@%s", self.config.branch, head)
            return self.status()

    def _take(self, head: str) -> Failure | None:
        repo = self.repo
        good = self._good
        base = good.sha if good else self._known_resume()
        new_commits = repo.first_parent_log(head, since=base) if base else []
        # the usual case needs no question to git: base is the first parent of the oldest new commit
        follows = bool(new_commits) and new_commits[-1].parents[:1] == (base,)
        rewritten = base is not None and not follows and not repo.is_ancestor(base, head)
        required = self.trust.require_signed_commits or bool(
            good and good.fleet and good.fleet.policy.require_signed_commits
        )
        if rewritten:
            assert base is not None
            message = (
                f"history rewritten: applied revision {base[:12]} is no longer on branch "
                f"{self.config.branch}, whose head is now {head[:12]}"
            )
            if required and head != self._accepted_rewrite:
                return Failure(Reason.HISTORY_REWRITTEN, message + " (signing policy: accept it to follow)", head)
            if required:
                self._accepted_rewrite = None  # used: a later rewrite needs its own acceptance
            self._events.append(message + ("; followed (accepted)" if required else "; followed"))
            log.warning("git source: %s; followed (%s)", message, "accepted" if required else "no signing policy")
            base = repo.merge_base(base, head)
            new_commits = repo.first_parent_log(head, since=base) if base else []
        info = new_commits[0] if new_commits and new_commits[0].sha == head else repo.commits([head])[0]
        if not base:
            new_commits = [info]
        verification = self._verify(new_commits, base) if required else Verification(False)
        if not verification.ok:  # refused before any file of the revision is read
            return self._unverified(verification, head)
        fleet_tree = repo.tree(head, self.path)
        if good is not None and not rewritten and fleet_tree is not None and fleet_tree == self._good_tree:
            problems, fleet = good.problems, good.fleet  # nothing under the fleet root changed
        else:
            try:
                problems, fleet = self._parse(head, fleet_tree)
            except ExportError as exc:
                if isinstance(exc, TooLargeError):
                    return Failure(Reason.TOO_LARGE, f"commit {head[:12]} is too large: {exc}", head, exc.problems)
                return Failure(Reason.INVALID_FLEET, f"invalid fleet at commit {head[:12]}: {exc}", head, exc.problems)
        if not required and fleet is not None and fleet.policy.require_signed_commits:
            verification = self._verify(new_commits, base)  # the head's own policy switches signing on
            if not verification.ok:
                return self._unverified(verification, head)
        if fleet is None:
            errors = [p for p in problems if p.severity == "error"] or list(problems)
            first = str(errors[0]) if errors else "no fleet"
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            return Failure(
                Reason.INVALID_FLEET, f"invalid fleet at commit {head[:12]}: {first}{more}", head, tuple(errors)
            )
        found = self._approvals(head, base if good and not rewritten else None, new_commits)
        merges = fleet.policy.merged_pull_requests_approve
        revision = Revision(
            sha=head,
            committed_at=info.committed_at,
            subject=info.subject,
            fleet=fleet,
            problems=problems,
            verification=verification,
            approvals=tuple(a for a in found.approvals if merges or a.via != "merge"),
            rejected_approvals=tuple(r for r in found.rejected if merges or r.via != "merge"),
        )
        self._good, self._good_found, self._good_tree, self._resume = revision, found, fleet_tree, None
        for recovery in verification.recoveries:
            self._events.append(recovery.describe())
            log.warning("git source: %s", recovery.describe())
        with contextlib.suppress(GitCommandError):
            repo.run(["update-ref", "refs/hotswap/applied", head])
        return None

    def _verify(self, commits: list[CommitInfo], anchor: str | None) -> Verification:
        """Signature, trust root and the signer's role for each first-parent commit (newest first
        given), then the signed reverts and adoptions that move past unverified ones, from the
        verified commit `anchor`."""
        verdicts = self.verifier.check(self.repo, [c.sha for c in commits])
        shas = [c.sha for c in commits if verdicts[c.sha].trusted]
        trees = self.repo.trees(list(dict.fromkeys(shas + [c.parents[0] for c in commits if c.parents])))
        oldest_first = list(reversed(commits))
        checks = {
            c.sha: authorised(
                on_behalf(verdicts[c.sha], c, self.trust),
                c,
                not c.parents or trees.get(c.sha) != trees.get(c.parents[0]),
                self.trust.roles,
            )
            for c in oldest_first
        }
        result = walk(oldest_first, checks, self.repo.tree, self.trust.roles, anchor)
        return Verification(True, tuple(checks.values()), result.recoveries, result.pending, result.hint())

    @staticmethod
    def _unverified(verification: Verification, head: str) -> Failure:
        failed = verification.failure
        assert failed is not None
        more = len(verification.pending) - 1
        also = f" (and {more} more unverified commit{'s' if more > 1 else ''})" if more else ""
        return Failure(
            Reason.UNVERIFIED_COMMIT,
            f"unverified commit {failed.sha[:12]}: {failed.reason}{also}{verification.hint}",
            head,
        )

    def _known_resume(self) -> str | None:
        """The `last_applied` given at start, when the mirror has it (until a revision is taken)."""
        if self._resume is None or self.repo.resolve(self._resume) is None:
            return None
        return self._resume

    def fleet_at(self, sha: str) -> DesiredFleet | None:
        """The fleet as it was at an earlier commit (e.g. the last applied one), or None."""
        try:
            if self.repo.resolve(sha) is None:
                return None
            return self._parse(sha, self.repo.tree(sha, self.path))[1]
        except GitSourceError:
            return None

    def _parse(self, head: str, fleet_tree: str | None) -> tuple[tuple[Problem, ...], DesiredFleet | None]:
        """The fleet at `head` whose fleet root is the tree `fleet_tree` (None: not there)."""
        if fleet_tree is None:
            return (Problem(self.path, 0, "path", f"{self.path!r} does not exist at commit {head[:12]}"),), None
        if self.checkout is not None:
            result = self.checkout.load(head)
        else:
            with tempfile.TemporaryDirectory(prefix="rev-", dir=self.cache_dir) as tmp:
                root = Path(tmp) / "fleet"
                self.repo.export(head, self.path, root, self.config.limits)
                result = self.parse(root)
        return result.problems, result.fleet if result.ok else None

    def _approvals(self, head: str, since_good: str | None, new_commits: list[CommitInfo]) -> _Found:
        """Approvals over the first-parent history of `head`: the last good revision's plus the new ones."""
        if since_good is not None:
            found = _Found(list(self._good_found.approvals), list(self._good_found.rejected))
            commits = new_commits
        else:
            found = _Found()
            commits = self.repo.first_parent_log(head)
        approvals, rejected = self.scanner.scan(commits)
        found.approvals += approvals
        found.rejected += rejected
        return found

    # -- the loop ---------------------------------------------------------------------------------

    def trigger(self) -> None:
        """Look again now (safe from any thread); bursts collapse into one sync."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            loop.call_soon_threadsafe(wake.set)

    async def run(self, on_revision: Callable[[Revision], Awaitable[None]] | None = None) -> None:
        """Sync now, then on every trigger, watched change, or interval; until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        watcher = None
        local = self.config.local_path
        if local is not None:
            watcher = asyncio.create_task(self._watch(local), name="gitsource-watch")
        try:
            while True:
                self._wake.clear()
                before = self._good
                try:
                    await asyncio.to_thread(self.sync)
                except Exception:  # a bug must not stop the source: log it, keep the last good revision
                    log.exception("git source: sync of %s failed", self.config.url)
                if on_revision is not None and self._good is not None and self._good is not before:
                    await on_revision(self._good)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.interval):
                        await self._wake.wait()
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    async def _watch(self, repo_dir: Path) -> None:
        """Trigger a sync when refs of the local repository change on disk: `refs/` (recursively) and
        the git dir's own files (`HEAD`, `packed-refs`), never `objects/`. watchfiles filters the
        changes it saw on the event loop, in Python, one path at a time: a commit of a thousand
        modules' files writes thousands of objects, and watching the whole git dir held the loop for
        tens of milliseconds on every commit (bench/scale.py's turn sampler)."""
        from watchfiles import awatch

        git_dir = repo_dir / ".git" if (repo_dir / ".git").is_dir() else repo_dir
        if not (git_dir / "refs").is_dir():
            return
        top_level = {str(git_dir / "HEAD"), str(git_dir / "packed-refs")}

        async def wake_on(changes: AsyncIterator[object]) -> None:
            async for _ in changes:
                if self._wake is not None:
                    self._wake.set()

        async with asyncio.TaskGroup() as group:
            group.create_task(wake_on(awatch(git_dir / "refs", watch_filter=None, debounce=200, step=50)))
            top = awatch(
                git_dir, watch_filter=lambda _, path: path in top_level, recursive=False, debounce=200, step=50
            )
            group.create_task(wake_on(top))
