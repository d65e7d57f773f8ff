"""The files fleet documents name: module binaries and Interface WIT, checked as the registry would.

Where it sits: under the loader's cross-document step (`reconciler.spec.assemble`), which calls
`module_binary` for every Module source path, `check_binary` on what it returns, `read_wit` for
every Interface and `check_implements` for every Module that implements one. A path must stay
inside the fleet root; a `.wat` is compiled; a binary must be valid WebAssembly under the module
size limit, with imports that can be satisfied and initial memory within its limit. `read_binary`
(the default `BinaryReader`) caches binaries by content; `reconciler.spec.incremental` passes its
own reader keyed by Git blob.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

from edge import wasm
from reconciler.interfaces import ToolError, WitError, WitPackage, check_module, parse_wit
from reconciler.spec import admission
from reconciler.spec.documents import Collector, Doc, field_name, remember
from reconciler.spec.fleet import Binary
from reconciler.spec.models import MAX_MODULE_BYTES, Interface, Module

__all__ = [
    "BINARY_CACHE",
    "BinaryReader",
    "check_binary",
    "check_implements",
    "check_path",
    "module_binary",
    "read_binary",
    "read_wit",
]

BINARY_CACHE: OrderedDict[tuple[str, str], Binary | str] = OrderedDict()
BinaryReader = Callable[[Path, Path], Binary | str]  # (root, file) -> the binary, or why it is not one


def read_wit(root: Path, doc: Doc, target: Path, out: Collector) -> WitPackage | None:
    """Resolve an Interface's WIT with wasm-tools; its errors name the WIT file's own line."""
    assert isinstance(doc.model, Interface)
    loc: list[str | int] = ["spec", "wit"]
    try:
        package = parse_wit(target)
    except WitError as exc:
        base = target if target.is_file() else target / (exc.file or "")
        where = base.relative_to(root).as_posix() if base.is_relative_to(root) else (exc.file or target.name)
        line = f":{exc.line}" if exc.line else ""
        out.add(doc.path, doc.line_of(loc), field_name(loc), f"{where}{line}: {exc.message}")
        return None
    except ToolError as exc:
        out.add(doc.path, doc.line_of(loc), field_name(loc), f"cannot run wasm-tools: {exc}")
        return None
    declared = doc.model.spec.package
    if package.name != declared:
        out.add(
            doc.path,
            doc.line_of(["spec", "package"]),
            "spec.package",
            f"{declared!r} does not match the WIT, which declares {package.name!r}",
        )
    return package


def check_implements(
    doc: Doc, iface: Interface, wit: WitPackage, binaries: Mapping[tuple[str, str], Binary], out: Collector
) -> None:
    """Every version of a module that `implements` an interface must satisfy it."""
    assert isinstance(doc.model, Module)
    spec = doc.model.spec
    assert spec.implements is not None
    ref = spec.implements.split("/", 1)[1].split("@", 1)[0] if "/" in spec.implements else None
    loc: list[str | int] = ["spec", "implements"]
    for version in spec.all_versions():
        binary = binaries.get((doc.model.metadata.name, version))
        if binary is None:
            continue
        problems = check_module(binary.info, wit, ref, spec.capabilities.granted(), iface.spec.wasi, binary=binary.data)
        for problem in problems:
            out.add(doc.path, doc.line_of(loc), field_name(loc), f"{binary.path} ({version}): {problem}")


def check_path(
    root: Path, doc: Doc, relpath: str, loc: list[str | int], out: Collector, must_be_file: bool = True
) -> Path | None:
    """Resolve `relpath` against the document's folder; it must exist and stay inside the root."""
    target = (doc.file.parent / relpath).resolve()
    where = field_name(loc)
    if not target.is_relative_to(root):
        out.add(doc.path, doc.line_of(loc), where, f"{relpath!r} leaves the fleet root")
        return None
    if not target.exists():
        out.add(doc.path, doc.line_of(loc), where, f"{relpath!r} does not exist")
        return None
    if must_be_file and not target.is_file():
        out.add(doc.path, doc.line_of(loc), where, f"{relpath!r} is not a file")
        return None
    return target


def module_binary(
    root: Path,
    doc: Doc,
    relpath: str,
    loc: list[str | int],
    out: Collector,
    cache: dict[Path, Binary | str],
    read: BinaryReader,
) -> Binary | None:
    target = check_path(root, doc, relpath, loc, out)
    if target is None:
        return None
    if target not in cache:
        cache[target] = read(root, target)
    found = cache[target]
    if isinstance(found, str):
        out.add(doc.path, doc.line_of(loc), field_name(loc), found)
        return None
    return found


def read_binary(root: Path, target: Path) -> Binary | str:
    """The binary of a source file, or the message saying why it is not a usable module (cached by content)."""
    rel = target.relative_to(root).as_posix()
    try:
        raw = target.read_bytes()
    except OSError as exc:
        return f"{rel} cannot be read: {exc}"
    key = (rel, hashlib.sha256(raw).hexdigest())
    hit = BINARY_CACHE.get(key)
    if hit is None:
        hit = remember(BINARY_CACHE, key, _compile_binary(rel, target, raw))
    return hit


def _compile_binary(rel: str, target: Path, raw: bytes) -> Binary | str:
    try:
        if len(raw) > MAX_MODULE_BYTES * (4 if target.suffix == ".wat" else 1):
            return f"{rel} is larger than the 50 MB module limit"
        data = wasm.compile_wat(raw.decode("utf-8")) if target.suffix == ".wat" else raw
        if len(data) > MAX_MODULE_BYTES:
            return f"{rel} is {len(data)} bytes, over the 50 MB module limit"
        info = wasm.inspect_cached(data)  # the registry finds it by digest when it registers these bytes
    except wasm.WasmError as exc:
        line = f":{exc.line}" if exc.line else ""
        return f"{rel}{line}: {exc.message}"
    except UnicodeDecodeError as exc:
        return f"{rel} cannot be read: {exc}"
    return Binary(digest=info.digest, data=data, path=rel, info=info)


def check_binary(doc: Doc, binary: Binary, memory_mb: int, loc: list[str | int], out: Collector) -> None:
    """What the registry refuses too (`reconciler.spec.admission.check`), at the source's line."""
    where = field_name([*loc, "path"])
    line = doc.line_of([*loc, "path"])
    for problem in admission.check(binary.info, memory_mb * admission.MIB):
        out.add(doc.path, line, where, f"{binary.path}: {problem}")
