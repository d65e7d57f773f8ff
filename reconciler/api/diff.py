"""What applying a Git ref would change: `GET /api/v1/wasm/diff?ref=REF` (any role; the console's Diff).

    GET /api/v1/wasm/diff[?ref=BRANCH|TAG|SHA]   default: the followed branch's head
        -> {"ref", "sha", "author", "message", "verified", "reason", "actions", "tables", "lines",
            "changes"}; 400 for a ref that is not a plain name, 404 when the repository has no such
            ref, 422 naming file, line and field when the fleet at it does not load

Where it sits: beside the control routes (reconciler/api/control.py). `RefReader` fetches every
branch and tag of the fleet repository into a mirror of its own (`<data-dir>/git/diff.git`, never the
Git source's), resolves the ref, loads the fleet at that commit with the Git source's loader and
input limits, and says whether the commit verifies under the plane's trust root (as an API commit is
vetted: signature, trust root, the signer's role). The handler then plans from the controller's
observed state with that fleet (reconciler.planner.plandiff, the same as `hotswap diff`). Nothing is
applied, committed or recorded. Git runs in a worker thread, one diff at a time, with a deadline.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from reconciler.api.base import ANY_ROLE, ApiDeps, ApiError, require
from reconciler.api.control import CONTROL
from reconciler.errors import ReconcilerError
from reconciler.gitsource.errors import ExportError, GitCommandError
from reconciler.gitsource.gitrepo import GitRepo
from reconciler.gitsource.trust import TrustRoot
from reconciler.gitsource.verify import Verifier, authorised, on_behalf
from reconciler.planner.plandiff import plan_diff
from reconciler.spec.fleet import DesiredFleet, Problem
from reconciler.spec.limits import InputLimits
from reconciler.spec.loader import LoadResult

DIFF_PATH = "/api/v1/wasm/diff"
MAX_REF = 200
FETCH_SECONDS = 60.0
BUSY_SECONDS = 30.0  # how long a diff waits for the one before it
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/+-]*")
_HEX = re.compile(r"[0-9a-f]{4,40}")


class RefNotFoundError(ReconcilerError):
    """The repository has no branch, tag or commit of that name."""


class FleetLoadError(ReconcilerError):
    """The fleet at the commit does not load; `problems` say where."""

    def __init__(self, sha: str, problems: tuple[Problem, ...]) -> None:
        super().__init__(str(problems[0]) if problems else "no fleet")
        self.sha = sha
        self.problems = problems


@dataclass(frozen=True)
class FleetAtRef:
    ref: str
    sha: str
    author: str
    message: str
    fleet: DesiredFleet
    verified: bool
    reason: str | None
    signer: str | None  # the trust principal whose key signed it, when the signature checked out


def check_ref(ref: str) -> str:
    """`ref` when it is a plain branch, tag or commit name (no option, no whitespace, no `..`); else 400."""
    bad = (
        len(ref) > MAX_REF
        or not _REF.fullmatch(ref)
        or ".." in ref
        or "//" in ref
        or ref.endswith((".lock", "/", "."))
        or "/." in ref
    )
    if bad:
        raise ApiError(
            400, "bad_request", f"ref: not a branch, tag or commit name (letters, digits, . _ / + -; {MAX_REF} at most)"
        )
    return ref


@dataclass
class RefReader:
    """Reads the fleet at any ref of the fleet repository, in a mirror of its own."""

    url: str
    branch: str  # the followed branch: the default ref
    path: str  # the fleet root inside the repository
    work_dir: Path
    limits: InputLimits  # the same caps as a revision of the Git source
    parse: Callable[[Path], LoadResult]
    trust: TrustRoot
    verifier: Verifier

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._turn = asyncio.Lock()  # diffs wait here, on the loop, not in a worker thread each
        self._repo: GitRepo | None = None

    async def read_async(self, ref: str) -> FleetAtRef:
        """`read` in a worker thread once the diff before it is done (503 after BUSY_SECONDS)."""
        try:
            async with asyncio.timeout(BUSY_SECONDS):
                await self._turn.acquire()
        except TimeoutError:
            raise ApiError(
                503, "busy", "another diff is still fetching; try again", headers={"Retry-After": "5"}
            ) from None
        try:
            return await asyncio.to_thread(self.read, ref)
        finally:
            self._turn.release()

    def _mirror(self) -> GitRepo:
        if self._repo is None:
            path = self.work_dir / "diff.git"
            if (path / "HEAD").exists():
                repo = GitRepo(path)
                repo.run(["remote", "set-url", "origin", self.url])
            else:
                repo = GitRepo.init_bare(path)
                repo.run(["remote", "add", "origin", self.url])
            self._repo = repo
        return self._repo

    def read(self, ref: str) -> FleetAtRef:
        """The fleet at `ref` (a name `check_ref` accepted); blocking: run it in a thread."""
        if not self._lock.acquire(timeout=BUSY_SECONDS):
            raise ApiError(503, "busy", "another diff is still fetching; try again", headers={"Retry-After": "5"})
        try:
            repo = self._mirror()
            repo.run(
                ["fetch", "--no-tags", "--force", "--quiet", "--prune", "origin", "--",
                 "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"],
                timeout=FETCH_SECONDS,
            )  # fmt: skip
            sha = self._resolve(repo, ref)
            return self._load(repo, ref, sha)
        finally:
            self._lock.release()

    def _resolve(self, repo: GitRepo, ref: str) -> str:
        for candidate in (f"refs/remotes/origin/{ref}", f"refs/tags/{ref}"):
            found = repo.resolve(candidate)
            if found is not None:
                return found
        if _HEX.fullmatch(ref):
            found = repo.resolve(ref)
            if found is None and len(ref) == 40:  # a commit no branch or tag reaches (yet)
                try:
                    repo.run(["fetch", "--no-tags", "--quiet", "origin", "--", ref], timeout=FETCH_SECONDS)
                except GitCommandError:
                    pass
                found = repo.resolve(ref)
            if found is not None:
                return found
        raise RefNotFoundError(ref)

    def _load(self, repo: GitRepo, ref: str, sha: str) -> FleetAtRef:
        author, _, message = repo.run(["log", "-1", "--format=%an <%ae>%x00%B", sha]).partition("\0")
        if not repo.has_path(sha, self.path):
            raise FleetLoadError(sha, (Problem(self.path, 0, "path", f"{self.path!r} does not exist at {sha[:12]}"),))
        with tempfile.TemporaryDirectory(prefix="diff-", dir=self.work_dir) as tmp:
            root = Path(tmp) / "fleet"
            try:
                repo.export(sha, self.path, root, self.limits)
            except ExportError as exc:
                raise FleetLoadError(sha, tuple(exc.problems)) from None
            result = self.parse(root)
        if not result.ok or result.fleet is None:
            errors = tuple(p for p in result.problems if p.severity == "error") or tuple(result.problems)
            raise FleetLoadError(sha, errors)
        verified, reason, signer = self._verify(repo, sha)
        return FleetAtRef(ref, sha, author.strip(), message.strip(), result.fleet, verified, reason, signer)

    def _verify(self, repo: GitRepo, sha: str) -> tuple[bool, str | None, str | None]:
        """Whether the commit is signed by a principal of the trust root whose roles may author it."""
        commit = repo.commits([sha])[0]
        check = self.verifier.check(repo, [sha])[sha]
        trees = repo.trees([sha, *commit.parents[:1]])
        changes = not commit.parents or trees[sha] != trees[commit.parents[0]]
        verdict = authorised(on_behalf(check, commit, self.trust), commit, changes, self.trust.roles)
        reason = None if verdict.trusted else (verdict.reason or verdict.status.value)
        return verdict.trusted, reason, check.principal


DIFF = web.AppKey("diff", RefReader)


def problem_json(problem: Problem) -> dict[str, Any]:
    return {"file": problem.path, "line": problem.line, "field": problem.field, "message": problem.message}


def diff_json(found: FleetAtRef, request: web.Request) -> dict[str, Any]:
    controller = request.app[CONTROL].controller
    revision = controller.source.latest
    approvals = revision.approvals if revision is not None else ()
    snapshot = controller.snapshot(found.fleet, approvals, controller.clock())
    planned = plan_diff(snapshot)
    return {
        "ref": found.ref,
        "sha": found.sha,
        "author": found.author,
        "message": found.message,
        "verified": found.verified,
        "reason": found.reason,
        "signer": found.signer,
        "actions": [a.to_json() for a in planned.actions],
        "tables": [
            {
                "node": node,
                "changes": [
                    {"module": c.module, "version": c.version, "from": c.before, "to": c.after} for c in changes
                ],
            }
            for node, changes in planned.tables
        ],
        "lines": list(planned.lines),
        "changes": planned.changes,
    }


async def diff(request: web.Request) -> web.Response:
    require(request, *ANY_ROLE)
    reader = request.app[DIFF]
    ref = check_ref(request.query.get("ref") or reader.branch)
    try:
        found = await reader.read_async(ref)
    except RefNotFoundError:
        raise ApiError(
            404, "not_found", f"ref {ref!r}: no such branch, tag or commit in the fleet repository"
        ) from None
    except FleetLoadError as exc:
        return web.json_response(
            {
                "error": "invalid_fleet",
                "message": f"the fleet at {ref} ({exc.sha[:12]}) does not load: {exc}",
                "sha": exc.sha,
                "problems": [problem_json(p) for p in exc.problems],
            },
            status=422,
        )
    except GitCommandError as exc:
        raise ApiError(502, "fetch_failed", f"fetching the fleet repository failed: {exc.stderr or exc}") from None
    return web.json_response(diff_json(found, request))


def setup(reader: RefReader) -> Callable[[web.Application, ApiDeps], None]:
    """The route file's setup, bound to the control plane's reader."""

    def install(app: web.Application, deps: ApiDeps) -> None:
        app[DIFF] = reader
        app.router.add_get(DIFF_PATH, diff)

    return install
