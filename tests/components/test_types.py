"""The component convention: every WIT type family round-trips through JSON; mismatches are 400s."""

from __future__ import annotations

from typing import Any

import pytest

from edge import wasm
from edge.errors import BadRequestError, NotFoundError
from edge.runtime import Runtime, Sandbox
from tests.components.conftest import FAMILIES

VALUES: dict[str, list[Any]] = {
    "bool": [True, False],
    "s8": [-128, 127],
    "u8": [0, 255],
    "s16": [-32768, 32767],
    "u16": [0, 65535],
    "s32": [-(2**31), 2**31 - 1],
    "u32": [0, 2**32 - 1],
    "s64": [-(2**63), 2**63 - 1],
    "u64": [0, 2**64 - 1],
    "f32": [1.5, -0.25],
    "f64": [3.141592653589793, -1e300],
    "char": ["a", "€", "🦀"],
    "string": ["", "héllo, wörld"],
    "list": [["a", "b"], []],
    "record": [{"x": 1, "y": -2}],
    "tuple": [[7, "seven"]],
    "option": [None, 5],
    "nested-option": [None, {"some": None}, {"some": "x"}],
    "result": [{"ok": 1}, {"err": "bad"}],
    "bare-result": [{"ok": None}, {"err": None}],
    "variant": [{"circle": 1.5}, {"square": {"x": 1, "y": 2}}, "empty"],
    "enum": ["red", "blue"],
    "flags": [["read", "exec"], []],
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_wit_type_family_round_trips_through_json(runtime: Runtime, kitchen: bytes, family: str) -> None:
    loaded = runtime.load_any(kitchen, Sandbox())
    values = VALUES[family]
    assert loaded.invoke(loaded.prepare(f"echo-{family}", [values])).value == values
    assert loaded.invoke(loaded.prepare(f"echo-{family}", {"x": values})).value == values  # by name


def test_inspect_describes_a_component_from_its_type(kitchen: bytes) -> None:
    info = wasm.inspect(kitchen)
    assert info.component and not info.problems
    echo = info.export("echo-record")
    assert echo is not None and echo.convention == "component"
    assert str(echo.sig) == "(x: list<record {x: s32, y: s32}>) -> (list<record {x: s32, y: s32}>)"
    assert str(info.functions()["echo-variant"].sig).startswith("(x: list<variant {circle(f64), square(record")


@pytest.mark.parametrize(
    ("function", "args", "message"),
    [
        ("echo-record", [[{"x": "a", "y": 1}]], 'parameter x[0].x: expected s32, got "a"'),
        ("echo-record", [[{"x": 1}]], "parameter x[0].y: expected s32 (the field is missing)"),
        ("echo-record", [[{"x": 1, "y": 2, "z": 3}]], "x[0].z: expected no such field (fields: x, y)"),
        ("echo-u8", [[256]], "parameter x[0]: expected u8 (0..255), got 256"),
        ("echo-s32", [[1.5]], "expected s32, got 1.5"),
        ("echo-bool", [[1]], "expected bool, got 1"),
        ("echo-char", [["ab"]], "expected char"),
        ("echo-enum", [["purple"]], "expected enum {red, green, blue}"),
        ("echo-flags", [["read", "fly"]], "expected flags {read, write, exec} as an array of names"),
        ("echo-variant", [[{"triangle": 1}]], "expected variant {circle(f64)"),
        ("echo-variant", [[{"empty": 1}]], "x[0].empty: expected null (the case has no payload)"),
        ("echo-result", [[{"ok": "x"}]], "parameter x[0].ok: expected u32"),
        ("echo-tuple", [[[1]]], "expected tuple<u8, string>"),
        ("echo-nested-option", [["x"]], 'as null or {"some": value}'),
        ("echo-string", [], "takes 1 argument(s), got 0"),
        ("echo-string", {"y": []}, "has no parameter 'y' (parameters: x)"),
        ("echo-string", {}, "parameter x (list<string>) is missing"),
        ("echo-string", "x", "takes an array or an object by parameter name"),
    ],
)
def test_a_type_mismatch_names_the_parameter_and_the_wit_type(
    runtime: Runtime, kitchen: bytes, function: str, args: Any, message: str
) -> None:
    loaded = runtime.load_any(kitchen, Sandbox())
    with pytest.raises(BadRequestError) as caught:
        loaded.prepare(function, args)
    assert message in caught.value.message


def test_an_unknown_function_is_not_found(runtime: Runtime, kitchen: bytes) -> None:
    loaded = runtime.load_any(kitchen, Sandbox())
    with pytest.raises(NotFoundError, match="echo-string"):
        loaded.prepare("nope", [])
