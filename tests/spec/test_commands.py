"""`hotswap validate`, `hotswap schema` and the verb table, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hotswap.cli import main
from reconciler.commands.schema import render, schemas
from tests.spec.fleets import MODULE, write_fleet


def test_validate_example_prints_a_one_line_summary(example_fleet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(example_fleet)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert out[0].startswith("valid: fleet 'example' (dev): 4 modules (5 versions), 5 strategies, 2 interfaces")


def test_validate_lists_every_problem_under_the_given_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_fleet(tmp_path / "fleet", {"modules/adder.yaml": MODULE.replace("1.0.0", "x") + "  limts: {}\n"})
    assert main(["validate", str(root)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines == [
        f"{root}/modules/adder.yaml:6: spec.version: 'x' is not semver (MAJOR.MINOR.PATCH, e.g. 1.2.0)",
        f"{root}/modules/adder.yaml:9: spec.limts: unknown field; did you mean 'limits'?",
    ]
    assert captured.err.strip() == "invalid: 2 problems in 1 file"


def test_validate_in_the_fleet_dir_prints_relative_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_fleet(tmp_path, {"modules/adder.yaml": MODULE.replace("canary", "nope")})
    monkeypatch.chdir(root)
    assert main(["validate"]) == 1
    assert capsys.readouterr().out.strip() == "modules/adder.yaml:8: spec.rollout: no RolloutStrategy named 'nope'"


def test_schemas_in_the_repository_are_up_to_date(repo_root: Path) -> None:
    expected = schemas()
    on_disk = {p.name for p in (repo_root / "schemas").glob("*.schema.json")}
    assert on_disk == set(expected), "run `hotswap schema` to regenerate schemas/"
    for name, schema in expected.items():
        assert (repo_root / "schemas" / name).read_text() == render(schema), (
            f"schemas/{name} is stale: run `hotswap schema`"
        )


def test_schema_verb_writes_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "--out", str(tmp_path)]) == 0
    module = json.loads((tmp_path / "module.schema.json").read_text())
    limits = module["$defs"]["Limits"]["properties"]
    assert limits["memoryMB"] == {"default": 128, "maximum": 512, "minimum": 1, "title": "Memorymb", "type": "integer"}
    assert module["additionalProperties"] is False


def test_example_files_point_editors_at_the_schemas(example_fleet: Path, repo_root: Path) -> None:
    for path in example_fleet.rglob("*.yaml"):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        target = (path.parent / first.split("=", 1)[1]).resolve()
        assert target.exists() and target.parent == repo_root / "schemas", path


def test_help_lists_verbs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "validate" in out and "edge" in out and "serve" in out


def test_unknown_verb(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "unknown verb 'frobnicate'" in capsys.readouterr().err


def test_no_verb_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: hotswap VERB" in capsys.readouterr().out


def test_console_script_runs_as_a_process(example_fleet: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hotswap", "validate", str(example_fleet)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("valid: ")


def test_validate_prints_a_strategy_that_cannot_progress_and_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    strategy = (
        "apiVersion: hotswap.dev/v1\nkind: RolloutStrategy\nmetadata: {name: bg}\nspec:\n  type: BlueGreen\n"
        "  analysis: {minRequests: 10}\n"
    )
    root = write_fleet(tmp_path / "fleet", {"strategies/bg.yaml": strategy})
    assert main(["validate", str(root)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(
        f"{root}/strategies/bg.yaml:6: spec.analysis.minRequests: warning: this strategy cannot progress"
    )
    assert lines[1].startswith("valid: ")
