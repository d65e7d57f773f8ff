"""UpdateAutomation's choice of tag and its edit, with a registry and a writer of the test's own."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.apply.updates import Proposal, UpdateAutomation
from reconciler.gitsource.gitwrite import WriteResult
from reconciler.spec.ocireference import Reference
from reconciler.spec.updates import ModuleUpdate

DIGEST = "sha256:" + "cd" * 32


@dataclass
class Registry:
    tag_list: list[str]

    def tags(self, ref: Reference) -> list[str]:
        return self.tag_list

    def resolve(self, ref: Reference) -> str:
        return DIGEST


@dataclass
class Writer:
    root: Path
    written: list[str]

    def write(
        self, edit: Callable[[Path], Sequence[str]], subject: str, body: str, trailers: Any, *, review_branch: Any
    ) -> WriteResult:
        self.written.extend(edit(self.root))
        return WriteResult("0" * 40, "main", False, tuple(self.written))


def update(**spec: Any) -> ModuleUpdate:
    return ModuleUpdate.model_validate(
        {
            "apiVersion": "hotswap.dev/v1",
            "kind": "ModuleUpdate",
            "metadata": {"name": "calc"},
            "spec": {"module": "calc", "repository": "127.0.0.1:5000/team/calc", **spec},
        }
    )


def automation(tags: list[str], root: Path | None = None) -> UpdateAutomation:
    robot = UpdateAutomation(controller=None, writer=Writer(root or Path("."), []), oci=Registry(tags))  # type: ignore[arg-type]
    return robot


def test_the_newest_tag_in_range_above_the_current_version_is_proposed() -> None:
    robot = automation(["1.0.0", "1.2.0", "v1.3.0", "2.0.0", "1.4.0-rc.1", "latest", "01.5.0"])
    proposal = robot.check(update(semver="^1.0.0"), "1.2.0")
    assert proposal == Proposal("calc", "1.3.0", "v1.3.0", f"127.0.0.1:5000/team/calc:v1.3.0@{DIGEST}")
    assert robot.check(update(semver="^1.0.0"), "1.3.0") is None


def test_build_metadata_on_the_current_version_still_sets_the_floor() -> None:
    robot = automation(["1.0.0", "1.2.0", "1.3.0"])
    assert robot.check(update(semver="*"), "2.0.0+build.7") is None  # never a downgrade
    assert robot.check(update(semver="*"), "1.3.0+build.7") is None


def test_the_bump_drops_the_old_builds_pin_and_keeps_comments(tmp_path: Path) -> None:
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "calc.yaml").write_text(
        "# calc: comments stay\napiVersion: hotswap.dev/v1\nkind: Module\nmetadata: {name: calc}\nspec:\n"
        "  version: 1.0.0  # the release\n  source: {path: ../wasm/calc.wat}\n  sha256: " + "ab" * 32 + "\n"
    )
    robot = automation([], tmp_path)
    robot.write(update(), Proposal("calc", "1.1.0", "1.1.0", f"127.0.0.1:5000/team/calc:1.1.0@{DIGEST}"))
    text = (tmp_path / "modules" / "calc.yaml").read_text()
    assert "sha256:" + "ab" * 32 not in text and "  sha256:" not in text
    assert f"source: {{oci: 127.0.0.1:5000/team/calc:1.1.0@{DIGEST}}}" in text
    assert "# calc: comments stay" in text and "version: 1.1.0" in text
