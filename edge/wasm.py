"""Binary inspection: validate a WebAssembly binary and describe what it needs and offers.

Used by the fleet loader (`hotswap validate`), by the control plane's registry, and by the edge
runtime when it loads a module. Pure wasmtime, no aiohttp, no I/O beyond what the caller passes in.

The calling convention of each export is decided here, once, from its signature:
  numeric   every parameter and the result (if any) is i32/i64/f32/f64;
  json      the module exports `memory` and `alloc(i32) -> i32`, and the function is
            `(i32, i32) -> i64`, the result packed as `(ptr << 32) | len`;
  command   `_start: () -> ()` of a WASI module: JSON args on stdin, the result on stdout.
Components (WASI preview 2) are recognised by their layer byte and described as such.
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

# Every preview 1 function, by the capability that grants it. `sock_*` belong to `network`, which
# the edge sandbox never provides (there are no sockets in preview 1 worth granting).
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
    **dict.fromkeys(("sock_accept", "sock_recv", "sock_send", "sock_shutdown"), "network"),
}
GRANTABLE_CAPABILITIES = frozenset({"process", "env", "clocks", "random", "stdio", "filesystem"})


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
        return self.module in WASI_P1_MODULES

    @property
    def capability(self) -> str | None:
        """The WASI capability this import needs, or None for a non-WASI import."""
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


def _sig(ty: wasmtime.FuncType) -> FuncSig:
    return FuncSig(tuple(str(p) for p in ty.params), tuple(str(r) for r in ty.results))


def _kind(ty: object) -> str:
    if isinstance(ty, wasmtime.FuncType):
        return "func"
    if isinstance(ty, wasmtime.MemoryType):
        return "memory"
    if isinstance(ty, wasmtime.TableType):
        return "table"
    return "global"


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
    validate(data)
    digest = sha256_digest(data)
    if is_component(data):
        return ModuleInfo(digest=digest, size=len(data), component=True, imports=(), exports=())
    return describe(wasmtime.Module(engine(), data), digest, len(data))


def describe(module: wasmtime.Module, digest: str, size: int) -> ModuleInfo:
    """Describe a module already compiled (or loaded from a precompiled artifact) by any engine."""
    imports = tuple(
        Import(
            i.module,
            i.name or "",
            _kind(i.type),
            _sig(i.type) if isinstance(i.type, wasmtime.FuncType) else None,
        )
        for i in module.imports
    )
    raw_exports: dict[str, FuncSig | None] = {}
    kinds: dict[str, str] = {}
    mem_min, mem_max, table_min = 0, None, 0
    for e in module.exports:
        kinds[e.name] = _kind(e.type)
        raw_exports[e.name] = _sig(e.type) if isinstance(e.type, wasmtime.FuncType) else None
    for ty in [*(e.type for e in module.exports), *(i.type for i in module.imports)]:
        if isinstance(ty, wasmtime.MemoryType):
            mem_min = max(mem_min, ty.limits.min)
            mem_max = ty.limits.max
        elif isinstance(ty, wasmtime.TableType):
            table_min = max(table_min, ty.limits.min)
    wasi = any(i.is_wasi for i in imports)
    exports = tuple(
        Export(
            name,
            kinds[name],
            sig,
            convention_of(name, sig, raw_exports, wasi) if sig is not None else None,
        )
        for name, sig in raw_exports.items()
    )
    problems = tuple(
        f"import {i.module}.{i.name}: "
        + (
            "sockets are not available in the edge sandbox"
            if i.capability == "network"
            else "not a WASI preview 1 function"
            if i.capability == "unknown"
            else "only WASI preview 1 imports can be satisfied"
        )
        for i in imports
        if i.capability not in GRANTABLE_CAPABILITIES
    )
    return ModuleInfo(
        digest=digest,
        size=size,
        component=False,
        imports=imports,
        exports=exports,
        memory_min_pages=mem_min,
        memory_max_pages=mem_max,
        table_min_elements=table_min,
        problems=problems,
    )
