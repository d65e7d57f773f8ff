"""`hotswap approve MODULE@VERSION`: a signed empty commit with the trailer, counted by the source."""

from __future__ import annotations

import pytest

from hotswap.cli import main
from reconciler.spec.approvals import ApprovalRule, evaluate
from tests.git.conftest import Keys, seeded_repo, source_for, standard_trust
from tests.git.gitutil import Workspace


def test_approve_makes_a_signed_commit_that_the_source_counts(
    ws: Workspace, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    remote = ws.remote()
    repo = seeded_repo(ws, keys)
    repo.git("remote", "add", "origin", str(remote))
    repo.push("origin")
    repo.git("branch", "-q", "--set-upstream-to=origin/main")
    repo.git("config", "user.signingkey", str(keys.alice.private))
    repo.git("config", "user.name", "Alice")
    repo.git("config", "user.email", "alice@example.com")
    assert main(["approve", "greeter@1.1.0", "--repo", str(repo.path), "--push"]) == 0
    out = capsys.readouterr().out
    assert "approved greeter@1.1.0 in signed commit" in out and "pushed" in out
    assert "Hotswap-Approve: greeter@1.1.0" in repo.git("log", "-1", "--format=%B")
    source = source_for(ws, remote, standard_trust(keys))
    assert source.sync().ready
    revision = source.latest
    assert revision is not None
    assert evaluate(ApprovalRule.of(["admin"], 1), "greeter", "1.1.0", revision.approvals).satisfied


def test_approve_refuses_a_bad_target(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["approve", "Greeter 1.1", "--repo", str(ws.root)]) == 2
    assert "is not MODULE@VERSION" in capsys.readouterr().err


def test_approve_without_signing_setup_fails_clearly(
    ws: Workspace, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = seeded_repo(ws, keys)
    repo.git("config", "user.signingkey", str(ws.root / "missing-key"))
    assert main(["approve", "greeter@1.1.0", "--repo", str(repo.path)]) == 1
    err = capsys.readouterr().err
    assert "git commit failed" in err


def test_approve_outside_a_repository_fails_clearly(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["approve", "greeter@1.1.0", "--repo", str(ws.root)]) == 1
    assert "not a git repository" in capsys.readouterr().err


def test_push_failure_is_reported_after_the_commit(
    ws: Workspace, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = seeded_repo(ws, keys)
    repo.git("config", "user.signingkey", str(keys.alice.private))
    repo.git("config", "user.name", "Alice")
    repo.git("config", "user.email", "alice@example.com")
    assert main(["approve", "greeter@1.1.0", "--repo", str(repo.path), "--push"]) == 1
    assert "git push failed" in capsys.readouterr().err
