"""Conditions: what the control plane says of an object, Flux-style. One type for every object.

Where it sits: beside the documents users write, as the status half of the object model. The
planner derives a module's conditions (`reconciler.planner.conditions`), the Git source its own
(`reconciler.gitsource.status`); the API, `hotswap status` and the notifier show them through
`Condition.to_json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ConditionType(StrEnum):
    READY = "Ready"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    DEGRADED = "Degraded"
    STALLED = "Stalled"


@dataclass(frozen=True)
class Condition:
    """A Flux-style condition: a type, whether it holds, a CamelCase reason and a human message."""

    type: ConditionType
    status: bool
    reason: str
    message: str

    def to_json(self) -> dict[str, str]:
        """As the API shows it (Kubernetes' spelling: status "True" or "False")."""
        return {
            "type": self.type.value,
            "status": "True" if self.status else "False",
            "reason": self.reason,
            "message": self.message,
        }
