"""Fixtures for the interface registry tests: WIT written to tmp folders, modules built from WAT.

`wit/wasi/` holds a subset of the WASI 0.2.0 packages (io, clocks, random, filesystem, cli, http)
written for these tests; `wasi_package(root)` lays one out as wasm-tools expects it: the root
package's file in a folder, the packages it depends on in its `deps/`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.wasm import ModuleInfo, inspect
from edge.wat import compile_wat
from reconciler.interfaces import WitPackage, parse_wit
from reconciler.interfaces.wit import run_wasm_tools

WASI = Path(__file__).parent / "wit" / "wasi"
WASI_DEPS = {
    "io": [],
    "clocks": ["io"],
    "random": [],
    "filesystem": ["io", "clocks"],
    "cli": ["io", "clocks", "random", "filesystem"],
    "http": ["io", "clocks", "random", "filesystem", "cli"],
}

GREETER = """\
package example:greeter@1.0.0;

/// Greets people.
interface greet {
  record person {
    name: string,
    age: u32,
  }

  type score = u64;

  greet: func(name: string) -> string;
  health: func() -> u32;
  add: func(a: s32, b: s32) -> s32;
  get-score: func(who: person) -> score;
}

world greeter {
  export greet;
}
"""

GREETER_WAT = """\
(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))
  (func (export "alloc") (param $n i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $n)))
    (local.get $at))
  (func (export "greet") (param i32 i32) (result i64) (i64.const 0))
  (func (export "health") (result i32) (i32.const 0))
  (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
  (func (export "get_score") (param i32 i32) (result i64) (i64.const 0)))
"""


@pytest.fixture
def write_wit(tmp_path: Path) -> Callable[..., Path]:
    """Write WIT text to `tmp/<name>` and return the path."""

    def write(text: str, name: str = "greeter.wit") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return write


@pytest.fixture
def greeter(write_wit: Callable[..., Path]) -> WitPackage:
    return parse_wit(write_wit(GREETER))


@pytest.fixture
def wasi_package(tmp_path: Path) -> Callable[..., Path]:
    """Lay out WASI package `root` (cli, http, ...) with its deps; `edit` may change the root's text."""

    def layout(root: str, edit: Callable[[str], str] = lambda text: text, folder: str = "") -> Path:
        target = tmp_path / (folder or f"wasi-{root}")
        (target / "deps").mkdir(parents=True)
        (target / f"{root}.wit").write_text(edit((WASI / f"{root}.wit").read_text()))
        for dep in WASI_DEPS[root]:
            shutil.copy(WASI / f"{dep}.wit", target / "deps" / f"{dep}.wit")
        return target

    return layout


def core(wat: str) -> ModuleInfo:
    return inspect(compile_wat(wat))


def dummy_component(wit: Path, world: str, out: Path) -> bytes:
    """A component built by wasm-tools for `world` of `wit` (a dummy core module inside)."""
    embedded, component = out.with_suffix(".core.wasm"), out
    done = run_wasm_tools(["component", "embed", "--dummy", "--world", world, str(wit), "-o", str(embedded)])
    assert done.returncode == 0, done.stderr.decode()
    done = run_wasm_tools(["component", "new", str(embedded), "-o", str(component)])
    assert done.returncode == 0, done.stderr.decode()
    return component.read_bytes()
