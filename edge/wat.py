"""WAT text to a WebAssembly binary, with the line of a syntax error.

Where it sits: beside binary inspection. The fleet loader compiles a module source that ends in
`.wat` before inspecting it (`reconciler.spec.sources`); tests and benchmarks write their modules
as WAT. The binary it returns is inspected like any other (`edge.wasm.inspect`).
"""

from __future__ import annotations

import re

import wasmtime

from edge.wasminfo import WasmError

__all__ = ["compile_wat"]

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
