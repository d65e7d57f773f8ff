"""WIT interface packages as the fleet declares them: one row per package id, replaced in place.

Where it sits: beside the module versions (reconciler.store.modules) as the other thing a fleet
registers; the API's interface routes and the store tests read it. Consumers take the narrow
`InterfaceStore` Protocol; `SqlInterfaces` is its implementation over a `Database`.
"""

from __future__ import annotations

from typing import Protocol

from reconciler.store.database import Database, Table
from reconciler.store.records import InterfaceRecord
from reconciler.store.rows import dt, required, ts

__all__ = ["InterfaceStore", "SqlInterfaces"]


class InterfaceStore(Protocol):
    """What a consumer of interface packages needs."""

    def put_interface(self, interface: InterfaceRecord) -> InterfaceRecord: ...

    def get_interface(self, interface_id: str) -> InterfaceRecord | None: ...

    def list_interfaces(self, name: str | None = None) -> list[InterfaceRecord]: ...


class SqlInterfaces:
    """The `interfaces` table of `db`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def put_interface(self, interface: InterfaceRecord) -> InterfaceRecord:
        """Insert or replace an interface package (creation time kept)."""
        created = interface.created_at or self.db.clock()
        with self.db.tx(write=True) as tx:
            _INTERFACES.upsert(
                tx,
                (
                    interface.id,
                    interface.name,
                    interface.package,
                    interface.version,
                    interface.wasi,
                    interface.wit,
                    interface.digest,
                    interface.status,
                    interface.approved_by,
                    ts(created),
                ),
                update=("name", "package", "version", "wasi", "wit", "digest", "status", "approved_by"),
            )
            return required(_INTERFACES.get(tx, interface.id))

    def get_interface(self, interface_id: str) -> InterfaceRecord | None:
        return self.db.read(_INTERFACES.get, interface_id)

    def list_interfaces(self, name: str | None = None) -> list[InterfaceRecord]:
        return self.db.read(_INTERFACES.matching, "id", name=name)


_INTERFACES = Table.of(
    "interfaces",
    InterfaceRecord,
    "id, name, package, version, wasi, wit, digest, status, approved_by, created_at",
    created_at=dt,
)
