"""Admission: whether a module binary can run on the edge sandbox within its limits. Pure, no I/O.

Where it sits: the one check for both places that accept a binary. The fleet loader
(`reconciler.spec.sources.check_binary`) reports each problem at the Module's file and line; the
registry (`reconciler.apply.registry.Registry.register`) refuses an upload naming them all. The
binary is described once per digest (`edge.wasm.inspect_cached`); this only reads that description.
The node enforces the same limits again when it instantiates (its Store limits).
"""

from __future__ import annotations

from edge import wasm

MIB = 1024 * 1024
MAX_TABLE_ELEMENTS = 10_000_000  # a table larger than this at start is refused (the registry's default)


def size(n: int) -> str:
    """Bytes as the limits are written: MB when whole sixteenths of one (Wasm pages), else bytes."""
    if n and n % (MIB // 16) == 0:
        return f"{n / MIB:g} MB"
    return "1 byte" if n == 1 else f"{n} bytes"


def check(info: wasm.ModuleInfo, memory_limit_bytes: int, max_table_elements: int = MAX_TABLE_ELEMENTS) -> list[str]:
    """Every reason `info`'s binary cannot be admitted under these limits; empty when it can.

    WASI env and filesystem imports link against an empty grant (no variables, no preopened
    directories), so toolchains that import them unconditionally still run; sockets and non-WASI
    imports cannot be satisfied and are in `info.problems`.
    """
    out = [f"imports the edge sandbox cannot grant: {problem}" for problem in info.problems]
    memory = info.memory_min_pages * wasm.PAGE_BYTES
    if memory > memory_limit_bytes:
        out.append(
            f"declares {memory / MIB:g} MB of initial memory ({info.memory_min_pages} pages), "
            f"over its {size(memory_limit_bytes)} limit"
        )
    if info.table_min_elements > max_table_elements:
        out.append(f"declares a table of {info.table_min_elements} elements, over the {max_table_elements} allowed")
    return out
