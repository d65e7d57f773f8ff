"""What a WebAssembly binary is, as data: `ModuleInfo` with its imports, exports and their signatures.

Where it sits: the vocabulary of binary inspection. `edge.wasmbinary` (core modules, from their
sections) and `edge.wittypes` (components, from their type) fill these in, `edge.wasm.inspect`
returns them, and the fleet loader, the registry, the interface checks and the edge runtime read
them. It also says which WASI capability grants each import (`WASI_P1_CAPABILITIES` for preview 1
functions, `WASI_P2_CAPABILITIES` for preview 2 interfaces). Plain data, no wasmtime.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "GRANTABLE_CAPABILITIES",
    "LINKED_P1_CAPABILITIES",
    "NUMERIC_TYPES",
    "PAGE_BYTES",
    "WASI_P1_CAPABILITIES",
    "WASI_P1_MODULES",
    "WASI_P2_CAPABILITIES",
    "Convention",
    "Export",
    "FuncSig",
    "Import",
    "ModuleInfo",
    "WasmError",
    "sha256_digest",
    "wasi_p2_capability",
]

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


def sha256_digest(data: bytes) -> str:
    """The content address of `data` (`sha256:<hex>`): a `ModuleInfo`'s digest, a blob's key."""
    return "sha256:" + hashlib.sha256(data).hexdigest()
