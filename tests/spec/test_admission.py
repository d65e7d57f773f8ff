"""reconciler.spec.admission: the one check the fleet loader and the registry both apply."""

from __future__ import annotations

from edge import wasm
from reconciler.spec import admission


def info_of(wat: str) -> wasm.ModuleInfo:
    return wasm.inspect_cached(wasm.compile_wat(wat))


def test_a_binary_within_its_limits_is_admitted() -> None:
    assert admission.check(info_of('(module (memory 1) (func (export "f")))'), admission.MIB) == []


def test_every_reason_is_named_at_once() -> None:
    wat = '(module (import "env" "launch" (func)) (memory 40) (table 20000001 funcref))'
    problems = admission.check(info_of(wat), admission.MIB)
    assert len(problems) == 3, problems
    assert problems[0].startswith("imports the edge sandbox cannot grant: import env.launch")
    assert problems[1] == "declares 2.5 MB of initial memory (40 pages), over its 1 MB limit"
    assert problems[2] == "declares a table of 20000001 elements, over the 10000000 allowed"


def test_limits_read_as_they_are_written() -> None:
    assert [admission.size(n) for n in (512 * admission.MIB, 65536, 1, 1000)] == [
        "512 MB",
        "0.0625 MB",
        "1 byte",
        "1000 bytes",
    ]
