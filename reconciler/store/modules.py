"""Registered module versions: one immutable row per `{name}-v{version}`, keyed by digest too.

Where it sits: the registry (reconciler.apply.registry) adds, reads and deletes module versions here after
it has stored their bytes in the blob store; the planner's inputs and the API read them. Consumers
take the narrow `ModuleStore` Protocol; `SqlModules` is its implementation over a `Database`
(`StateStore` offers the same methods too).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from reconciler.store.database import Database, Table
from reconciler.store.errors import ConflictError, ModuleConflictError
from reconciler.store.records import BuildInfo, ExportRef, ImportRef, ModuleRecord
from reconciler.store.rows import dt, to_json, ts

__all__ = ["ModuleStore", "SqlModules"]


class ModuleStore(Protocol):
    """What a consumer of module versions needs."""

    def add_module(self, record: ModuleRecord) -> tuple[ModuleRecord, bool]: ...

    def get_module(self, module_id: str) -> ModuleRecord | None: ...

    def list_modules(self, name: str | None = None) -> list[ModuleRecord]: ...

    def modules_with_digest(self, digest: str) -> list[ModuleRecord]: ...

    def delete_module(self, module_id: str) -> bool: ...


class SqlModules:
    """The `modules` table of `db`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def add_module(self, record: ModuleRecord) -> tuple[ModuleRecord, bool]:
        """Insert a module version; returns (the stored record, whether it was inserted now).

        The same id with the same digest is a no-op returning the stored record; the same id with a
        different digest raises `ModuleConflictError`. Concurrent callers end with exactly one row.
        """
        with self.db.tx(write=True) as tx:
            inserted = _MODULES.insert(tx, _module_row(record))
            stored = _MODULES.get(tx, record.id)
        if stored is None:  # the (name, version) pair exists under another id: cannot happen with our ids
            raise ConflictError(f"module {record.name} {record.version} is already registered under another id")
        if stored.digest != record.digest:
            raise ModuleConflictError(record.id, stored.digest, record.digest)
        return stored, inserted

    def get_module(self, module_id: str) -> ModuleRecord | None:
        return self.db.read(_MODULES.get, module_id)

    def list_modules(self, name: str | None = None) -> list[ModuleRecord]:
        """Every module version (or those of one module name), by name then registration time."""
        return self.db.read(_MODULES.matching, "name, created_at, id", name=name)

    def modules_with_digest(self, digest: str) -> list[ModuleRecord]:
        return self.db.read(_MODULES.matching, "id", digest=digest)

    def delete_module(self, module_id: str) -> bool:
        """Remove a module version's row; returns whether it existed. The caller checks use first."""
        with self.db.tx(write=True) as tx:
            return tx.run("DELETE FROM modules WHERE id = ?", module_id) == 1


def _module_row(m: ModuleRecord) -> tuple[Any, ...]:
    return (
        m.id,
        m.name,
        m.version,
        m.digest,
        m.size,
        m.compressed_size,
        to_json([[i.module, i.name, i.kind] for i in m.imports]),
        to_json([[e.name, e.kind, e.signature, e.convention] for e in m.exports]),
        to_json(list(m.wasi_imports)),
        to_json(list(m.capabilities)),
        int(m.component),
        m.memory_min_pages,
        m.build.commit,
        m.build.timestamp,
        ts(m.created_at),
    )


def _module(row: Any) -> ModuleRecord:
    return ModuleRecord(
        id=row[0],
        name=row[1],
        version=row[2],
        digest=row[3],
        size=int(row[4]),
        compressed_size=int(row[5]),
        imports=tuple(ImportRef(*i) for i in json.loads(row[6])),
        exports=tuple(ExportRef(*e) for e in json.loads(row[7])),
        wasi_imports=tuple(json.loads(row[8])),
        capabilities=tuple(json.loads(row[9])),
        component=bool(row[10]),
        memory_min_pages=int(row[11]),
        build=BuildInfo(commit=row[12], timestamp=row[13]),
        created_at=dt(row[14]),
    )


_MODULES = Table(
    "modules",
    "id, name, version, digest, size, compressed_size, imports, exports, wasi_imports, capabilities, "
    "component, memory_min_pages, build_commit, build_timestamp, created_at",
    _module,
)
