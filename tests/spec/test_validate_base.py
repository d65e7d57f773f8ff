"""`hotswap validate --base REV`: what a pull request would roll out and which interfaces it breaks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hotswap.cli import main
from tests.spec.fleets import MODULE, write_fleet

IFACE = (
    "apiVersion: hotswap.dev/v1\nkind: Interface\nmetadata: {name: adder}\nspec:\n"
    "  package: test:adder@VERSION\n  wit: adder.wit\n"
)
WIT = "package test:adder@VERSION;\n\ninterface api {\n  add: func(a: s32, b: s32) -> s32;\nEXTRA}\n"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def interface(version: str, extra: str = "") -> dict[str, str | bytes | None]:
    return {
        "interfaces/adder.yaml": IFACE.replace("VERSION", version),
        "interfaces/adder.wit": WIT.replace("VERSION", version).replace("EXTRA", extra),
        "modules/adder.yaml": MODULE + f"  implements: test:adder/api@{version}\n",
    }


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    fleet = write_fleet(tmp_path / "fleet", interface("1.0.0", "  sub: func(a: s32, b: s32) -> s32;\n"))
    fleet.joinpath("wasm/adder.wat").write_text(
        '(module (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))'
        ' (func (export "sub") (param i32 i32) (result i32) (i32.sub (local.get 0) (local.get 1))))'
    )
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "base")
    return fleet


def test_reports_what_would_roll_out(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = repo / "modules/adder.yaml"
    module.write_text(module.read_text().replace("version: 1.0.0", "version: 1.1.0"))
    assert main(["validate", str(repo), "--base", "HEAD"]) == 0
    out = capsys.readouterr().out
    assert "rollout: adder: 1.0.0 -> 1.1.0 by canary (version)" in out


def test_breaking_change_without_major_bump_is_refused(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_fleet(repo, interface("1.1.0"))  # `sub` removed, only a minor bump
    assert main(["validate", str(repo), "--base", "HEAD"]) == 1
    captured = capsys.readouterr()
    assert f"{repo}/interfaces/adder.yaml:1: spec.wit:" in captured.out
    assert "2.0.0" in captured.out  # the message names the version needed
    assert "breaking interface change" in captured.err


def test_breaking_change_with_major_bump_waits_for_approval(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_fleet(repo, interface("2.0.0"))
    assert main(["validate", str(repo), "--base", "HEAD"]) == 0
    out = capsys.readouterr().out
    assert "interface adder: breaking:" in out
    assert "test:adder@1.0.0 -> test:adder@2.0.0 is breaking; adder will wait for approval (1 of admin)" in out


def test_no_change(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(repo), "--base", "HEAD"]) == 0
    assert "no change against HEAD" in capsys.readouterr().out


def test_unknown_revision(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(repo), "--base", "nope"]) == 2
    assert "--base: 'nope' is not a revision" in capsys.readouterr().err


def test_outside_git(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(write_fleet(tmp_path)), "--base", "HEAD"]) == 2
    assert "--base:" in capsys.readouterr().err


def test_a_base_with_a_symlink_leaving_the_repository_is_refused_naming_it(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "modules/escape").symlink_to("../../../../../etc")
    git(repo.parent, "add", "-A")
    git(repo.parent, "commit", "-qm", "a symlink out")
    (repo / "modules/escape").unlink()
    assert main(["validate", str(repo), "--base", "HEAD"]) == 2
    assert "--base: modules/escape: file: cannot be exported" in capsys.readouterr().err


def with_rollout_policy(repo: Path) -> None:
    """The Fleet holds every rollout for one admin approval (committed, so it is in the base too)."""
    fleet = repo / "fleet.yaml"
    fleet.write_text(fleet.read_text() + "  policy:\n    approvals:\n      rollouts: {roles: [admin], count: 1}\n")
    git(repo.parent, "commit", "-qam", "policy")


def test_a_change_held_for_approval_is_not_reported_as_at_once(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with_rollout_policy(repo)
    module = repo / "modules/adder.yaml"
    module.write_text(module.read_text() + "  capabilities: {env: {MODE: fast}}\n")
    assert main(["validate", str(repo), "--base", "HEAD"]) == 0
    out = capsys.readouterr().out
    assert "rollout: adder: 1.0.0 changes capabilities applied once approved (1 of [admin])" in out
    assert "at once" not in out


def test_a_new_version_under_a_policy_rolls_out_once_approved(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with_rollout_policy(repo)
    module = repo / "modules/adder.yaml"
    module.write_text(module.read_text().replace("version: 1.0.0", "version: 1.1.0"))
    assert main(["validate", str(repo), "--base", "HEAD"]) == 0
    assert "rollout: adder: 1.0.0 -> 1.1.0 by canary once approved (1 of [admin]) (version)" in capsys.readouterr().out


def test_a_pin_to_a_version_not_yet_live_says_it_waits(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with_rollout_policy(repo)
    module = repo / "modules/adder.yaml"
    pinned = "  versions:\n    - {version: 1.1.0, source: {path: ../wasm/adder.wat}}\n  placement:\n"
    module.write_text(module.read_text() + pinned + "    pins: {us-east-0: 1.1.0}\n")
    assert main(["validate", str(repo), "--base", "HEAD"]) == 0
    out = capsys.readouterr().out
    assert "rollout: adder: 1.0.0 changes placement at once; pins and overrides to 1.1.0 wait for approval" in out


# -- where the fleet is and what the checkout holds: the shapes a pull request's CI job sees -----------


def validate(fleet: Path, base: str) -> subprocess.CompletedProcess[str]:
    """`hotswap validate FLEET --base REV` as a CI job runs it: a process, in the checkout."""
    return subprocess.run(
        [sys.executable, "-m", "hotswap", "validate", str(fleet), "--base", base],
        cwd=fleet,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def bump(fleet: Path, version: str = "1.1.0") -> None:
    module = fleet / "modules/adder.yaml"
    module.write_text(module.read_text().replace("version: 1.0.0", f"version: {version}"))


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A repository with the fleet at its root, its main branch with two commits, and a pull-request
    branch `feature` that bumps adder to 1.1.0."""
    root = tmp_path / "origin"
    write_fleet(root)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "first")
    (root / "README.md").write_text("a fleet\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "docs")
    git(root, "checkout", "-q", "-b", "feature")
    bump(root)
    git(root, "commit", "-qam", "adder 1.1.0")
    git(root, "config", "uploadpack.allowAnySHA1InWant", "true")  # as forges allow fetching by SHA
    return root


ROLLOUT = "rollout: adder: 1.0.0 -> 1.1.0 by canary (version)"


def test_a_root_level_fleet_in_a_pull_request_branch_against_a_branch_name_or_a_sha(origin: Path) -> None:
    for base in (
        "main",
        git(origin, "rev-parse", "main").strip(),
        "HEAD~1",
        git(origin, "rev-list", "--max-parents=0", "HEAD").strip(),
    ):
        done = validate(origin, base)
        assert done.returncode == 0, done.stderr
        assert ROLLOUT in done.stdout, (base, done.stdout)


def test_a_shallow_ci_checkout_fetches_the_base_by_branch_or_sha(origin: Path, tmp_path: Path) -> None:
    main_sha = git(origin, "rev-parse", "main").strip()
    for base in ("main", "origin/main", main_sha):
        clone = tmp_path / f"ci-{len(base)}"
        git(tmp_path, "clone", "-q", "--depth=1", "--branch=feature", f"file://{origin}", str(clone))
        assert git(clone, "rev-parse", "--is-shallow-repository").strip() == "true"
        done = validate(clone, base)
        assert done.returncode == 0, (base, done.stderr)
        assert ROLLOUT in done.stdout, (base, done.stdout)


def test_a_fleet_in_a_sub_folder_of_a_shallow_clone(tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    write_fleet(origin / "deploy" / "fleet")
    git(origin, "init", "-q", "-b", "main")
    git(origin, "add", "-A")
    git(origin, "commit", "-qm", "first")
    git(origin, "checkout", "-q", "-b", "feature")
    bump(origin / "deploy" / "fleet")
    git(origin, "commit", "-qam", "adder 1.1.0")
    clone = tmp_path / "ci"
    git(tmp_path, "clone", "-q", "--depth=1", "--branch=feature", f"file://{origin}", str(clone))
    done = validate(clone / "deploy" / "fleet", "main")
    assert done.returncode == 0, done.stderr
    assert ROLLOUT in done.stdout


def test_a_pull_request_that_adds_the_fleet_compares_with_nothing(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "README.md").write_text("soon a fleet\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "first commit, no fleet yet")
    write_fleet(root / "fleet")
    done = validate(root / "fleet", "main")
    assert done.returncode == 0, done.stderr
    assert "rollout: adder:" in done.stdout and "1.0.0" in done.stdout


def test_a_base_that_cannot_be_found_says_what_was_tried(origin: Path) -> None:
    done = validate(origin, "no-such-branch")
    assert done.returncode == 2
    assert "'no-such-branch' is not a revision" in done.stderr and "nor origin/no-such-branch" in done.stderr
