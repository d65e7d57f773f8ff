"""Interface gates as the controller runs them: the base fleet (the last applied revision's, read back
from Git after a restart), the held-back fleet cached per revision so the planner's caches stay warm,
and each new wait announced once. What waits and why is `reconciler.planner.gate` (pure).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from reconciler.planner.gate import held_back, waiting
from reconciler.spec.approvals import Approval
from reconciler.spec.fleet import DesiredFleet
from reconciler.store.revisions import RevisionStore


class FleetHistory(Protocol):
    def fleet_at(self, sha: str) -> DesiredFleet | None: ...


@dataclass(frozen=True)
class Held:
    fleet: DesiredFleet  # what the planner gets: gated modules as they were at the base
    waiting: dict[str, str] = field(default_factory=dict)  # module -> why it waits
    new_waits: tuple[tuple[str, str], ...] = ()  # (module, message) not announced before


class InterfaceGates:
    def __init__(self, store: RevisionStore) -> None:
        self.store = store
        self.base: DesiredFleet | None = None
        self.ready = False
        self._announced: set[tuple[str, str]] = set()
        self._cache: dict[tuple[int, tuple[tuple[str, str], ...]], DesiredFleet] = {}

    def load_base(self, history: FleetHistory) -> None:
        """The fleet at the last applied revision (None on a first start: nothing to compare with)."""
        applied = self.store.last_applied_revision()
        self.base = history.fleet_at(applied.sha) if applied is not None else None
        self.ready = True

    def applied(self, fleet: DesiredFleet) -> None:
        """`fleet` is now the last applied revision's: later changes are judged against it."""
        self.base = fleet

    def hold(self, desired: DesiredFleet, approvals: tuple[Approval, ...]) -> Held:
        waits = waiting(desired, self.base, approvals)
        if not waits:
            return Held(desired)
        key = (id(desired), tuple(sorted(waits.items())))
        fleet = self._cache.get(key)
        if fleet is None:
            assert self.base is not None
            fleet = held_back(desired, self.base, waits)
            self._cache = {key: fleet}  # one revision at a time: keep the planner's caches warm
        new = tuple((m, msg) for m, msg in sorted(waits.items()) if (m, msg) not in self._announced)
        self._announced.update(new)
        return Held(fleet, waits, new)
