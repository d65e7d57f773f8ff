"""Binary inspection: validate a WebAssembly binary and describe what it needs and offers.

Used by the fleet loader (`hotswap validate`), by the control plane's registry, and by the edge
runtime when it loads a module. Pure wasmtime, no aiohttp, no I/O beyond what the caller passes in.

The calling convention of each export is decided here, once, from its signature:
  numeric   every parameter and the result (if any) is i32/i64/f32/f64;
  json      the module exports `memory` and `alloc(i32) -> i32`, and the function is
            `(i32, i32) -> i64`, the result packed as `(ptr << 32) | len`;
  command   `_start: () -> ()` of a WASI module: JSON args on stdin, the result on stdout.
  component a function exported by a component (WASI preview 2), top level or `instance#func` in
            an exported interface: WIT-typed parameters and result (`WitType`), called with JSON
            mapped to WIT values by `edge.component`.
A component is recognised by its layer byte and described from its type: its functions with their
WIT signatures, and the interfaces it imports (`wasi:cli@0.2.0` / `environment`, kind `instance`),
each mapped to the capability that grants it (`WASI_P2_CAPABILITIES`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Literal

import wasmtime

Convention = Literal["numeric", "json", "command", "component"]
WASI_P1_MODULES = frozenset({"wasi_snapshot_preview1", "wasi_unstable"})
NUMERIC_TYPES = frozenset({"i32", "i64", "f32", "f64"})
PAGE_BYTES = 65536

# Every preview 1 function, by the capability that grants it. `sock_*` are `sockets`: linked, as
# wasi-libc (wasi-sdk 20 and later) and Rust's std import them in most programs, but they only work
# on sockets handed in as preopens, and the edge never hands one in, so they fail with an error code
# and no program reaches the network through them. Nothing in a spec grants them.
WASI_P1_CAPABILITIES: dict[str, str] = {
    **dict.fromkeys(("args_get", "args_sizes_get", "proc_exit", "proc_raise", "sched_yield"), "process"),
    **dict.fromkeys(("environ_get", "environ_sizes_get"), "env"),
    **dict.fromkeys(("clock_res_get", "clock_time_get"), "clocks"),
    "random_get": "random",
    "poll_oneoff": "clocks",
    **dict.fromkeys(
        (
            "fd_read",
            "fd_write",
            "fd_close",
            "fd_seek",
            "fd_tell",
            "fd_fdstat_get",
            "fd_fdstat_set_flags",
            "fd_sync",
            "fd_datasync",
            "fd_advise",
            "fd_allocate",
            "fd_pread",
            "fd_pwrite",
        ),
        "stdio",
    ),
    **dict.fromkeys(
        (
            "fd_prestat_get",
            "fd_prestat_dir_name",
            "fd_readdir",
            "fd_renumber",
            "fd_filestat_get",
            "fd_filestat_set_size",
            "fd_filestat_set_times",
            "fd_fdstat_set_rights",
            "path_create_directory",
            "path_filestat_get",
            "path_filestat_set_times",
            "path_link",
            "path_open",
            "path_readlink",
            "path_remove_directory",
            "path_rename",
            "path_symlink",
            "path_unlink_file",
        ),
        "filesystem",
    ),
    **dict.fromkeys(("sock_accept", "sock_recv", "sock_send", "sock_shutdown"), "sockets"),
}
GRANTABLE_CAPABILITIES = frozenset({"process", "env", "clocks", "random", "stdio", "filesystem"})
LINKED_P1_CAPABILITIES = GRANTABLE_CAPABILITIES | {"sockets"}  # what a core module's imports may need

# WASI preview 2 interfaces (package without version, interface) by the capability that grants them.
# `network` is outgoing HTTP only: `hotswap:http/fetch` (checked against `network.allowHosts`), or raw
# `wasi:http` for `allowHosts: ["*"]`; sockets are never granted.
WASI_P2_CAPABILITIES: dict[str, str] = {
    **dict.fromkeys(("wasi:cli/environment",), "env"),
    **dict.fromkeys(("wasi:cli/exit",), "process"),
    **dict.fromkeys(
        (
            "wasi:cli/stdin",
            "wasi:cli/stdout",
            "wasi:cli/stderr",
            "wasi:cli/terminal-input",
            "wasi:cli/terminal-output",
            "wasi:cli/terminal-stdin",
            "wasi:cli/terminal-stdout",
            "wasi:cli/terminal-stderr",
            "wasi:io/error",
            "wasi:io/poll",
            "wasi:io/streams",
        ),
        "stdio",
    ),
    **dict.fromkeys(("wasi:clocks/monotonic-clock", "wasi:clocks/wall-clock", "wasi:clocks/timezone"), "clocks"),
    **dict.fromkeys(("wasi:random/random", "wasi:random/insecure", "wasi:random/insecure-seed"), "random"),
    **dict.fromkeys(("wasi:filesystem/types", "wasi:filesystem/preopens"), "filesystem"),
    **dict.fromkeys(("wasi:http/types", "wasi:http/outgoing-handler", "hotswap:http/fetch"), "network"),
}


def wasi_p2_capability(package: str, interface: str) -> str:
    """The capability an imported interface needs: one of WASI_P2_CAPABILITIES' values, `sockets`, or
    `unknown` for an interface the edge does not provide."""
    name = f"{package.split('@', 1)[0]}/{interface}"
    if name.startswith("wasi:sockets/"):
        return "sockets"
    return WASI_P2_CAPABILITIES.get(name, "unknown")


class WasmError(ValueError):
    """The bytes or the text are not a valid WebAssembly module; `line` is set for WAT text."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True)
class FuncSig:
    params: tuple[str, ...]
    results: tuple[str, ...]

    def __str__(self) -> str:
        return f"({', '.join(self.params)}) -> ({', '.join(self.results)})"


@dataclass(frozen=True)
class Import:
    module: str
    name: str
    kind: str  # func | memory | table | global
    sig: FuncSig | None = None

    @property
    def is_wasi(self) -> bool:
        return self.module in WASI_P1_MODULES or self.module.startswith("wasi:")

    @property
    def capability(self) -> str | None:
        """The WASI capability this import needs, or None for a non-WASI import of a core module."""
        if self.kind == "instance":  # an interface imported by a component
            return wasi_p2_capability(self.module, self.name)
        return WASI_P1_CAPABILITIES.get(self.name, "unknown") if self.is_wasi else None


@dataclass(frozen=True)
class Export:
    name: str
    kind: str
    sig: FuncSig | None = None
    convention: Convention | None = None


@dataclass(frozen=True)
class ModuleInfo:
    """What a binary is: its digest, size, imports and exports, and the convention of each export."""

    digest: str
    size: int
    component: bool
    imports: tuple[Import, ...]
    exports: tuple[Export, ...]
    memory_min_pages: int = 0
    memory_max_pages: int | None = None
    table_min_elements: int = 0
    problems: tuple[str, ...] = field(default=())
    code_size: int = 0  # bytes of function bodies (the code section): what validation and compiling cost

    @property
    def wasi_imports(self) -> tuple[Import, ...]:
        return tuple(i for i in self.imports if i.is_wasi)

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset(i.capability for i in self.imports if i.capability is not None)

    @property
    def is_wasi(self) -> bool:
        return bool(self.wasi_imports)

    def export(self, name: str) -> Export | None:
        return next((e for e in self.exports if e.name == name), None)

    def functions(self) -> dict[str, Export]:
        return {e.name: e for e in self.exports if e.kind == "func"}


@cache
def engine() -> wasmtime.Engine:
    """The engine used for inspection only (the runtime has its own, with epoch interruption)."""
    return wasmtime.Engine()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


_WAT_LINE = re.compile(r"-->\s*\S*?:(\d+):\d+")


def compile_wat(text: str) -> bytes:
    """WAT text to a binary; a syntax error raises WasmError with the line in the text."""
    try:
        return bytes(wasmtime.wat2wasm(text))
    except wasmtime.WasmtimeError as exc:
        message = str(exc)
        match = _WAT_LINE.search(message)
        first = message.strip().splitlines()[0] if message.strip() else "invalid WAT"
        raise WasmError(first, int(match.group(1)) if match else None) from None


def is_component(data: bytes) -> bool:
    """A component has the `\\0asm` magic with layer 1 (bytes 6-7 = 01 00)."""
    return len(data) >= 8 and data[:4] == b"\0asm" and data[6:8] == b"\x01\x00"


def validate(data: bytes) -> None:
    """Raise WasmError unless `data` is a valid core module or component."""
    if data[:4] != b"\0asm":
        raise WasmError("not a WebAssembly binary (the magic bytes \\0asm are missing)")
    if is_component(data):
        _component_engine_validate(data)
        return
    try:
        wasmtime.Module.validate(engine(), data)
    except wasmtime.WasmtimeError as exc:
        raise WasmError(str(exc).strip().splitlines()[0]) from None


@cache
def _component_engine() -> wasmtime.Engine:
    config = wasmtime.Config()
    config.wasm_component_model = True
    return wasmtime.Engine(config)


def _component_engine_validate(data: bytes) -> None:
    import wasmtime.component

    try:
        wasmtime.component.Component(_component_engine(), data)
    except (wasmtime.WasmtimeError, AttributeError) as exc:
        raise WasmError(str(exc).strip().splitlines()[0] or "invalid component") from None


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


def inspect(data: bytes) -> ModuleInfo:
    """Validate and describe a binary. Raises WasmError when it is not valid WebAssembly."""
    if is_component(data):
        import wasmtime.component

        try:
            component = wasmtime.component.Component(_component_engine(), data)
        except wasmtime.WasmtimeError as exc:
            raise WasmError(str(exc).strip().splitlines()[0] or "invalid component") from None
        return describe_component(component, _component_engine(), sha256_digest(data), len(data))
    validate(data)
    return describe(data)


# -- components ---------------------------------------------------------------------------------

WitKind = Literal[
    "bool", "s8", "s16", "s32", "s64", "u8", "u16", "u32", "u64", "f32", "f64", "char", "string",
    "list", "record", "tuple", "variant", "enum", "option", "result", "flags", "unsupported",
]  # fmt: skip


@dataclass(frozen=True)
class WitType:
    """A WIT value type, read from a component's type. `cases` holds record fields, variant cases
    and the result's ok/err (None: no payload); `items` the list, option or tuple element types;
    `names` enum cases and flags; `detail` what an unsupported type is (resource, stream...)."""

    kind: WitKind
    cases: tuple[tuple[str, WitType | None], ...] = ()
    items: tuple[WitType, ...] = ()
    names: tuple[str, ...] = ()
    detail: str = ""

    @property
    def supported(self) -> bool:
        """Whether values of this type map to and from JSON (resources, streams and futures do not)."""
        if self.kind == "unsupported":
            return False
        return all(t.supported for t in self.items) and all(t is None or t.supported for _, t in self.cases)

    def __str__(self) -> str:
        k = self.kind
        if k in ("list", "option"):
            return f"{k}<{self.items[0]}>"
        if k == "tuple":
            return f"tuple<{', '.join(str(t) for t in self.items)}>"
        if k == "record":
            return "record {" + ", ".join(f"{n}: {t}" for n, t in self.cases) + "}"
        if k == "variant":
            return "variant {" + ", ".join(n if t is None else f"{n}({t})" for n, t in self.cases) + "}"
        if k in ("enum", "flags"):
            return f"{k} {{{', '.join(self.names)}}}"
        if k == "result":
            ok, err = (t for _, t in self.cases)
            if ok is None and err is None:
                return "result"
            return f"result<{ok if ok is not None else '_'}" + (f", {err}>" if err is not None else ">")
        if k == "unsupported":
            return self.detail
        return k


@dataclass(frozen=True)
class ComponentFunc:
    """A function a component exports: `name` is `func`, or `instance#func` inside an exported interface."""

    name: str
    params: tuple[tuple[str, WitType], ...]
    result: WitType | None

    @property
    def supported(self) -> bool:
        return all(t.supported for _, t in self.params) and (self.result is None or self.result.supported)

    @property
    def sig(self) -> FuncSig:
        """The signature with WIT types, as `GET /modules` and the registry show it."""
        return FuncSig(
            tuple(f"{n}: {t}" for n, t in self.params), (str(self.result),) if self.result is not None else ()
        )


_PRIMITIVES: dict[str, WitKind] = {
    "Bool": "bool", "S8": "s8", "S16": "s16", "S32": "s32", "S64": "s64", "U8": "u8", "U16": "u16",
    "U32": "u32", "U64": "u64", "F32": "f32", "F64": "f64", "Char": "char", "String": "string",
}  # fmt: skip


def wit_type(ty: object) -> WitType:
    """A wasmtime component value type as a WitType (read once: wasmtime's objects query C each time)."""
    from wasmtime import component as wc

    name = type(ty).__name__
    if name in _PRIMITIVES:
        return WitType(_PRIMITIVES[name])
    if isinstance(ty, wc.ListType):
        return WitType("list", items=(wit_type(ty.element),))
    if isinstance(ty, wc.OptionType):
        return WitType("option", items=(wit_type(ty.payload),))
    if isinstance(ty, wc.TupleType):
        return WitType("tuple", items=tuple(wit_type(t) for t in ty.elements))
    if isinstance(ty, wc.RecordType):
        return WitType("record", cases=tuple((n, wit_type(t)) for n, t in ty.fields))
    if isinstance(ty, wc.VariantType):
        return WitType("variant", cases=tuple((n, wit_type(t) if t is not None else None) for n, t in ty.cases))
    if isinstance(ty, wc.ResultType):
        ok, err = ty.ok, ty.err
        return WitType(
            "result",
            cases=(
                ("ok", wit_type(ok) if ok is not None else None),
                ("err", wit_type(err) if err is not None else None),
            ),
        )
    if isinstance(ty, wc.EnumType):
        return WitType("enum", names=tuple(ty.names))
    if isinstance(ty, wc.FlagsType):
        return WitType("flags", names=tuple(ty.names))
    detail = {"OwnType": "own<resource>", "BorrowType": "borrow<resource>"}.get(name, name.lower())
    return WitType("unsupported", detail=detail.removesuffix("type"))


def component_functions(component: object, engine: wasmtime.Engine) -> tuple[ComponentFunc, ...]:
    """Every function a component exports, top level and one interface deep (`instance#func`)."""
    from wasmtime import component as wc

    assert isinstance(component, wc.Component)
    out: list[ComponentFunc] = []

    def add(name: str, ty: wc.FuncType) -> None:
        result = ty.result
        params = tuple((n, wit_type(t)) for n, t in ty.params)
        out.append(ComponentFunc(name, params, wit_type(result) if result is not None else None))

    for name, item in component.type.exports(engine).items():
        ty = item.ty
        if isinstance(ty, wc.FuncType):
            add(name, ty)
        elif isinstance(ty, wc.ComponentInstanceType):
            for inner, sub in ty.exports(engine).items():
                if isinstance(sub.ty, wc.FuncType):
                    add(f"{name}#{inner}", sub.ty)
    return tuple(out)


def component_imports(component: object, engine: wasmtime.Engine) -> tuple[Import, ...]:
    """The interfaces a component imports, as `Import(package@version, interface, "instance")`; a
    bare function import is `Import("", name, "func")`."""
    from wasmtime import component as wc

    assert isinstance(component, wc.Component)
    out = []
    for name, item in component.type.imports(engine).items():
        if isinstance(item.ty, wc.ComponentInstanceType) and "/" in name:
            package, _, rest = name.partition("/")
            interface, _, version = rest.partition("@")
            out.append(Import(f"{package}@{version}" if version else package, interface, "instance"))
        else:
            out.append(Import("", name, "func" if isinstance(item.ty, wc.FuncType) else "instance"))
    return tuple(out)


def describe_component(component: object, engine: wasmtime.Engine, digest: str, size: int) -> ModuleInfo:
    """A compiled component described from its type: imports, and exports with the `component`
    convention (None for a function whose types do not map to JSON: resources, streams, futures)."""
    imports = component_imports(component, engine)
    exports = tuple(
        Export(f.name, "func", f.sig, "component" if f.supported else None)
        for f in component_functions(component, engine)
    )
    problems = []
    for imp in imports:
        capability = imp.capability
        where = f"import {imp.module}/{imp.name}" if imp.module else f"import {imp.name}"
        if capability == "sockets":
            problems.append(f"{where}: sockets are not available in the edge sandbox")
        elif capability in (None, "unknown"):
            problems.append(f"{where}: not a WASI preview 2 interface the edge provides (nor hotswap:http/fetch)")
    return ModuleInfo(
        digest=digest, size=size, component=True, imports=imports, exports=exports, problems=tuple(problems)
    )


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
