"""What the control plane learned from Git: the revisions it saw (and whether they verified), the one
it applied last, and the approvals found in commits.

Where it sits: the controller records each revision it applies here; the interface gates
(reconciler.apply.gates) and the control plane's start read the last applied one. Consumers take the
narrow `RevisionStore` Protocol; `SqlRevisions` is its implementation over a `Database`
(`StateStore` offers the same methods too).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Protocol

from reconciler.store.database import Database, Table
from reconciler.store.records import ApprovalRecord, RevisionRecord
from reconciler.store.rows import dt, dt_or_none, required, to_json, ts

__all__ = ["RevisionStore", "SqlRevisions"]


class RevisionStore(Protocol):
    """What a consumer of revisions and approvals needs."""

    def record_revision_seen(
        self, sha: str, *, verified: bool, message: str = "", at: datetime | None = None
    ) -> RevisionRecord: ...

    def mark_revision_applied(self, sha: str, at: datetime | None = None) -> bool: ...

    def get_revision(self, sha: str) -> RevisionRecord | None: ...

    def last_seen_revision(self) -> RevisionRecord | None: ...

    def last_applied_revision(self) -> RevisionRecord | None: ...

    def record_approval(self, approval: ApprovalRecord) -> bool: ...

    def approvals_for(self, module: str, version: str) -> list[ApprovalRecord]: ...


class SqlRevisions:
    """The `revisions` and `approvals` tables of `db`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record_revision_seen(
        self, sha: str, *, verified: bool, message: str = "", at: datetime | None = None
    ) -> RevisionRecord:
        """Note a Git revision the source looked at (first sight time kept; verdict updated)."""
        with self.db.tx(write=True) as tx:
            _REVISIONS.upsert(
                tx, (sha, ts(at or self.db.clock()), int(verified), message, None), update=("verified", "message")
            )
            return required(_REVISIONS.get(tx, sha))

    def mark_revision_applied(self, sha: str, at: datetime | None = None) -> bool:
        """Record that the reconciler applied this revision; False when it was never seen."""
        with self.db.tx(write=True) as tx:
            return tx.run("UPDATE revisions SET applied_at = ? WHERE sha = ?", ts(at or self.db.clock()), sha) == 1

    def get_revision(self, sha: str) -> RevisionRecord | None:
        return self.db.read(_REVISIONS.get, sha)

    def last_seen_revision(self) -> RevisionRecord | None:
        return self.db.read(_REVISIONS.first, "ORDER BY seen_at DESC, sha LIMIT 1")

    def last_applied_revision(self) -> RevisionRecord | None:
        return self.db.read(_REVISIONS.first, "WHERE applied_at IS NOT NULL ORDER BY applied_at DESC, sha LIMIT 1")

    # -- approvals ------------------------------------------------------------------------------

    def record_approval(self, approval: ApprovalRecord) -> bool:
        """Store an approval found in Git; False when this commit already approved it for that principal."""
        with self.db.tx(write=True) as tx:
            return _APPROVALS.insert(
                tx,
                (
                    approval.commit,
                    approval.module,
                    approval.version,
                    approval.principal,
                    to_json(list(approval.roles)),
                    approval.kind,
                    ts(approval.found_at),
                ),
            )

    def approvals_for(self, module: str, version: str) -> list[ApprovalRecord]:
        return self.db.read(_APPROVALS.matching, "found_at, commit_sha, principal", module=module, version=version)


_REVISIONS = Table.of(
    "revisions",
    RevisionRecord,
    "sha, seen_at, verified, message, applied_at",
    key="sha",
    seen_at=dt,
    verified=bool,
    applied_at=dt_or_none,
)
_APPROVALS = Table.of(
    "approvals",
    ApprovalRecord,
    "commit_sha, module, version, principal, roles, kind, found_at",
    key="commit_sha, module, version, principal",
    renamed={"commit_sha": "commit"},
    roles=lambda roles: tuple(json.loads(roles)),
    found_at=dt,
)
