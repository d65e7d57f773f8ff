"""The audit log: who did what to which subject, append-only (a database trigger refuses changes and
deletions).

Where it sits: the registry, the node hub, the executor and the API append lines here; the API's
audit routes page through them by sequence number. Consumers take the narrow `AuditLog` Protocol;
`SqlAudit` is its implementation over a `Database` (`StateStore` offers the same methods too).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Protocol

from reconciler.store.database import Database, Table
from reconciler.store.records import AuditEntry, JsonObject
from reconciler.store.rows import dt, to_json, ts

__all__ = ["AuditLog", "SqlAudit"]


class AuditLog(Protocol):
    """What a consumer of the audit log needs."""

    def append_audit(
        self, actor: str, action: str, subject: str, detail: JsonObject | None = None, at: datetime | None = None
    ) -> AuditEntry: ...

    def audit_log(self, *, subject: str | None = None, after: int = 0, limit: int = 100) -> list[AuditEntry]: ...


class SqlAudit:
    """The `audit_log` table of `db`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def append_audit(
        self, actor: str, action: str, subject: str, detail: JsonObject | None = None, at: datetime | None = None
    ) -> AuditEntry:
        """Add a line to the audit log (there is no way to change or remove one)."""
        when = at or self.db.clock()
        with self.db.tx(write=True) as tx:
            row = tx.one(
                "INSERT INTO audit_log (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?) RETURNING seq",
                ts(when),
                actor,
                action,
                subject,
                to_json(detail or {}),
            )
        return AuditEntry(seq=int(row[0]), at=when, actor=actor, action=action, subject=subject, detail=detail or {})

    def audit_log(self, *, subject: str | None = None, after: int = 0, limit: int = 100) -> list[AuditEntry]:
        """Audit lines after sequence number `after`, oldest first, at most `limit`."""
        if subject is None:
            return self.db.read(_AUDIT.select, "WHERE seq > ? ORDER BY seq LIMIT ?", after, limit)
        return self.db.read(_AUDIT.select, "WHERE seq > ? AND subject = ? ORDER BY seq LIMIT ?", after, subject, limit)


_AUDIT = Table.of(
    "audit_log", AuditEntry, "seq, at, actor, action, subject, detail", key="seq", seq=int, at=dt, detail=json.loads
)
