"""Module compatibility: core modules by export and signature, components by `wasm-tools targets`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.wasm import ModuleInfo, inspect
from reconciler.interfaces import WitPackage, check_module, parse_wit
from tests.interfaces.conftest import GREETER, GREETER_WAT, core, dummy_component

ALL = frozenset({"process", "clocks", "random", "stdio", "env", "filesystem"})
BASE = frozenset({"process", "clocks", "random", "stdio"})


def without(wat: str, export: str) -> str:
    """GREETER_WAT with one function export renamed out of the way."""
    return wat.replace(f'(export "{export}")', f'(export "{export}-gone")')


def test_compatible_core_module(greeter: WitPackage) -> None:
    assert check_module(core(GREETER_WAT), greeter, "greet", BASE, "preview1") == []


@pytest.mark.parametrize("ref", [None, "greet", "example:greeter/greet", "example:greeter/greet@1.0.0"])
def test_interface_named_in_every_form(greeter: WitPackage, ref: str | None) -> None:
    assert check_module(core(GREETER_WAT), greeter, ref, BASE, "preview1") == []


def test_missing_export(greeter: WitPackage) -> None:
    problems = check_module(core(without(GREETER_WAT, "health")), greeter, "greet", BASE, "preview1")
    assert problems == ["health: missing export `health` for func() -> u32"]


def test_kebab_case_function_missing_names_both_spellings(greeter: WitPackage) -> None:
    problems = check_module(core(without(GREETER_WAT, "get_score")), greeter, "greet", BASE, "preview1")
    assert problems == ["get-score: missing export `get-score` or `get_score` for func(who: person) -> score"]


def test_kebab_case_exported_as_written(greeter: WitPackage) -> None:
    wat = GREETER_WAT.replace('(export "get_score")', '(export "get-score")')
    assert check_module(core(wat), greeter, "greet", BASE, "preview1") == []


def test_wrong_numeric_signature(greeter: WitPackage) -> None:
    wat = GREETER_WAT.replace(
        '(func (export "health") (result i32) (i32.const 0))', '(func (export "health") (result i64) (i64.const 0))'
    )
    problems = check_module(core(wat), greeter, "greet", BASE, "preview1")
    assert problems == [
        "health: export `health` is () -> (i64), but func() -> u32 needs () -> (i32) (numeric convention) "
        "or (i32, i32) -> (i64) (json convention)"
    ]


def test_numeric_function_may_use_the_json_convention(greeter: WitPackage) -> None:
    wat = GREETER_WAT.replace(
        '(func (export "health") (result i32) (i32.const 0))',
        '(func (export "health") (param i32 i32) (result i64) (i64.const 0))',
    )
    assert check_module(core(wat), greeter, "greet", BASE, "preview1") == []


def test_string_function_needs_the_json_convention(greeter: WitPackage) -> None:
    wat = GREETER_WAT.replace(
        '(func (export "greet") (param i32 i32) (result i64) (i64.const 0))',
        '(func (export "greet") (param i32) (result i32) (i32.const 0))',
    )
    problems = check_module(core(wat), greeter, "greet", BASE, "preview1")
    assert problems == [
        "greet: export `greet` is (i32) -> (i32), but func(name: string) -> string needs the json convention "
        "(i32, i32) -> (i64) (with `alloc` and `memory` exported)"
    ]


def test_json_signature_without_alloc_and_memory(greeter: WitPackage) -> None:
    wat = GREETER_WAT.replace('(export "alloc")', "").replace('(memory (export "memory") 1)', "(memory 1)")
    problems = check_module(core(wat), greeter, "greet", BASE, "preview1")
    assert problems == [
        "greet: export `greet` uses the json convention but the module does not export "
        "`alloc: (i32) -> (i32)` and `memory`",
        "get-score: export `get_score` uses the json convention but the module does not export "
        "`alloc: (i32) -> (i32)` and `memory`",
    ]


def test_export_of_the_right_name_but_not_a_function(write_wit: Callable[..., Path]) -> None:
    package = parse_wit(write_wit("package a:m@1.0.0;\ninterface i {\n  memory: func() -> u32;\n}\n", "m.wit"))
    problems = check_module(core('(module (memory (export "memory") 1))'), package, "i", BASE, "preview1")
    assert problems == ["memory: export `memory` is a memory, not a function"]


def test_unknown_interface(greeter: WitPackage) -> None:
    assert check_module(core(GREETER_WAT), greeter, "farewell", BASE, "preview1") == [
        "example:greeter@1.0.0 has no interface `farewell` (its interfaces: greet)"
    ]
    assert check_module(core(GREETER_WAT), greeter, "other:pkg/greet", BASE, "preview1") == [
        "`other:pkg/greet` is not an interface of example:greeter@1.0.0"
    ]


WASI_WAT = """\
(module
  (import "wasi_snapshot_preview1" "environ_get" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "health") (result i32) (i32.const 0)))
"""


def test_wasi_imports_need_granted_capabilities(write_wit: Callable[..., Path]) -> None:
    package = parse_wit(write_wit("package a:h@1.0.0;\ninterface h {\n  health: func() -> s32;\n}\n", "h.wit"))
    info = core(WASI_WAT)
    assert check_module(info, package, "h", BASE, "preview1") == [
        "import wasi_snapshot_preview1.environ_get: needs the `env` capability, which the module is not granted",
        "import wasi_snapshot_preview1.path_open: needs the `filesystem` capability, which the module is not granted",
    ]
    assert check_module(info, package, "h", ALL, "preview1") == []
    assert check_module(info, package, "h", ALL, "preview2") == []  # a core module under preview2 too


def test_several_interfaces_prefix_the_interface(write_wit: Callable[..., Path]) -> None:
    package = parse_wit(
        write_wit(
            "package a:two@1.0.0;\ninterface one {\n  f: func() -> u32;\n}\ninterface two {\n  g: func();\n}\n",
            "two.wit",
        )
    )
    info = core('(module (func (export "f") (result i32) (i32.const 1)))')
    problems = check_module(info, package, None, BASE, "preview1")
    assert problems == ["two.g: missing export `g` for func()"]


def test_resources_need_a_component(wasi_package: Callable[..., Path]) -> None:
    http = parse_wit(wasi_package("http"))
    problems = check_module(core(GREETER_WAT), http, "types", BASE, "preview1")
    assert "fields: a resource (its constructor and methods) needs a component, not a core module" in problems
    assert "http-error-code: missing export `http-error-code` or `http_error_code` for " in "\n".join(problems)
    assert not any("[method]" in p for p in problems)


def test_wasi_cli_run_needs_json_for_its_result(wasi_package: Callable[..., Path]) -> None:
    cli = parse_wit(wasi_package("cli"))
    numeric = core('(module (func (export "run") (result i32) (i32.const 0)))')
    assert check_module(numeric, cli, "wasi:cli/run@0.2.0", BASE, "preview1") == [
        "run: export `run` is () -> (i32), but func() -> result needs the json convention (i32, i32) -> (i64) "
        "(with `alloc` and `memory` exported)"
    ]


@pytest.fixture
def greeter_component(tmp_path: Path, write_wit: Callable[..., Path]) -> tuple[WitPackage, ModuleInfo, bytes]:
    path = write_wit(GREETER)
    data = dummy_component(path, "greeter", tmp_path / "greeter.wasm")
    return parse_wit(path), inspect(data), data


def test_component_that_targets_the_world(greeter_component: tuple[WitPackage, ModuleInfo, bytes]) -> None:
    package, info, data = greeter_component
    assert info.component
    assert check_module(info, package, "greet", BASE, "preview2", binary=data) == []
    assert check_module(info, package, "greeter", BASE, "preview2", binary=data) == []
    assert check_module(info, package, None, BASE, "preview2", binary=data) == []


def test_component_against_a_changed_world(
    greeter_component: tuple[WitPackage, ModuleInfo, bytes], write_wit: Callable[..., Path]
) -> None:
    _, info, data = greeter_component
    changed = parse_wit(write_wit(GREETER.replace("health: func() -> u32;", "health: func() -> u64;"), "v2/g.wit"))
    problems = check_module(info, changed, "greet", BASE, "preview2", binary=data)
    assert len(problems) == 1
    assert problems[0].startswith("the component does not target world `greeter`: ")
    assert "`health`" in problems[0]
    assert "expected primitive `u64` found primitive `u32`" in problems[0]
    again = check_module(info, changed, "greet", BASE, "preview2")  # cached by digest: no bytes needed
    assert again == problems


def test_component_refused_for_a_preview1_interface(greeter_component: tuple[WitPackage, ModuleInfo, bytes]) -> None:
    package, info, data = greeter_component
    problems = check_module(info, package, "greet", BASE, "preview1", binary=data)
    assert problems == [
        "the module is a component (WASI preview 2), but example:greeter@1.0.0 is a preview1 interface: "
        "build a core module or declare `wasi: preview2`"
    ]


def test_component_without_bytes_or_world(
    greeter_component: tuple[WitPackage, ModuleInfo, bytes], write_wit: Callable[..., Path]
) -> None:
    package, info, _ = greeter_component
    fresh = parse_wit(write_wit(GREETER.replace("add: func", "sub: func"), "v3/g.wit"))
    assert check_module(info, fresh, "greet", BASE, "preview2") == [
        "the component's bytes are needed to check it against world `greeter`"
    ]
    assert check_module(info, package, "nothing", BASE, "preview2") == [
        "example:greeter@1.0.0 has no interface or world `nothing`"
    ]
    lonely = parse_wit(write_wit("package a:l@1.0.0;\ninterface l {\n  f: func();\n}\n", "l.wit"))
    assert check_module(info, lonely, "l", BASE, "preview2") == [
        "no world of a:l@1.0.0 exports `l`: add one for components to target"
    ]
    two = parse_wit(write_wit("package a:w@1.0.0;\nworld a {}\nworld b {}\n", "w.wit"))
    assert check_module(info, two, None, BASE, "preview2") == [
        "a:w@1.0.0 has 2 worlds: name the one the component targets"
    ]


def test_wasi_http_proxy_component(tmp_path: Path, wasi_package: Callable[..., Path]) -> None:
    root = wasi_package("http")
    data = dummy_component(root, "proxy", tmp_path / "proxy.wasm")
    http = parse_wit(root)
    info = inspect(data)
    assert check_module(info, http, "incoming-handler", BASE, "preview2", binary=data) == []
    cli = parse_wit(wasi_package("cli"))
    assert check_module(info, cli, "command", BASE, "preview2", binary=data) == [
        "the component does not target world `command`: missing import named `wasi:http/types@0.2.0`"
    ]


def test_component_whose_wit_is_gone(greeter_component: tuple[WitPackage, ModuleInfo, bytes]) -> None:
    package, info, data = greeter_component
    moved = dataclasses.replace(package, source=package.source.with_name("moved.wit"), digest="sha256:other")
    (problem,) = check_module(info, moved, "greet", BASE, "preview2", binary=data)
    assert problem.startswith("the WIT of example:greeter@1.0.0 is no longer at ")


def test_example_fleet_greeters_implement_their_interface(example_fleet: Path) -> None:
    package = parse_wit(example_fleet / "interfaces" / "greeter.wit")
    granted = BASE | {"env"}  # modules/greeter.yaml grants env: {GREETING: hello}, which greet reads
    for wat in sorted((example_fleet / "wasm").glob("greeter-*.wat")):
        assert check_module(core(wat.read_text()), package, "example:greeter/greet@1.0.0", granted, "preview1") == []
