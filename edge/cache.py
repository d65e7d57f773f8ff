"""The on-disk cache of precompiled modules and components: compile once, load in a millisecond after a restart.

Where it sits: `edge.runtime.Runtime.compiled` (for core modules, and for `edge.component`'s
components) asks it for a digest before compiling and stores the result after. An entry is
`<hex digest>-<engine key>.cwasm` (`.component` for a component), the artifact `serialize` wrote,
plus a sum file beside it with the artifact's length and XXH3-128. The engine key names the wasmtime
version, target and engine options, so an artifact from another engine is never looked at. On load
the sum is checked over a read-only mapping of the file before `deserialize_file` maps it, and
wasmtime checks its own header; a missing, corrupt or stale entry is removed and rebuilt, never
trusted.

Why XXH3 and not SHA-256: the sum guards against torn writes, truncation and flipped bits, not
against an attacker. The directory is private (0700) and written only by this node; whoever can
write an artifact there can write its sum too, so a cryptographic hash would buy nothing, and over a
3 MB artifact it costs 1.8 ms where XXH3 costs 0.06 ms. Binaries themselves are still checked
against their SHA-256 digest when they arrive (`edge.blobfetch.ControlPlaneBlobs`, `Runtime.load`).
Writes go to a temporary name and are renamed into place.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import wasmtime
import xxhash

T = TypeVar("T")

MODULE = ".cwasm"
COMPONENT = ".component"


def engine_key(settings: dict[str, str]) -> str:
    """Names the compiled code: artifacts from another wasmtime, target or option set never load."""
    text = ";".join(f"{k}={v}" for k, v in sorted(settings.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def artifact_sum(data: bytes | mmap.mmap) -> str:
    """What the sum file holds: the algorithm, the length and the hash (a truncated file never matches)."""
    return f"xxh3-128:{len(data)}:{xxhash.xxh3_128_hexdigest(data)}"


class ModuleCache:
    """Precompiled artifacts on disk, each with a sum file that is checked before wasmtime reads it."""

    def __init__(self, directory: Path, key: str) -> None:
        self.directory = directory
        self.key = key
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, digest: str, kind: str = MODULE) -> Path:
        return self.directory / f"{digest.removeprefix('sha256:')}-{self.key}{kind}"

    @staticmethod
    def sum_path(path: Path) -> Path:
        return path.with_name(path.name + ".sum")

    def load(self, engine: wasmtime.Engine, digest: str) -> wasmtime.Module | None:
        """The cached module, or None when absent, corrupt or stale (the bad entry is removed)."""
        return self.fetch(digest, MODULE, lambda path: wasmtime.Module.deserialize_file(engine, path))

    def store(self, digest: str, module: wasmtime.Module) -> None:
        self.put(digest, MODULE, bytes(module.serialize()))

    def fetch(self, digest: str, kind: str, deserialize: Callable[[str], T]) -> T | None:
        """`deserialize(path)` of an entry whose sum matches; None (and the entry removed) otherwise."""
        path = self.path(digest, kind)
        try:
            expected = self.sum_path(path).read_text().strip()
            good = _sum_of_file(path) == expected
        except OSError:
            return None
        if good:
            try:
                return deserialize(str(path))
            except wasmtime.WasmtimeError:
                pass
        self.remove(digest, kind)
        return None

    def put(self, digest: str, kind: str, artifact: bytes) -> None:
        path = self.path(digest, kind)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(artifact)
        tmp.replace(path)
        tmp.write_text(artifact_sum(artifact))
        tmp.replace(self.sum_path(path))

    def remove(self, digest: str, kind: str = MODULE) -> None:
        path = self.path(digest, kind)
        for p in (path, self.sum_path(path)):
            p.unlink(missing_ok=True)


def _sum_of_file(path: Path) -> str:
    """The artifact's sum, read through a mapping (the page cache is hashed in place, never copied)."""
    with path.open("rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return artifact_sum(b"")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return artifact_sum(view)
