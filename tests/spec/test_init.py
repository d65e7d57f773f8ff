"""`hotswap init [DIR]`: a minimal fleet that validates, in a new Git repository, with a CI check."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hotswap.cli import main
from reconciler.commands.init import STRATEGY
from reconciler.spec.loader import load_fleet

README = Path(__file__).resolve().parents[2] / "README.md"


def test_init_writes_a_valid_fleet_in_a_new_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "My Fleet"
    assert main(["init", str(folder)]) == 0
    assert "made" in capsys.readouterr().out
    result = load_fleet(folder)
    assert result.ok and result.problems == (), result.problems
    assert result.fleet is not None and result.fleet.name == "my-fleet"
    assert list(result.fleet.modules) == ["adder"] and list(result.fleet.strategies) == ["blue-green"]
    assert main(["validate", str(folder)]) == 0
    workflow = (folder / ".github" / "workflows" / "hotswap.yaml").read_text()
    assert "run: hotswap validate --base origin/main" in workflow and "fetch-depth: 0" in workflow
    top = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=folder, capture_output=True, text=True, check=True
    )
    assert Path(top.stdout.strip()) == folder
    # Once committed, a pull request's check compares with the base and passes.
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "add", "-A"], cwd=folder, check=True)
    subprocess.run([*git, "commit", "-qm", "fleet"], cwd=folder, check=True)
    capsys.readouterr()
    assert main(["validate", str(folder), "--base", "HEAD"]) == 0


def test_the_strategy_is_written_as_the_readme_shows_it() -> None:
    assert STRATEGY in README.read_text()


def test_init_overwrites_nothing_and_keeps_an_existing_repository(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    folder = tmp_path / "fleet"
    assert main(["init", str(folder)]) == 0
    assert not (folder / ".git").exists()  # inside a repository already: no second one
    (folder / "modules" / "adder.yaml").write_text("mine")
    capsys.readouterr()
    assert main(["init", str(folder)]) == 1
    assert "already has fleet.yaml, modules/adder.yaml" in capsys.readouterr().err
    assert (folder / "modules" / "adder.yaml").read_text() == "mine"
