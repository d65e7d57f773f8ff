"""A core module described from its bytes: the sections that say what it imports and exports.

Where it sits: under `edge.wasm.inspect`, which validates a core module with wasmtime and then calls
`describe` here (components are described from their type by `edge.wittypes` instead). The type,
import, function, table, memory and export sections are read directly, without compiling anything,
and each export gets its calling convention (`convention_of`: numeric, json or command, as the
`edge.wasm` docstring defines them). A construct this reader does not know leaves the affected
signatures unknown rather than failing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.wasminfo import (
    LINKED_P1_CAPABILITIES,
    NUMERIC_TYPES,
    Convention,
    Export,
    FuncSig,
    Import,
    ModuleInfo,
    sha256_digest,
)

__all__ = ["convention_of", "describe"]


class _Reader:
    """Reads the parts of the binary format that describe a module (LEB128, names, limits)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def byte(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def u(self) -> int:
        result = shift = 0
        while True:
            b = self.data[self.pos]
            self.pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result
            shift += 7
            if shift > 70:
                raise _UnsupportedError("LEB128 too long")

    def name(self) -> str:
        size = self.u()
        start = self.pos
        self.pos += size
        return self.data[start : self.pos].decode("utf-8")

    def valtype(self) -> str:
        code = self.byte()
        if code in _VALTYPES:
            return _VALTYPES[code]
        if code in (0x63, 0x64):  # (ref null ht) / (ref ht): a heap type follows as s33
            self.u()
            return "ref"
        raise _UnsupportedError(f"value type 0x{code:02x}")

    def limits(self) -> tuple[int, int | None]:
        flags = self.byte()
        if flags > 0x0F:
            raise _UnsupportedError(f"limits flags 0x{flags:02x}")
        minimum = self.u()
        maximum = self.u() if flags & 1 else None
        if flags & 0x08:  # custom page size (log2)
            self.u()
        return minimum, maximum


class _UnsupportedError(Exception):
    """A construct this reader does not describe; the module is described without signatures."""


_VALTYPES = {
    0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128", 0x70: "funcref", 0x6F: "externref",
    0x6E: "anyref", 0x6D: "eqref", 0x6C: "i31ref", 0x6B: "structref", 0x6A: "arrayref", 0x69: "exnref",
    0x71: "nullref", 0x72: "nullexternref", 0x73: "nullfuncref", 0x74: "nullexnref",
}  # fmt: skip
_EXTERN_KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}


@dataclass
class _Sections:
    types: list[FuncSig | None] = field(default_factory=list)
    imports: list[tuple[str, str, str, int | None]] = field(default_factory=list)  # module, name, kind, type
    functions: list[int] = field(default_factory=list)  # type index of each defined function
    exports: list[tuple[str, str, int]] = field(default_factory=list)  # name, kind, index
    memories: list[tuple[int, int | None]] = field(default_factory=list)
    tables: list[int] = field(default_factory=list)
    code_size: int = 0
    complete: bool = True


def _read_types(r: _Reader, end: int, out: _Sections) -> None:
    for _ in range(r.u()):
        form = r.byte()
        if form != 0x60:  # GC proposal: rec groups, struct and array types
            raise _UnsupportedError(f"type form 0x{form:02x}")
        params = tuple(r.valtype() for _ in range(r.u()))
        results = tuple(r.valtype() for _ in range(r.u()))
        out.types.append(FuncSig(params, results))


def _read_imports(r: _Reader, end: int, out: _Sections) -> None:
    for _ in range(r.u()):
        module, name, kind = r.name(), r.name(), r.byte()
        if kind == 0:
            out.imports.append((module, name, "func", r.u()))
        elif kind == 1:
            r.valtype()
            out.tables.append(r.limits()[0])
            out.imports.append((module, name, "table", None))
        elif kind == 2:
            out.memories.append(r.limits())
            out.imports.append((module, name, "memory", None))
        elif kind == 3:
            r.valtype()
            r.byte()
            out.imports.append((module, name, "global", None))
        elif kind == 4:
            r.byte()
            out.imports.append((module, name, "tag", r.u()))
        else:
            raise _UnsupportedError(f"import kind 0x{kind:02x}")


def _read_functions(r: _Reader, end: int, out: _Sections) -> None:
    count = r.u()
    if end - r.pos == count:  # every type index fits in one LEB128 byte (fewer than 128 types)
        out.functions.extend(r.data[r.pos : end])
        return
    out.functions.extend(r.u() for _ in range(count))


def _read_tables(r: _Reader, end: int, out: _Sections) -> None:
    for _ in range(r.u()):
        if r.data[r.pos] == 0x40:  # a table with an initialiser expression
            raise _UnsupportedError("table initialiser")
        r.valtype()
        out.tables.append(r.limits()[0])


def _read_memories(r: _Reader, end: int, out: _Sections) -> None:
    out.memories.extend(r.limits() for _ in range(r.u()))


def _read_exports(r: _Reader, end: int, out: _Sections) -> None:
    for _ in range(r.u()):
        name, kind = r.name(), r.byte()
        out.exports.append((name, _EXTERN_KINDS.get(kind, "unknown"), r.u()))


_SECTION_READERS = {
    1: _read_types,
    2: _read_imports,
    3: _read_functions,
    4: _read_tables,
    5: _read_memories,
    7: _read_exports,
}


def _sections(data: bytes) -> _Sections:
    """The sections that describe a module, read without compiling it (the code section is skipped)."""
    out = _Sections()
    r = _Reader(data, 8)
    while r.pos < len(data):
        try:
            section_id = r.byte()
            size = r.u()
        except (_UnsupportedError, IndexError):
            out.complete = False
            break
        end = r.pos + size
        if section_id == 10:
            out.code_size = size
        reader = _SECTION_READERS.get(section_id)
        if reader is not None:
            try:
                reader(_Reader(data, r.pos), end, out)
            except (_UnsupportedError, IndexError, UnicodeDecodeError):
                out.complete = False
                if section_id == 1:
                    out.types = []
        r.pos = end
    return out


def convention_of(name: str, sig: FuncSig, exports: dict[str, FuncSig | None], wasi: bool) -> Convention | None:
    """The calling convention an export is called with, or None if it cannot be called."""
    if name == "_start" and sig == FuncSig((), ()) and wasi:
        return "command"
    alloc = exports.get("alloc")
    if sig == FuncSig(("i32", "i32"), ("i64",)) and "memory" in exports and alloc == FuncSig(("i32",), ("i32",)):
        return "json"
    if (
        all(p in NUMERIC_TYPES for p in sig.params)
        and len(sig.results) <= 1
        and all(r in NUMERIC_TYPES for r in sig.results)
    ):
        return "numeric"
    return None


def describe(data: bytes, digest: str | None = None) -> ModuleInfo:
    """Describe a core module that is known to be valid, from its bytes alone.

    The import, function, table, memory and export sections are read directly (a ~1 MB module in
    well under a millisecond); nothing is compiled, and wasmtime-py's type objects, which abort
    the process on some types (v128), are never touched. A construct the reader does not know
    (GC types, for instance) leaves the affected signatures unknown, so those exports get no
    calling convention."""
    parsed = _sections(data)
    types = parsed.types

    def sig(index: int | None) -> FuncSig | None:
        return types[index] if index is not None and index < len(types) else None

    imports = tuple(
        Import(module, name, kind, sig(ty) if kind == "func" else None) for module, name, kind, ty in parsed.imports
    )
    func_types = [ty for _, _, kind, ty in parsed.imports if kind == "func"] + parsed.functions
    raw_exports: dict[str, FuncSig | None] = {}
    kinds: dict[str, str] = {}
    for name, kind, index in parsed.exports:
        kinds[name] = kind
        raw_exports[name] = sig(func_types[index] if index < len(func_types) else None) if kind == "func" else None
    wasi = any(i.is_wasi for i in imports)
    exports = tuple(
        Export(name, kinds[name], s, convention_of(name, s, raw_exports, wasi) if s is not None else None)
        for name, s in raw_exports.items()
    )
    mem_min = max((m for m, _ in parsed.memories), default=0)
    mem_max = parsed.memories[0][1] if parsed.memories else None
    table_min = max(parsed.tables, default=0)
    problems = tuple(
        _p1_problem(i) for i in imports if i.module == "wasi_unstable" or i.capability not in LINKED_P1_CAPABILITIES
    )
    return ModuleInfo(
        digest=digest or sha256_digest(data),
        size=len(data),
        component=False,
        imports=imports,
        exports=exports,
        memory_min_pages=mem_min,
        memory_max_pages=mem_max,
        table_min_elements=table_min,
        problems=problems,
        code_size=parsed.code_size,
    )


def _p1_problem(imp: Import) -> str:
    """Why a core module's import cannot be satisfied by the edge, naming it."""
    where = f"import {imp.module}.{imp.name}"
    if imp.module == "wasi_unstable":
        return f"{where}: the old WASI snapshot `wasi_unstable` is not provided; build for wasi_snapshot_preview1"
    if imp.capability == "unknown":
        return f"{where}: not a WASI preview 1 function"
    return f"{where}: only WASI preview 1 imports can be satisfied"
