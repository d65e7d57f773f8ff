"""The control plane's own clone and push (reconciler.gitsource.gitwrite): a push that loses a race is redone
on the new head, a push the remote refuses and a commit that would not verify are reported with
nothing written, and a branch checked out in a working tree is never written to."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from reconciler.gitsource.gitrepo import GitRepo
from reconciler.gitsource.gitwrite import GitWriteError, GitWriter, Vet, WriterConfig
from tests.git.gitutil import Workspace, git


def writer(ws: Workspace, url: Path, vet: Vet | None = None) -> GitWriter:
    config = WriterConfig(str(url), "main", "fleet", ws.root / "api-work", ws.root / "cp" / "git-signing-key")
    return GitWriter(config, vet)


def remote_with_fleet(ws: Workspace) -> tuple[Path, Path]:
    work = ws.repo()
    work.write("fleet/fleet.yaml", "kind: Fleet\n")
    work.commit("first")
    remote = ws.remote()
    work.git("remote", "add", "origin", str(remote))
    work.push("origin")
    return remote, work.path


def approve(w: GitWriter) -> str:
    result = w.write(lambda root: [], "approve x", "", [("Hotswap-Approve", "x@1.0.0")], review_branch=None)
    return result.sha


def test_a_push_that_loses_a_race_is_redone_on_the_new_head(ws: Workspace) -> None:
    remote, work = remote_with_fleet(ws)
    raced: list[str] = []

    def someone_pushes_first(_repo: GitRepo, _sha: str) -> str | None:
        if not raced:  # between our commit and our push, another commit lands on main
            (work / "README.md").write_text("meanwhile\n")
            git(work, "add", "-A")
            git(work, "commit", "-qm", "meanwhile")
            git(work, "push", "-q", "origin", "HEAD:refs/heads/main")
            raced.append(git(work, "rev-parse", "HEAD").strip())
        return None

    sha = approve(writer(ws, remote, someone_pushes_first))
    assert git(remote, "rev-parse", "main").strip() == sha
    assert git(remote, "rev-parse", f"{sha}^").strip() == raced[0]  # on top of the winner, nothing lost


def test_a_commit_that_would_not_verify_is_not_pushed(ws: Workspace) -> None:
    remote, _ = remote_with_fleet(ws)
    head = git(remote, "rev-parse", "main").strip()
    with pytest.raises(GitWriteError, match=r"would not verify.*no principal holds it"):
        approve(writer(ws, remote, lambda _repo, _sha: "no principal holds it"))
    assert git(remote, "rev-parse", "main").strip() == head


def test_a_push_the_remote_refuses_is_reported_with_nothing_written(ws: Workspace) -> None:
    remote, _ = remote_with_fleet(ws)
    head = git(remote, "rev-parse", "main").strip()
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'main is protected' >&2\nexit 1\n")
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(GitWriteError, match=r"refused the push to 'main'.*main is protected"):
        approve(writer(ws, remote))
    assert git(remote, "rev-parse", "main").strip() == head


def test_a_branch_checked_out_in_a_working_tree_is_never_written_to(ws: Workspace) -> None:
    _, work = remote_with_fleet(ws)
    head = git(work, "rev-parse", "HEAD").strip()
    with pytest.raises(GitWriteError, match="checked out in a working tree"):
        approve(writer(ws, work))
    assert git(work, "rev-parse", "main").strip() == head
    assert not (ws.root / "api-work").exists()  # refused before any commit was made
