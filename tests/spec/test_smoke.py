"""The `smoke:` field of a Module: calls with expected results, bounded, checked at file:line."""

from __future__ import annotations

from pathlib import Path

from reconciler.spec.loader import load_fleet
from reconciler.spec.models import MAX_SMOKE_CALLS, MAX_SMOKE_JSON
from tests.spec.fleets import MODULE, write_fleet


def problems(root: Path) -> list[str]:
    return [str(p) for p in load_fleet(root).problems]


def with_smoke(tmp_path: Path, smoke: str) -> Path:
    return write_fleet(tmp_path, {"modules/adder.yaml": MODULE + smoke})


def test_a_module_lists_smoke_calls_with_expected_results(tmp_path: Path) -> None:
    smoke = "  smoke:\n    - {function: add, args: [6, 7], expect: 13}\n    - {function: add, args: [1, 1]}\n"
    result = load_fleet(with_smoke(tmp_path, smoke))
    assert result.ok, result.problems
    assert result.fleet is not None
    calls = result.fleet.modules["adder"].spec.smoke
    assert [(c.function, c.args, c.expect) for c in calls] == [("add", [6, 7], 13), ("add", [1, 1], None)]


def test_a_smoke_call_must_name_an_export(tmp_path: Path) -> None:
    smoke = "  smoke:\n    - {function: add, args: [1, 2], expect: 3}\n    - {function: mul, args: [2, 3]}\n"
    found = problems(with_smoke(tmp_path, smoke))
    assert "modules/adder.yaml:11: spec.smoke[1].function: the binary exports no function 'mul'" in found, found


def test_smoke_calls_are_bounded_in_number(tmp_path: Path) -> None:
    calls = "".join("    - {function: add, args: [1, 2]}\n" for _ in range(MAX_SMOKE_CALLS + 1))
    found = problems(with_smoke(tmp_path, "  smoke:\n" + calls))
    assert any(p.startswith("modules/adder.yaml:9: spec.smoke:") and "at most 10" in p for p in found), found


def test_smoke_args_and_expect_are_bounded_in_size_and_depth(tmp_path: Path) -> None:
    big = "[" + ", ".join(["1"] * MAX_SMOKE_JSON) + "]"
    deep = "[" * 40 + "]" * 40
    smoke = f"  smoke:\n    - {{function: add, args: {big}}}\n    - {{function: add, args: [1, 2], expect: {deep}}}\n"
    found = problems(with_smoke(tmp_path, smoke))
    too_big = "modules/adder.yaml:10: spec.smoke[0]: args:"
    too_deep = "modules/adder.yaml:11: spec.smoke[1]: expect:"
    assert any(p.startswith(too_big) and "at most 4096" in p for p in found), found
    assert any(p.startswith(too_deep) and "nest deeper" in p for p in found), found


def test_a_smoke_call_needs_a_function(tmp_path: Path) -> None:
    found = problems(with_smoke(tmp_path, "  smoke:\n    - {args: [1, 2], expect: 3}\n"))
    assert "modules/adder.yaml:10: spec.smoke[0].function: required field is missing" in found, found
