"""The on-disk cache of precompiled modules: compile once, load in a millisecond after a restart.

Where it sits: `edge.runtime.Runtime.compile` asks it for a digest before compiling and stores the
result after. An entry is `<hex digest>-<engine key>.cwasm`, the artifact `Module.serialize`
wrote, plus `.sum` with the artifact's SHA-256. The engine key names the wasmtime version, target
and engine options, so an artifact from another engine is never looked at. On load the checksum
is verified before `Module.deserialize_file` sees the file, and wasmtime checks its own header;
a missing, corrupt or stale entry is removed and rebuilt, never trusted. The directory is private
(0700); writes go to a temporary name and are renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import wasmtime


def engine_key(settings: dict[str, str]) -> str:
    """Names the compiled code: artifacts from another wasmtime, target or option set never load."""
    text = ";".join(f"{k}={v}" for k, v in sorted(settings.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ModuleCache:
    """Precompiled artifacts on disk: `<hex>-<engine key>.cwasm` plus a `.sum` with its SHA-256."""

    def __init__(self, directory: Path, key: str) -> None:
        self.directory = directory
        self.key = key
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, digest: str) -> Path:
        return self.directory / f"{digest.removeprefix('sha256:')}-{self.key}.cwasm"

    def load(self, engine: wasmtime.Engine, digest: str) -> wasmtime.Module | None:
        """The cached module, or None when absent, corrupt or stale (the bad entry is removed)."""
        path = self.path(digest)
        sums = path.with_suffix(".sum")
        try:
            expected = sums.read_text().strip()
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return None
        if actual != expected:
            self.remove(digest)
            return None
        try:
            return wasmtime.Module.deserialize_file(engine, str(path))
        except wasmtime.WasmtimeError:
            self.remove(digest)
            return None

    def store(self, digest: str, module: wasmtime.Module) -> None:
        path = self.path(digest)
        data = bytes(module.serialize())
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        tmp_sum = tmp.with_suffix(".sumtmp")
        tmp_sum.write_text(hashlib.sha256(data).hexdigest())
        tmp_sum.replace(path.with_suffix(".sum"))

    def remove(self, digest: str) -> None:
        path = self.path(digest)
        for p in (path, path.with_suffix(".sum")):
            p.unlink(missing_ok=True)
