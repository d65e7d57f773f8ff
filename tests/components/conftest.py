"""Test components built from WAT and WIT with wasm-tools, as scripts/build-component.sh does."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]
WASM_TOOLS = shutil.which("wasm-tools") or str(Path(sys.executable).parent / "wasm-tools")

ALLOC = """
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func $alloc (param $align i32) (param $size i32) (result i32)
    (local $p i32) (local $end i32) (local $pages i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get $align))))
    (local.set $end (i32.add (local.get $p) (local.get $size)))
    (local.set $pages
      (i32.sub (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16)) (memory.size)))
    (if (i32.gt_s (local.get $pages) (i32.const 0))
      (then (if (i32.eq (memory.grow (local.get $pages)) (i32.const -1)) (then unreachable))))
    (global.set $heap (local.get $end))
    (local.get $p))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (call $alloc (local.get 2) (local.get 3)))
  (func $reset (param i32) (global.set $heap (i32.const 1024)))
"""

# Each WIT type family, echoed through wasm memory as `echo-NAME: func(x: list<T>) -> list<T>`.
FAMILIES: dict[str, str] = {
    "bool": "bool", "s8": "s8", "u8": "u8", "s16": "s16", "u16": "u16", "s32": "s32", "u32": "u32",
    "s64": "s64", "u64": "u64", "f32": "f32", "f64": "f64", "char": "char", "string": "string",
    "list": "list<string>", "record": "point", "tuple": "tuple<u8, string>", "option": "option<u32>",
    "nested-option": "option<option<string>>", "result": "result<u32, string>", "bare-result": "result",
    "variant": "shape", "enum": "color", "flags": "perms",
}  # fmt: skip


def build(tmp: Path, wit: str, wat: str, world: str, deps: dict[str, str] | None = None) -> bytes:
    src = tmp / f"{world}-src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "world.wit").write_text(wit)
    for name, text in (deps or {}).items():
        (src / "deps" / name).mkdir(parents=True, exist_ok=True)
        (src / "deps" / name / f"{name}.wit").write_text(text)
    (src / "core.wat").write_text(wat)
    core, out = src / "core.wasm", src / "component.wasm"
    embed = [WASM_TOOLS, "component", "embed", "--world", world, str(src), str(src / "core.wat"), "-o", str(core)]
    subprocess.run(embed, check=True)
    subprocess.run([WASM_TOOLS, "component", "new", str(core), "-o", str(out)], check=True)
    return out.read_bytes()


def kitchen_sources() -> tuple[str, str]:
    exports = "\n".join(f"  export echo-{n}: func(x: list<{t}>) -> list<{t}>;" for n, t in FAMILIES.items())
    wit = f"""package test:kitchen@0.1.0;

world kitchen {{
  record point {{ x: s32, y: s32 }}
  enum color {{ red, green, blue }}
  variant shape {{ circle(f64), square(point), empty }}
  flags perms {{ read, write, exec }}
{exports}
  export spin: func();
  export grow: func(pages: u32) -> s32;
  export burn: func(n: u32) -> u32;
}}
"""
    echo = "\n".join(
        f'  (export "echo-{n}" (func $echo)) (export "cabi_post_echo-{n}" (func $reset))' for n in FAMILIES
    )
    wat = f"""(module
{ALLOC}
  (func $echo (param $p i32) (param $n i32) (result i32)
    (local $ret i32)
    (local.set $ret (call $alloc (i32.const 4) (i32.const 8)))
    (i32.store (local.get $ret) (local.get $p))
    (i32.store offset=4 (local.get $ret) (local.get $n))
    (local.get $ret))
{echo}
  (func (export "spin") (loop $l (br $l)))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "burn") (param $n i32) (result i32)
    (local $i i32) (local $acc i32)
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $acc (i32.add (i32.mul (local.get $acc) (i32.const 31)) (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (local.get $acc)))
"""
    return wit, wat


FETCH_WIT = """package test:fetcher@0.1.0;

world fetcher {
  use hotswap:http/fetch@0.1.0.{response, fetch-error};
  import hotswap:http/fetch@0.1.0;
  export get: func(url: string) -> result<response, fetch-error>;
}
"""

FETCH_WAT = f"""(module
  (import "hotswap:http/fetch@0.1.0" "send" (func $send (param i32 i32 i32 i32 i32 i32 i32 i32 i32)))
{ALLOC}
  (data (i32.const 0) "GET")
  (func (export "get") (param $p i32) (param $n i32) (result i32)
    (local $ret i32)
    (local.set $ret (call $alloc (i32.const 4) (i32.const 24)))
    (call $send (i32.const 0) (i32.const 3) (local.get $p) (local.get $n)
                (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (local.get $ret))
    (local.get $ret))
  (export "cabi_post_get" (func $reset)))
"""


@pytest.fixture(scope="session")
def kitchen(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    wit, wat = kitchen_sources()
    return build(tmp_path_factory.mktemp("kitchen"), wit, wat, "kitchen")


@pytest.fixture(scope="session")
def fetcher(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    deps = {"hotswap-http": (ROOT / "schemas" / "hotswap-http.wit").read_text()}
    return build(tmp_path_factory.mktemp("fetcher"), FETCH_WIT, FETCH_WAT, "fetcher", deps)


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    with Runtime() as rt:
        yield rt
