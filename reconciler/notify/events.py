"""Notifications: control-plane events with a stable type, a severity and what to do about them.

Where it sits: the notifier turns each controller `Event` (through `from_controller`, with the
rollout's record for version, previous version and revision) and each change its watchers see
(Git source, nodes, scaling) into a `Notification`, then routes it to the alerts that want it.
`to_json()` is the wire format every receiver sends (a webhook's body, the data behind a Slack
message or an email). The mapping from the controller's reasons is a pure function of the event and
the record, so it is tested with tables.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from reconciler.apply.executor import Event
from reconciler.planner import Phase, RolloutRecord
from reconciler.spec.alerts import Severity

__all__ = ["Notification", "from_controller", "iso"]

PAUSED_REASONS: Final = frozenset({"NoTraffic", "BaselineDegraded", "NoNodes"})
CONTROLLER_STALLS: Final = frozenset({"ImmutableVersion", "MissingBinary"})
OPERATOR_ROLLBACKS: Final = frozenset({"ManualRollback", "Aborted"})


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


# A notification's id: this process's random 64-bit prefix and a count, 32 hex digits like a uuid4's.
# Unique across processes and restarts as a uuid4 is (the prefix is drawn at each start), without the
# random read a uuid4 costs each time (thousands of node notifications when a large fleet flaps).
_ID_PREFIX = uuid.uuid4().hex[:16]
_ids = itertools.count(1)


def _new_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):016x}"


@dataclass(frozen=True)
class Notification:
    """One thing that happened, as receivers see it. `action` says what a person can do about it."""

    type: str
    severity: Severity
    reason: str
    message: str
    at: float
    module: str | None = None
    version: str | None = None
    previous_version: str | None = None
    deployment: str | None = None
    revision: str | None = None
    node: str | None = None
    region: str | None = None
    action: str | None = None
    link: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=_new_id)

    @property
    def subject(self) -> str:
        """A one-line summary: `[hotswap error] rollout.rolledBack greeter@1.2.0`."""
        if self.module:
            about = f"{self.module}@{self.version}" if self.version else self.module
        else:
            about = self.node or self.region or (self.revision[:12] if self.revision else "fleet")
        return f"[hotswap {self.severity.value}] {self.type} {about}"

    def text(self) -> str:
        """The plain-text form (email bodies, Slack fallbacks)."""
        lines = [self.message]
        if self.action:
            lines.append(f"To act: {self.action}")
        facts = [
            ("module", self.module),
            ("version", self.version),
            ("previous version", self.previous_version),
            ("deployment", self.deployment),
            ("revision", self.revision),
            ("node", self.node),
            ("region", self.region),
            ("reason", self.reason),
            ("at", iso(self.at)),
        ]
        lines.append("")
        lines += [f"{name}: {value}" for name, value in facts if value]
        if self.link:
            lines.append(f"details: {self.link}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "severity": self.severity.value,
            "reason": self.reason,
            "message": self.message,
            "at": iso(self.at),
            "module": self.module,
            "version": self.version,
            "previousVersion": self.previous_version,
            "deploymentId": self.deployment,
            "revision": self.revision,
            "node": self.node,
            "region": self.region,
            "action": self.action,
            "link": self.link,
            "details": dict(self.details),
        }


# -- controller events ---------------------------------------------------------------------------


def _step_type(record: RolloutRecord | None) -> tuple[str, dict[str, Any]]:
    """StepStarted means the step before passed analysis, or an approval let the rollout go on."""
    if record is None:
        return "rollout.stepStarted", {}
    now = record.step_started_at
    for result in reversed(record.history[-3:]):
        if result.at == now and result.outcome == "Passed":
            return "rollout.stepPassed", {
                "passedStep": result.step,
                "requests": result.requests,
                "errorRate": result.error_rate,
                "p99Ms": result.p99_ms,
                "step": record.step,
                "percent": record.percent,
            }
    if record.history and record.history[-1].at == now and record.history[-1].outcome == "Approved":
        return "rollout.approved", {"step": record.step, "percent": record.percent, "by": record.history[-1].message}
    return "rollout.stepStarted", {"step": record.step, "percent": record.percent}


def classify(reason: str, warning: bool, record: RolloutRecord | None) -> tuple[str, Severity, dict[str, Any]]:
    """The stable type, severity and extra details of a controller event with this reason."""
    match reason:
        case "RolloutStarted":
            return "rollout.started", Severity.INFO, {"strategy": record.strategy if record else None}
        case "StepStarted":
            kind, details = _step_type(record)
            return kind, Severity.INFO, details
        case "AwaitingApproval":
            return "rollout.awaitingApproval", Severity.WARNING, {"awaiting": record.awaiting if record else None}
        case "AwaitingInterfaceApproval":
            return "rollout.awaitingApproval", Severity.WARNING, {"awaiting": "interface"}
        case "WinnerApproved":
            return "rollout.approved", Severity.INFO, {}
        case "AnalysisFailed":
            return "rollout.degraded", Severity.ERROR, {}
        case "RolledBack":
            why = record.reason if record else ""
            severity = Severity.WARNING if why in OPERATOR_ROLLBACKS else Severity.ERROR
            aborted = record is not None and record.phase is Phase.ABORTED
            return "rollout.rolledBack", severity, {"cause": why, "aborted": aborted}
        case "Promoted":
            return "rollout.promoted", Severity.INFO, {}
        case "Superseded":
            return "rollout.superseded", Severity.INFO, {}
        case _ if reason in PAUSED_REASONS:
            return "rollout.paused", Severity.WARNING, {}
        case _ if reason in CONTROLLER_STALLS:
            return "source.stalled", Severity.ERROR, {}
        case _:
            return "rollout.event", Severity.WARNING if warning else Severity.INFO, {}


def _action(kind: str, reason: str, module: str | None, version: str | None, previous: str | None) -> str | None:
    target = f"{module}@{version}" if module and version else module
    match kind:
        case "rollout.awaitingApproval":
            return f"hotswap approve {target}"
        case "rollout.rolledBack":
            back = f" ({module} stays on {previous})" if previous else ""
            return f"commit a fixed {module} as a new version; the rollout stays rolled back until Git changes{back}"
        case "rollout.degraded":
            return f"set {module} back to {previous} in Git, or commit a fix" if previous else "commit a fix"
        case "rollout.paused" if reason == "NoNodes":
            return "start an edge node in the module's regions (hotswap edge --control URL --region R)"
        case "rollout.paused":
            return f"send traffic to {target}, or set analysis.onNoTraffic: proceed in its RolloutStrategy"
        case "source.stalled" if reason == "ImmutableVersion":
            return "give the new binary a new version in Git"
        case "source.stalled":
            return "upload the binary (POST /api/v1/wasm/modules), then commit its digest"
        case _:
            return None


def from_controller(
    event: Event,
    *,
    record: RolloutRecord | None,
    revision: str | None,
    desired_version: str | None = None,
    base_url: str = "",
) -> Notification:
    """A controller event with its rollout's record; without a record (an event about a module, not a
    rollout), `desired_version` is the version Git asks for."""
    reason, module, rollout = event.reason, event.module, event.rollout
    kind, severity, details = classify(reason, event.warning, record)
    version = record.target.version if record else desired_version
    previous = record.previous.version if record and record.previous else None
    if record is not None and record.strategy:
        details.setdefault("strategy", record.strategy)
    if record is not None:
        details.setdefault("phase", record.phase.value)
    link = f"{base_url}/api/v1/wasm/deployments/{rollout}" if base_url and rollout else None
    return Notification(
        type=kind,
        severity=severity,
        reason=reason,
        message=event.message,
        at=event.at,
        module=module,
        version=version,
        previous_version=previous,
        deployment=rollout,
        revision=revision,
        action=_action(kind, reason, module, version, previous),
        link=link,
        details={k: v for k, v in details.items() if v is not None},
    )
