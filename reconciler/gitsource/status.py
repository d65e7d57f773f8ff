"""The Git source's status, as Flux's GitRepository shows it: revisions, `verified`, conditions.

Where it sits: computed by `conditions()` (a pure function) once per sync of the Git source, read by
`GET /api/v1/wasm/source` and `hotswap status`. A good revision gives `Ready=True`; a head that
cannot be used gives `Ready=False` with a reason, plus `Stalled=True` when a human must act (an unverified commit or one
its signer's roles may not make, an invalid fleet or one that cannot be exported, a file or
revision over its cap, rewritten history, a revision whose reading failed unexpectedly). A failed
fetch is transient (retried at the next interval), so it is `Ready=False` without `Stalled`. The
last good revision stays in every case.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from reconciler.spec.conditions import Condition, ConditionType

if TYPE_CHECKING:
    from reconciler.spec.fleet import Problem

__all__ = ["Failure", "Reason", "SourceStatus", "conditions"]


class Reason(StrEnum):
    SUCCEEDED = "Succeeded"
    PROGRESSING = "Progressing"
    FETCH_FAILED = "FetchFailed"
    UNVERIFIED_COMMIT = "UnverifiedCommit"
    INVALID_FLEET = "InvalidFleet"
    HISTORY_REWRITTEN = "HistoryRewritten"
    TOO_LARGE = "TooLarge"
    SYNC_FAILED = "SyncFailed"


STALLING = frozenset(
    {Reason.UNVERIFIED_COMMIT, Reason.INVALID_FLEET, Reason.HISTORY_REWRITTEN, Reason.TOO_LARGE, Reason.SYNC_FAILED}
)


@dataclass(frozen=True)
class Failure:
    """Why the observed head was not taken: a reason and a message naming the commit (and file:line)."""

    reason: Reason
    message: str
    commit: str | None = None
    problems: tuple[Problem, ...] = ()  # every loader problem, for InvalidFleet


@dataclass(frozen=True)
class SourceStatus:
    url: str
    branch: str
    path: str
    observed_revision: str | None  # the head seen at the last fetch
    last_applied_revision: str | None  # the last revision that parsed and verified
    verified: bool  # the applied revision's commits verified (or recovered), and no UnverifiedCommit /
    # HistoryRewritten condition holds over it: never true while the conditions say otherwise
    conditions: tuple[Condition, ...]
    events: tuple[str, ...] = ()  # recent notable events, newest last (rewrites followed, ...)

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    @property
    def ready(self) -> bool:
        ready = self.condition("Ready")
        return bool(ready and ready.status)

    @property
    def stalled(self) -> Condition | None:
        stalled = self.condition("Stalled")
        return stalled if stalled and stalled.status else None

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "branch": self.branch,
            "path": self.path,
            "observedRevision": self.observed_revision,
            "lastAppliedRevision": self.last_applied_revision,
            "verified": self.verified,
            "conditions": [c.to_json() for c in self.conditions],
            "events": list(self.events),
        }


def conditions(branch: str, applied: str | None, failure: Failure | None) -> tuple[Condition, ...]:
    """The conditions for a source whose last good revision is `applied` and whose head failed so."""
    if failure is None:
        if applied is None:
            return (Condition(ConditionType.READY, False, Reason.PROGRESSING, "no revision fetched yet"),)
        return (Condition(ConditionType.READY, True, Reason.SUCCEEDED, f"stored revision {branch}@sha1:{applied}"),)
    held = f"; holding {branch}@sha1:{applied}" if applied else "; no revision applied yet"
    message = failure.message + held
    ready = Condition(ConditionType.READY, False, failure.reason, message)
    if failure.reason in STALLING:
        return (ready, Condition(ConditionType.STALLED, True, failure.reason, message))
    return (ready,)
