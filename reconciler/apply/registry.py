"""The module registry: turns uploaded bytes into an immutable, stored, described module version.

Used by the API (`POST /api/v1/wasm/modules`, CI uploads) and by the reconciler for module sources it
finds in the fleet repository; the executor and the API read binaries back through it.

register(name, version, bytes):
  1. check the name and the semver version; the module id is `{name}-v{version}`;
  2. an id already registered: same digest -> idempotent (`created` False), else `ModuleConflictError`;
  3. inspect the binary with `edge.wasm`: invalid WebAssembly, imports the edge sandbox cannot grant,
     or an initial memory/table above the limits -> `InvalidModuleError` saying which;
  4. put the bytes in the blob store (content-addressed, so a crash here leaves only an unreferenced
     blob, invisible and harmless);
  5. insert the row in the state store: the commit point, after which the module exists;
  6. mirror the record to `wasm-modules/{name}/{version}/metadata.json` and append to the audit log.

Retention (`prune`) keeps the newest five versions of each module and every version in use.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from opentelemetry import trace

from edge import wasm
from edge.protocol import module_id
from reconciler.spec import admission
from reconciler.spec.fields import NAME_PATTERN, SEMVER_RE
from reconciler.store.blobs import BlobStore, VerifiedBlob
from reconciler.store.errors import InvalidModuleError, ModuleConflictError, ModuleInUseError, UnknownModuleError
from reconciler.store.records import BuildInfo, ExportRef, ImportRef, ModuleRecord
from reconciler.store.state import Clock, StateStore, utcnow

log = logging.getLogger(__name__)

MIB = admission.MIB
KEEP_VERSIONS = 5
NAME_RE = re.compile(NAME_PATTERN)  # the fleet model's rules, so every module it accepts registers


@dataclass(frozen=True)
class RegistryLimits:
    """What a module may declare to be accepted (the spec: 50 MB modules, memory within limits)."""

    max_module_bytes: int = 50 * MIB
    memory_limit_bytes: int = 512 * MIB
    max_table_elements: int = admission.MAX_TABLE_ELEMENTS


class RegistrationObserver(Protocol):
    """Told of every version the registry adds (not of a repeat of one it has): the metrics."""

    def registered_version(self, size: int, seconds: float) -> None: ...


@dataclass(frozen=True)
class Registered:
    """A module version as `Registry.register` left it (a node's registration is `edge.nodeapi.Registration`)."""

    module: ModuleRecord
    created: bool  # False when the same id and bytes were already registered


def check_name(name: object, field: str = "name") -> str:
    if not isinstance(name, str) or not name:
        raise InvalidModuleError(field, "is required (a lowercase name such as greeter)")
    if not NAME_RE.match(name):
        raise InvalidModuleError(
            field,
            f"{name!r} is not a module name (lowercase letters, digits and '-', not starting or ending "
            "with '-', at most 63 characters)",
        )
    return name


def check_version(version: object, field: str = "version") -> str:
    if not isinstance(version, str) or not version:
        raise InvalidModuleError(field, "is required (a semver version such as 1.2.3)")
    if not SEMVER_RE.match(version):
        raise InvalidModuleError(field, f"{version!r} is not semver (MAJOR.MINOR.PATCH, e.g. 1.2.3 or 1.2.3-rc.1)")
    if len(version) > 128:
        raise InvalidModuleError(field, "is longer than 128 characters")
    return version


def semver_key(version: str) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
    """Sort key in semver precedence: 1.0.0-alpha < 1.0.0-alpha.1 < 1.0.0-beta < 1.0.0 < 1.0.1
    (build metadata, `+...`, does not count)."""
    match = SEMVER_RE.match(version)
    if match is None:
        raise ValueError(f"{version!r} is not semver")
    major, minor, patch, pre = match.group(1), match.group(2), match.group(3), match.group(4)
    if pre is None:
        return int(major), int(minor), int(patch), 1, ()
    idents = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return int(major), int(minor), int(patch), 0, idents


def check_build(build: BuildInfo | None) -> BuildInfo:
    if build is None:
        return BuildInfo()
    if build.commit is not None and (not build.commit or len(build.commit) > 200 or not build.commit.isprintable()):
        raise InvalidModuleError("build.commit", "must be a commit id or ref of 1-200 printable characters")
    if build.timestamp is not None:
        try:
            datetime.fromisoformat(build.timestamp)
        except ValueError:
            raise InvalidModuleError(
                "build.timestamp", f"{build.timestamp!r} is not an ISO 8601 time (e.g. 2026-01-31T12:00:00Z)"
            ) from None
    return build


def wasi_version(record: ModuleRecord) -> str | None:
    if record.component:
        return "preview2"
    return "preview1" if record.wasi_imports else None


def module_json(record: ModuleRecord) -> dict[str, Any]:
    """The record as the API answers it and as metadata.json stores it."""
    return {
        "id": record.id,
        "name": record.name,
        "version": record.version,
        "digest": record.digest,
        "size": record.size,
        "compressedSize": record.compressed_size,
        "imports": [{"module": i.module, "name": i.name, "kind": i.kind} for i in record.imports],
        "exports": [
            {"name": e.name, "kind": e.kind, "signature": e.signature, "convention": e.convention}
            for e in record.exports
        ],
        "wasi": {
            "version": wasi_version(record),
            "imports": list(record.wasi_imports),
            "capabilities": list(record.capabilities),
        },
        "component": record.component,
        "memoryMinPages": record.memory_min_pages,
        "build": {"commit": record.build.commit, "timestamp": record.build.timestamp},
        "createdAt": record.created_at.isoformat().replace("+00:00", "Z"),
    }


def expired_versions(
    modules: Iterable[ModuleRecord], in_use: Collection[str], keep: int = KEEP_VERSIONS
) -> list[ModuleRecord]:
    """The versions retention may delete: all but the newest `keep` of each module, never one in use."""
    by_name: dict[str, list[ModuleRecord]] = {}
    for record in modules:
        by_name.setdefault(record.name, []).append(record)
    expired: list[ModuleRecord] = []
    for name in sorted(by_name):
        newest_first = sorted(by_name[name], key=lambda m: semver_key(m.version), reverse=True)
        expired.extend(m for m in newest_first[keep:] if m.id not in in_use)
    return expired


class Registry:
    """Registration, lookup, download and deletion of module versions over a state and a blob store.

    Synchronous (it hashes, compresses and talks to S3): async callers use `asyncio.to_thread`.
    """

    def __init__(
        self,
        state: StateStore,
        blobs: BlobStore,
        *,
        limits: RegistryLimits | None = None,
        clock: Clock = utcnow,
        tracer: trace.Tracer | None = None,
        observer: RegistrationObserver | None = None,
    ) -> None:
        self.state = state
        self.observer = observer
        self.blobs = blobs
        self.limits = limits or RegistryLimits()
        self._clock = clock
        self._tracer = tracer or trace.get_tracer("hotswap.registry")
        # Deleting a blob and registering the same bytes under another id must not interleave.
        self._blob_lock = threading.Lock()

    def register(
        self,
        name: str,
        version: str,
        data: bytes,
        build: BuildInfo | None = None,
        *,
        memory_limit_bytes: int | None = None,
        actor: str = "system",
    ) -> Registered:
        """Validate and store a module version (see the module docstring for the steps).

        Traced as the span `wasm.module.register`, with `wasm.module.validate` inside it.
        """
        attributes: dict[str, str | int] = {
            "wasm.module.name": str(name),
            "wasm.module.version": str(version),
            "wasm.module.size": len(data),
        }
        started = time.perf_counter()
        with self._tracer.start_as_current_span("wasm.module.register", attributes=attributes) as span:
            registration = self._register(name, version, data, build, memory_limit_bytes, actor)
            span.set_attribute("wasm.module.id", registration.module.id)
            span.set_attribute("wasm.module.digest", registration.module.digest)
            span.set_attribute("wasm.module.created", registration.created)
        if registration.created and self.observer is not None:
            self.observer.registered_version(len(data), time.perf_counter() - started)
        return registration

    def _register(
        self,
        name: str,
        version: str,
        data: bytes,
        build: BuildInfo | None,
        memory_limit_bytes: int | None,
        actor: str,
    ) -> Registered:
        check_name(name)
        check_version(version)
        build = check_build(build)
        ident = module_id(name, version)
        if not data:
            raise InvalidModuleError("wasm", "is empty")
        if len(data) > self.limits.max_module_bytes:
            raise InvalidModuleError(
                "wasm", f"is {len(data)} bytes; modules are limited to {self.limits.max_module_bytes} bytes"
            )
        digest = wasm.sha256_digest(data)
        existing = self.state.get_module(ident)
        if existing is not None:
            if existing.digest != digest:
                raise ModuleConflictError(ident, existing.digest, digest)
            self._ensure_stored(existing, data)
            return Registered(existing, created=False)
        with self._tracer.start_as_current_span("wasm.module.validate", attributes={"wasm.module.digest": digest}):
            info = self._inspect(data, digest, memory_limit_bytes or self.limits.memory_limit_bytes)
        with self._blob_lock:
            stored = self.blobs.put(data)
            record, created = self.state.add_module(
                ModuleRecord(
                    id=ident,
                    name=name,
                    version=version,
                    digest=digest,
                    size=len(data),
                    compressed_size=stored.compressed_size,
                    imports=tuple(ImportRef(i.module, i.name, i.kind) for i in info.imports),
                    exports=tuple(
                        ExportRef(e.name, e.kind, str(e.sig) if e.sig else None, e.convention) for e in info.exports
                    ),
                    wasi_imports=tuple(i.name for i in info.wasi_imports),
                    capabilities=tuple(sorted(info.capabilities)),
                    component=info.component,
                    memory_min_pages=info.memory_min_pages,
                    build=build,
                    created_at=self._clock(),
                )
            )
        self._mirror(record)
        if created:
            self.state.append_audit(
                actor, "module.register", ident, {"digest": digest, "size": len(data), "build": build.commit}
            )
        return Registered(record, created)

    def _inspect(self, data: bytes, digest: str, memory_limit: int) -> wasm.ModuleInfo:
        try:
            # `digest` is the hash of these very bytes, above; a binary the fleet loader has already
            # inspected (every module source in Git) is not parsed again.
            info = wasm.inspect_cached(data, digest)
        except wasm.WasmError as exc:
            raise InvalidModuleError("wasm", f"not valid WebAssembly: {exc.message}") from None
        if problems := admission.check(info, memory_limit, self.limits.max_table_elements):
            raise InvalidModuleError("wasm", "; ".join(problems))
        return info

    def _ensure_stored(self, record: ModuleRecord, data: bytes) -> None:
        """An idempotent re-upload also repairs a missing or damaged blob and metadata.json."""
        with self._blob_lock:
            self.blobs.put(data)
        if self.blobs.read_metadata(record.name, record.version) is None:
            self._mirror(record)

    def _mirror(self, record: ModuleRecord) -> None:
        try:
            self.blobs.write_metadata(record.name, record.version, module_json(record))
        except Exception:  # the row is the truth; a missing mirror is rewritten on the next upload
            log.exception("could not write metadata.json for %s", record.id)

    def get(self, ident: str) -> ModuleRecord:
        record = self.state.get_module(ident)
        if record is None:
            raise UnknownModuleError(ident)
        return record

    def modules(self, name: str | None = None) -> list[ModuleRecord]:
        return self.state.list_modules(name)

    def open_binary(self, ident: str) -> VerifiedBlob:
        """A module's verified bytes, ready to stream (close it, or use it as a context manager)."""
        return self.blobs.open(self.get(ident).digest)

    def open_blob(self, digest: str) -> VerifiedBlob:
        """Verified bytes by digest (UnknownBlobError, BlobCorruptedError; ValueError for a bad digest)."""
        return self.blobs.open(digest)

    def delete(self, ident: str, in_use: Collection[str], *, actor: str = "system") -> ModuleRecord:
        """Remove a version that nothing uses: its row, its metadata.json, and its bytes when no other
        version shares them. Raises ModuleInUseError / UnknownModuleError."""
        if ident in in_use:
            raise ModuleInUseError(ident)
        record = self.get(ident)
        with self._blob_lock:
            if not self.state.delete_module(ident):
                raise UnknownModuleError(ident)
            self.blobs.delete_metadata(record.name, record.version)
            if not self.state.modules_with_digest(record.digest):
                self.blobs.delete(record.digest)
        self.state.append_audit(actor, "module.delete", ident, {"digest": record.digest})
        return record

    def prune(self, in_use: Collection[str], keep: int = KEEP_VERSIONS, *, actor: str = "retention") -> list[str]:
        """Apply retention: delete all but the newest `keep` versions of each module, sparing every
        version in `in_use` (ids that desired state or a rollout names). Returns the ids deleted."""
        removed = []
        for record in expired_versions(self.modules(), in_use, keep):
            try:
                self.delete(record.id, in_use, actor=actor)
            except UnknownModuleError:
                continue  # someone else deleted it meanwhile
            removed.append(record.id)
        return removed
