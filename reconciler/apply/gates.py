"""Interface gates as the controller runs them: the base fleet that changes are judged against (the
last applied revision's, read back from Git after a restart) and each new wait announced once. What
waits and why, and the fleet the planner plans from meanwhile, are `reconciler.planner.gate` (pure).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from reconciler.spec.fleet import DesiredFleet
from reconciler.store.revisions import RevisionStore


class FleetHistory(Protocol):
    def fleet_at(self, sha: str) -> DesiredFleet | None: ...


class InterfaceGates:
    def __init__(self, store: RevisionStore) -> None:
        self.store = store
        self.base: DesiredFleet | None = None
        self.ready = False
        self._announced: set[tuple[str, str]] = set()

    def load_base(self, history: FleetHistory) -> None:
        """The fleet at the last applied revision (None on a first start: nothing to compare with)."""
        applied = self.store.last_applied_revision()
        self.base = history.fleet_at(applied.sha) if applied is not None else None
        self.ready = True

    def applied(self, fleet: DesiredFleet) -> None:
        """`fleet` is now the last applied revision's: later changes are judged against it."""
        self.base = fleet

    def announce(self, waits: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        """The (module, message) pairs of `waits` not announced before, in module order."""
        new = tuple((m, msg) for m, msg in sorted(waits.items()) if (m, msg) not in self._announced)
        self._announced.update(new)
        return new
