"""Which paths of a fleet the loader reads as YAML: a string test that must agree with the
PurePosixPath reading it replaced (suffix `.yaml`/`.yml`, no hidden part) on every path."""

from __future__ import annotations

from pathlib import PurePosixPath

from hypothesis import given
from hypothesis import strategies as st

from reconciler.spec.limits import is_fleet_yaml

PART = st.sampled_from(["a", "b.yaml", "c.yml", ".git", ".", "..", "", "d.YAML", "e.yaml.bak", ".yaml", "f.g.yml"])


def by_path(rel: str) -> bool:
    path = PurePosixPath(rel)
    return path.suffix in (".yaml", ".yml") and not any(part.startswith(".") for part in path.parts)


@given(st.lists(PART, min_size=1, max_size=5), st.booleans())
def test_the_string_test_reads_paths_as_purepath_does(parts: list[str], absolute: bool) -> None:
    rel = ("/" if absolute else "") + "/".join(parts)
    assert is_fleet_yaml(rel) == by_path(rel), rel


def test_examples() -> None:
    assert is_fleet_yaml("modules/calc.yaml") and is_fleet_yaml("./fleet.yml")
    assert not is_fleet_yaml(".github/workflows/ci.yaml") and not is_fleet_yaml("wasm/calc.wat")
