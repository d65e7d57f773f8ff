"""`source.oci` and the ModuleUpdate kind in a fleet, and the semver ranges ModuleUpdate takes."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.spec.loader import load_fleet
from reconciler.spec.updates import Range, parse_version

DIGEST = "sha256:" + "ab" * 32
FLEET = """\
apiVersion: hotswap.dev/v1
kind: Fleet
metadata: {name: f}
spec:
  environment: ENV
  regions: [{name: us-east}]
"""
MODULE = """\
apiVersion: hotswap.dev/v1
kind: Module
metadata: {name: calc}
spec:
  version: 1.0.0
  source: {oci: SOURCE}
"""
UPDATE = """\
apiVersion: hotswap.dev/v1
kind: ModuleUpdate
metadata: {name: calc-updates}
spec:
  module: MODULE
  repository: 127.0.0.1:5000/team/calc
  semver: RANGE
  intervalSeconds: 30
"""


def fleet(
    tmp_path: Path, *, env: str = "dev", source: str, module: str = "calc", semver: str = "'^1.0.0'"
) -> list[str]:
    (tmp_path / "fleet.yaml").write_text(FLEET.replace("ENV", env))
    (tmp_path / "modules").mkdir(exist_ok=True)
    (tmp_path / "modules" / "calc.yaml").write_text(MODULE.replace("SOURCE", source))
    (tmp_path / "updates.yaml").write_text(UPDATE.replace("MODULE", module).replace("RANGE", semver))
    result = load_fleet(tmp_path)
    return [str(p) for p in result.problems]


def test_an_oci_source_with_a_digest_loads(tmp_path: Path) -> None:
    assert fleet(tmp_path, env="production", source=f"127.0.0.1:5000/team/calc:1.0.0@{DIGEST}") == []
    result = load_fleet(tmp_path)
    assert result.fleet is not None
    assert result.fleet.updates["calc-updates"].spec.module == "calc"
    assert result.fleet.modules["calc"].spec.source.oci == f"127.0.0.1:5000/team/calc:1.0.0@{DIGEST}"


def test_a_tag_alone_is_for_dev_fleets_only(tmp_path: Path) -> None:
    assert fleet(tmp_path, env="dev", source="127.0.0.1:5000/team/calc:1.0.0") == []
    problems = fleet(tmp_path, env="production", source="127.0.0.1:5000/team/calc:1.0.0")
    assert problems == [
        "modules/calc.yaml:6: spec.source.oci: a production fleet names the artifact by digest: "
        "127.0.0.1:5000/team/calc:1.0.0@sha256:... (`hotswap push` prints it); a tag alone only in a dev fleet"
    ]


def test_a_malformed_reference_names_the_field(tmp_path: Path) -> None:
    problems = fleet(tmp_path, source="team/calc@sha256:1234")
    assert problems[0] == (
        "modules/calc.yaml:6: spec.source: 'team/calc@sha256:1234': "
        "expected REGISTRY/REPO:TAG@sha256:DIGEST, with the registry's host"
    ), problems


def test_two_kinds_of_source_at_once_are_refused(tmp_path: Path) -> None:
    problems = fleet(tmp_path, source=f"127.0.0.1:5000/team/calc:1.0.0, digest: {DIGEST}")
    assert any("give exactly one of `path`, `digest` or `oci`" in p for p in problems), problems


def test_a_module_update_of_an_unknown_module_says_which_ones_exist(tmp_path: Path) -> None:
    problems = fleet(tmp_path, source=f"127.0.0.1:5000/team/calc:1.0.0@{DIGEST}", module="clac")
    assert problems == ["updates.yaml:5: spec.module: no Module named 'clac'; did you mean 'calc'?"]


def test_a_bad_range_is_refused(tmp_path: Path) -> None:
    problems = fleet(tmp_path, source=f"127.0.0.1:5000/team/calc:1.0.0@{DIGEST}", semver="'>=banana'")
    assert len(problems) == 1 and "is not a semver comparator" in problems[0], problems


@pytest.mark.parametrize(
    ("text", "inside", "outside"),
    [
        (">=1.0.0 <2.0.0", ["1.0.0", "1.9.9", "v1.5.0"], ["0.9.0", "2.0.0", "1.5.0-rc.1"]),
        ("^1.2.3", ["1.2.3", "1.9.0"], ["1.2.2", "2.0.0"]),
        ("^0.2.3", ["0.2.3", "0.2.9"], ["0.3.0"]),
        ("~1.2.3", ["1.2.3", "1.2.9"], ["1.3.0"]),
        ("1.x", ["1.0.0", "1.99.0"], ["2.0.0", "0.1.0"]),
        ("1.2", ["1.2.0", "1.2.7"], ["1.3.0"]),
        ("*", ["0.0.1", "9.0.0"], ["1.0.0-beta"]),
        (">=1.0.0-rc.1", ["1.0.0-rc.2", "1.0.0", "2.0.0"], ["1.0.0-rc.0"]),
        ("<1.0.0 || >=3.0.0", ["0.5.0", "3.1.0"], ["1.0.0", "2.5.0"]),
    ],
)
def test_ranges(text: str, inside: list[str], outside: list[str]) -> None:
    allowed = Range(text)
    for tag in inside:
        version = parse_version(tag)
        assert version is not None and version in allowed, (text, tag)
    for tag in outside:
        version = parse_version(tag)
        assert version is not None and version not in allowed, (text, tag)


def test_tags_that_are_not_semver_are_none() -> None:
    assert parse_version("latest") is None and parse_version("1.2") is None and parse_version("main-abc") is None


@pytest.mark.parametrize(
    ("text", "outside"),
    [
        ("^1.2.0-rc.1", ["2.0.0-rc.1", "1.9.0-beta.1"]),  # pre-releases of other versions never match
        (">=1.0.0-rc.1 <2.0.0", ["2.0.0-alpha", "1.5.0-beta"]),
        ("=1.5.0-rc.1 || ^1.0.0", ["1.7.0-beta"]),
    ],
)
def test_a_prerelease_matches_only_beside_its_own_version(text: str, outside: list[str]) -> None:
    for tag in outside:
        version = parse_version(tag)
        assert version is not None and version not in Range(text), (text, tag)


@pytest.mark.parametrize("text", ["1.x.3", "=>1.2.0", "<>1.0.0", "^1.x", "~>1.0.0"])
def test_malformed_comparators_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a semver comparator"):
        Range(text)


def test_a_repository_must_be_what_source_oci_takes(tmp_path: Path) -> None:
    """The bump writes REPOSITORY:TAG@DIGEST into source.oci: a repository without a registry host
    would make the automation commit a fleet that does not load."""
    (tmp_path / "fleet.yaml").write_text(FLEET.replace("ENV", "dev"))
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "calc.yaml").write_text(
        MODULE.replace("SOURCE", f"127.0.0.1:5000/team/calc:1.0.0@{DIGEST}")
    )
    update = UPDATE.replace("MODULE", "calc").replace("RANGE", "'^1.0.0'")
    (tmp_path / "updates.yaml").write_text(update.replace("127.0.0.1:5000/team/calc", "myregistry/team/calc"))
    problems = [str(p) for p in load_fleet(tmp_path).problems]
    assert len(problems) == 1 and "spec.repository" in problems[0] and "registry's host" in problems[0], problems
