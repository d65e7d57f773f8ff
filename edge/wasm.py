"""Binary inspection: validate a WebAssembly binary and describe what it needs and offers.

Where it sits: the entry point of binary inspection. The fleet loader (`hotswap validate`,
`reconciler.spec.sources`), the control plane's registry and the edge runtime when it loads a module
call `inspect`; the loader and the registry call `inspect_cached`, so the bytes a Git revision names
are parsed once on their way from the loader to the registry (`DESCRIPTIONS`, by digest). The parts
live beside it: `edge.wasminfo` (what a binary is: `ModuleInfo`, imports, exports, capabilities),
`edge.wasmbinary` (a core module read from its sections), `edge.wittypes` (a component read from its
type) and `edge.wat` (WAT text to a binary). Pure wasmtime, no aiohttp, no I/O beyond what the
caller passes in.

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

import threading
from collections import OrderedDict
from functools import cache

import wasmtime

from edge.wasmbinary import describe
from edge.wasminfo import (
    NUMERIC_TYPES,
    PAGE_BYTES,
    WASI_P1_CAPABILITIES,
    Convention,
    Export,
    FuncSig,
    ModuleInfo,
    WasmError,
    sha256_digest,
)
from edge.wat import compile_wat
from edge.wittypes import ComponentFunc, WitType, component_functions, describe_component

# Most callers write `from edge import wasm` and then `wasm.ModuleInfo`, `wasm.compile_wat`,
# `wasm.WitType`... at many call sites (the edge runtime, the controller, the registry, the CLI, the
# tests), so the names of the modules beside this one that those call sites use stay importable from
# here, and only those; new code imports them from where they live (`edge.wasminfo`,
# `edge.wasmbinary`, `edge.wittypes`, `edge.wat`).
__all__ = [
    "DESCRIPTIONS",
    "NUMERIC_TYPES",
    "PAGE_BYTES",
    "WASI_P1_CAPABILITIES",
    "ComponentFunc",
    "Convention",
    "Descriptions",
    "Export",
    "FuncSig",
    "ModuleInfo",
    "WasmError",
    "WitType",
    "compile_wat",
    "component_functions",
    "describe",
    "describe_component",
    "engine",
    "inspect",
    "inspect_cached",
    "is_component",
    "sha256_digest",
    "validate",
]


@cache
def engine() -> wasmtime.Engine:
    """The engine used for inspection only (the runtime has its own, with epoch interruption)."""
    return wasmtime.Engine()


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


def inspect(data: bytes, digest: str | None = None) -> ModuleInfo:
    """Validate and describe a binary. Raises WasmError when it is not valid WebAssembly.

    `digest`, when the caller has already hashed these exact bytes, saves hashing them again."""
    digest = digest or sha256_digest(data)
    if is_component(data):
        import wasmtime.component

        try:
            component = wasmtime.component.Component(_component_engine(), data)
        except wasmtime.WasmtimeError as exc:
            raise WasmError(str(exc).strip().splitlines()[0] or "invalid component") from None
        return describe_component(component, _component_engine(), digest, len(data))
    validate(data)
    return describe(data, digest)


class Descriptions:
    """The `ModuleInfo` of the binaries inspected lately, by digest (least recently used dropped first).

    A binary a Git revision names is inspected by the fleet loader and again by the registry when
    the controller registers it, every pass that names a new version; the second is a lookup here.
    Validation compiles (a component) or validates every function body (a core module), so that is
    the costly part. Only valid binaries are kept: an invalid one stops the loader before the
    registry sees it, and an upload that fails is not worth memory. `parses` counts the binaries
    actually inspected, for tests and benchmarks.
    """

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self.parses = 0
        self._infos: OrderedDict[str, ModuleInfo] = OrderedDict()
        self._lock = threading.Lock()  # the loader and the registry run in worker threads

    def inspect(self, data: bytes, digest: str | None = None) -> ModuleInfo:
        """`inspect(data)`, from the cache when these bytes were inspected before. `digest` must be the
        `sha256_digest` of exactly `data` (the caller's own hash of the bytes it holds); without it
        the bytes are hashed here."""
        digest = digest or sha256_digest(data)
        with self._lock:
            info = self._infos.get(digest)
            if info is not None:
                self._infos.move_to_end(digest)
                return info
        # Inspected outside the lock: two threads with the same new bytes both parse them, and both
        # get the same description; nobody waits behind a 50 MB module.
        info = inspect(data, digest)
        with self._lock:
            self.parses += 1
            self._infos[digest] = info
            self._infos.move_to_end(digest)
            while len(self._infos) > self.capacity:
                self._infos.popitem(last=False)
        return info

    def clear(self) -> None:
        with self._lock:
            self._infos.clear()


DESCRIPTIONS = Descriptions()


def inspect_cached(data: bytes, digest: str | None = None) -> ModuleInfo:
    """`inspect`, parsed once per digest in this process (`DESCRIPTIONS`)."""
    return DESCRIPTIONS.inspect(data, digest)
