"""API writes as Git commits: the control plane's side of "Git is the source of truth" (DESIGN.md 4, 5).

Where it sits: the API's write endpoints (`POST /deployments`, `POST /deployments/{id}/execute`,
`POST /interfaces`, `POST /interfaces/{id}/approve`) call a `GitWriter`. It keeps its own clone of
the fleet repository under `<data-dir>/git/api-work`, and for each write: fetch the tracked branch,
start from its head, edit the YAML with ruamel.yaml's round-trip mode (comments, quotes, flow maps
and indentation survive, so the diff is the change and nothing else), commit signed with the
control plane's own SSH key (`<data-dir>/auth/git-signing-key`, made on first use, or
`hotswap serve --git-signing-key`), with `Hotswap-Requested-By:` / `Hotswap-Approved-By:` trailers
naming the calling principal, check the commit as the Git source will (`vet`: signature, trust root,
the roles it counts for) and push. The control plane is a principal of the trust file with
`actsFor` (reconciler.gitsource.acting); a commit that would not verify is never pushed.

A change goes to a new branch for review, or to the tracked branch when the caller says so (the
Fleet policy `apiCommitsToBranch: true`); an approval always goes to the tracked branch, where the
Git source looks for approvals. A push that loses a race is redone on the new head (up to
PUSH_ATTEMPTS times, then reported). Nothing is ever written into a working tree: when the
repository is a local one whose target branch is checked out, the write is refused before any
commit (follow a bare repository or a remote instead), and so is a push the remote refuses.
"""

from __future__ import annotations

import io
import itertools
import re
import secrets
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from reconciler.errors import ReconcilerError
from reconciler.gitsource.errors import GitCommandError
from reconciler.gitsource.gitrepo import GitRepo

__all__ = ["DocumentNotFoundError", "GitWriteError", "GitWriter", "WriteResult", "WriterConfig", "find_document"]

PUSH_ATTEMPTS = 3
# What git says when the branch moved since it was fetched (a race lost, redone on the new head).
LOST_RACE = ("non-fast-forward", "fetch first", "the remote contains work that you do", "stale info")
Edit = Callable[[Path], Sequence[str]]  # edits files under the fleet root; returns the paths it changed
# Checks a commit of the writer's clone as the Git source will; the reason it would not verify, or None.
Vet = Callable[[GitRepo, str], str | None]


class GitWriteError(ReconcilerError):
    """A write the repository refused (push rejected, working tree dirty, git failed)."""


class DocumentNotFoundError(GitWriteError):
    """No document of that kind and name in the fleet at the branch's head."""


@dataclass(frozen=True)
class WriterConfig:
    url: str  # the repository the control plane follows (a local path or any URL git can push to)
    branch: str
    path: str  # the fleet root inside the repository
    work_dir: Path
    key: Path  # SSH private key that signs the commits
    name: str = "hotswap control plane"
    email: str = "hotswap@control-plane.invalid"


@dataclass(frozen=True)
class WriteResult:
    sha: str
    branch: str
    review: bool  # True: on a new branch waiting for review; False: on the tracked branch
    files: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"commit": self.sha, "branch": self.branch, "review": self.review, "files": list(self.files)}


def make_ssh_key(path: Path, comment: str) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{secrets.token_hex(4)}")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(partial)],
        check=True,
        capture_output=True,
        timeout=30,
        start_new_session=True,  # a Ctrl-C meant for `hotswap up` must not kill it half-way
    )
    if path.exists():  # another process made one first
        partial.unlink()
        partial.with_name(partial.name + ".pub").unlink()
        return
    partial.with_name(partial.name + ".pub").replace(path.with_name(path.name + ".pub"))
    partial.replace(path)


# -- YAML round trip ---------------------------------------------------------------------------------


def _guess_indent(text: str) -> tuple[int, int, int]:
    """(mapping, sequence, offset) indentation as ruamel.yaml names them, read from the file's layout."""
    mapping, offset = 2, 0
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    for before, line in itertools.pairwise(lines):
        key = re.match(r"^( *)[^\s#-][^#]*:\s*(#.*)?$", before)
        if key is None:
            continue
        parent = len(key.group(1))
        indent = len(line) - len(line.lstrip(" "))
        if indent <= parent:
            continue
        if line.lstrip().startswith("- "):
            offset = indent - parent
        else:
            mapping = indent - parent
    return mapping, offset + 2, offset


def _yaml(text: str) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    mapping, sequence, offset = _guess_indent(text)
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml


def find_document(root: Path, kind: str, name: str, hint: str | None = None) -> Path:
    """The file under the fleet root holding the `kind` document named `name` (`hint` is looked at first)."""
    files = sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    files = [p for p in files if not any(part.startswith(".") for part in p.relative_to(root).parts)]
    if hint is not None and (root / hint) in files:
        files.remove(root / hint)
        files.insert(0, root / hint)
    for path in files:
        try:
            docs = list(YAML(typ="safe", pure=True).load_all(path.read_text()))
        except (YAMLError, ValueError, UnicodeDecodeError):
            continue
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") == kind:
                meta = doc.get("metadata")
                if isinstance(meta, dict) and meta.get("name") == name:
                    return path
    raise DocumentNotFoundError(f"no {kind} named {name!r} in the fleet")


def edit_document(path: Path, kind: str, name: str, change: Callable[[CommentedMap], None]) -> bool:
    """Apply `change` to the `kind`/`name` document of a YAML file, round trip; False if nothing changed."""
    text = path.read_text()
    yaml = _yaml(text)
    docs = list(yaml.load_all(text))
    for doc in docs:
        if isinstance(doc, CommentedMap) and doc.get("kind") == kind:
            meta = doc.get("metadata")
            if isinstance(meta, dict) and meta.get("name") == name:
                change(doc)
                break
    else:
        raise DocumentNotFoundError(f"{path.name}: no {kind} named {name!r}")
    out = io.StringIO()
    if len(docs) == 1:
        yaml.explicit_start = text.lstrip().startswith("---")
        yaml.dump(docs[0], out)
    else:
        yaml.dump_all(docs, out)
    new = out.getvalue()
    if new == text:
        return False
    path.write_text(new)
    return True


def flow_map(**items: Any) -> CommentedMap:
    """A mapping written on one line, `{key: value}`, as the fleet files write sources."""
    value = CommentedMap(items)
    value.fa.set_flow_style()
    return value


# -- the writer --------------------------------------------------------------------------------------


class GitWriter:
    """Commits on behalf of API callers, one at a time, into the repository the control plane follows."""

    def __init__(self, config: WriterConfig, vet: Vet | None = None) -> None:
        self.config = config
        self.vet = vet
        self._lock = threading.Lock()
        self._repo: GitRepo | None = None

    @property
    def public_key(self) -> str:
        """The SSH public key the commits are signed with (a line for trust.yaml)."""
        make_ssh_key(self.config.key, self.config.name.replace(" ", "-"))
        return self.config.key.with_name(self.config.key.name + ".pub").read_text().strip()

    @property
    def _local_target(self) -> bool:
        url = self.config.url.removeprefix("file://")
        return "://" not in url and not re.match(r"^[\w.-]+@[\w.-]+:", url)

    def _open(self) -> GitRepo:
        if self._repo is not None:
            return self._repo
        work = self.config.work_dir
        if not (work / ".git").exists():
            work.mkdir(parents=True, exist_ok=True)
            subprocess.run(["git", "init", "-q", str(work)], check=True, capture_output=True, timeout=60)
            repo = GitRepo(work)
            repo.run(["remote", "add", "origin", self.config.url])
        else:
            repo = GitRepo(work)
            repo.run(["remote", "set-url", "origin", self.config.url])
        self._repo = repo
        return repo

    def _config(self) -> list[str]:
        return [
            f"user.name={self.config.name}",
            f"user.email={self.config.email}",
            "gpg.format=ssh",
            f"user.signingkey={self.config.key}",
            "commit.gpgsign=true",
            "core.hooksPath=/dev/null",
        ]

    def _start(self, repo: GitRepo) -> str:
        """Fetch the tracked branch and check its head out, clean; the head's SHA."""
        branch = self.config.branch
        try:
            repo.run(
                [
                    "fetch",
                    "--no-tags",
                    "--force",
                    "--quiet",
                    "origin",
                    f"+refs/heads/{branch}:refs/remotes/origin/{branch}",
                ],
                timeout=120,
            )
            repo.run(["checkout", "--quiet", "--force", "-B", "api-work", f"refs/remotes/origin/{branch}"])
            repo.run(["clean", "-q", "-fdx"])
        except GitCommandError as exc:
            raise GitWriteError(f"cannot read branch {branch!r} of {self.config.url}: {exc.stderr or exc}") from None
        return repo.run(["rev-parse", "HEAD"]).strip()

    def _commit(self, repo: GitRepo, message: str, files: Sequence[str]) -> str:
        try:
            if files:
                repo.run(["add", "--", *files])
            note = self.config.work_dir / ".git" / "API_COMMIT_MSG"
            note.write_text(message)
            repo.run(
                ["commit", "--quiet", "-S", "--allow-empty", "--cleanup=strip", "-F", str(note)], config=self._config()
            )
        except GitCommandError as exc:
            raise GitWriteError(f"git commit failed: {exc.stderr or exc}") from None
        return repo.run(["rev-parse", "HEAD"]).strip()

    def _refuse_working_tree(self, target: str) -> None:
        """A local repository with `target` checked out in a working tree is never pushed to."""
        if not self._local_target:
            return
        path = self.config.url.removeprefix("file://")
        done = subprocess.run(
            ["git", "-C", path, "worktree", "list", "--porcelain"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            return  # not readable as a repository here: the push will say what is wrong
        checked_out = [line.split(" ", 1)[1] for line in done.stdout.splitlines() if line.startswith("branch ")]
        if f"refs/heads/{target}" in checked_out:
            raise GitWriteError(
                f"branch {target!r} is checked out in a working tree of {path}; the control plane never writes "
                "into a working tree: follow a bare repository or a remote that people push to (hotswap serve "
                "--repo URL), or commit there yourself (hotswap approve MODULE@VERSION)"
            )

    def _push(self, repo: GitRepo, target: str) -> bool:
        """Push HEAD to `target`; False when the branch moved meanwhile (fetch and redo)."""
        try:
            repo.run(["push", "--quiet", "--porcelain", "origin", f"HEAD:refs/heads/{target}"], timeout=120)
        except GitCommandError as exc:
            text = exc.stderr or str(exc)
            if any(sign in text for sign in LOST_RACE):
                return False
            refused = f"{self.config.url} refused the push to {target!r}, nothing was written: {text}"
            raise GitWriteError(refused) from None
        return True

    def write(
        self,
        edit: Edit,
        subject: str,
        body: str,
        trailers: Sequence[tuple[str, str]],
        *,
        review_branch: str | None,
    ) -> WriteResult:
        """Edit the fleet at the branch's head, commit signed, push to `review_branch` or the tracked branch."""
        target = review_branch or self.config.branch
        with self._lock:
            make_ssh_key(self.config.key, self.config.name.replace(" ", "-"))
            self._refuse_working_tree(target)
            repo = self._open()
            for _ in range(PUSH_ATTEMPTS):
                self._start(repo)
                root = self.config.work_dir / self.config.path if self.config.path else self.config.work_dir
                changed = [str((root / f).relative_to(self.config.work_dir)) for f in edit(root)]
                sha = self._commit(repo, _message(subject, body, trailers), changed)
                refused = self.vet(repo, sha) if self.vet is not None and review_branch is None else None
                if refused is not None:
                    raise GitWriteError(f"the commit would not verify, so it was not pushed: {refused}")
                if self._push(repo, target):
                    return WriteResult(sha, target, review_branch is not None, tuple(changed))
                if review_branch is not None:
                    raise GitWriteError(f"branch {review_branch!r} already exists in {self.config.url}")
            raise GitWriteError(f"{self.config.branch} kept moving; gave up after {PUSH_ATTEMPTS} attempts")


def _message(subject: str, body: str, trailers: Sequence[tuple[str, str]]) -> str:
    for key, value in trailers:  # a line break would start a trailer of the writer's choosing
        if any(c in f"{key}{value}" for c in "\r\n") or not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", key):
            raise GitWriteError(f"trailer {key!r}: {value!r} is not one line; nothing was written")
    parts = [subject.strip()]
    if body.strip():
        parts.append(body.strip())
    if trailers:
        parts.append("\n".join(f"{key}: {value}" for key, value in trailers))
    return "\n\n".join(parts) + "\n"
