"""A Git source's latest revision as the controller reads it, for tests that drive a Controller
without a repository (`reconciler.apply.controller.SourceLike`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.spec.approvals import Approval
from reconciler.spec.fleet import DesiredFleet


@dataclass
class Revision:
    sha: str
    fleet: DesiredFleet | None
    approvals: tuple[Approval, ...] = ()


@dataclass
class Source:
    """The latest revision; `fleet_at` answers for it, and for any sha in `history`."""

    latest: Revision | None = None
    history: dict[str, DesiredFleet | None] = field(default_factory=dict)

    def fleet_at(self, sha: str) -> DesiredFleet | None:
        if sha in self.history:
            return self.history[sha]
        return self.latest.fleet if self.latest is not None and self.latest.sha == sha else None
