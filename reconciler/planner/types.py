"""The planner's inputs and its recorded state: observed nodes, metrics, rollout records, conditions.

Where it sits: the executor builds a `Snapshot` from the desired fleet (one Git revision), the node
registry (heartbeats), the state store (rollout records) and the Git source (approvals), and hands it
to `reconciler.planner.plan`. The planner reads nothing else. A `RolloutRecord` is the whole memory
of a rollout: the planner returns updated records, the executor stores them before it acts, and the
next pass (maybe by another replica after a restart) continues from them. Everything here is frozen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from edge.nodeapi import NodeStatus
from edge.protocol import Capabilities, HealthCheck, Limits, SmokeCall
from reconciler.spec.approvals import Approval
from reconciler.spec.conditions import Condition, ConditionType
from reconciler.spec.fleet import DesiredFleet
from reconciler.spec.models import ModuleSpec
from reconciler.spec.strategies import StrategyType

__all__ = [
    "UNHEALTHY_HOLD_SECONDS",
    "ABResult",
    "AssignmentEntry",
    "Condition",
    "ConditionType",
    "NodeStatus",
    "ObservedNode",
    "OperatorRequest",
    "Phase",
    "RegionMetrics",
    "Release",
    "RolloutRecord",
    "RunningEntry",
    "SmokeResult",
    "Snapshot",
    "StepKind",
    "StepResult",
    "holds_its_table",
]

HISTORY_LIMIT = 32
"""Step results kept on a record; older ones are dropped (status shows a bounded history)."""


@dataclass(frozen=True)
class RunningEntry:
    """One module version a node reports running, with its current weight."""

    module: str
    version: str
    digest: str
    weight: int


@dataclass(frozen=True)
class SmokeResult:
    """A node's smoke check of one module version it loaded (`edge.smoke`): passed, or the failing call
    and the module's error (or the result that did not match)."""

    module: str
    version: str
    digest: str
    passed: bool
    error: str | None = None


@dataclass(frozen=True)
class AssignmentEntry:
    """One module version in a node's desired table, with its share of the module's requests.

    The table a node gets is always the full list for that node, so publishing it twice changes
    nothing. `sticky` names the request header the node hashes to pick a version (A/B tests);
    None means a weighted random pick. A version at weight 0 is loaded but only reachable with
    X-Hotswap-Version. Its fields are `edge.protocol.ModuleEntry`'s, and its limits, capabilities,
    health check and smoke calls the very objects a node's table carries (`reconciler.apply.tables`).
    """

    module: str
    version: str
    digest: str
    weight: int
    limits: Limits
    capabilities: Capabilities
    health_check: HealthCheck | None = None
    sticky: str | None = None
    smoke: tuple[SmokeCall, ...] = ()
    argv: tuple[str, ...] = ()


@dataclass(frozen=True)
class ObservedNode:
    """A registered edge node as the registry sees it.

    `assigned` is the table the executor last published to the node (the planner emits
    `SetAssignment` only when the new table differs from it); `running` is what the node reported in
    its last heartbeat (shown in status, and how the executor knows a table has been applied).
    `max_modules` None means the fleet's `nodeDefaults.maxModules`. `smoke` is the outcome of the
    smoke check of each version the node loaded with smoke calls.
    """

    id: str
    region: str
    status: NodeStatus = NodeStatus.HEALTHY
    max_modules: int | None = None
    assigned: tuple[AssignmentEntry, ...] = ()
    running: tuple[RunningEntry, ...] = ()
    last_heartbeat: float | None = None
    smoke: tuple[SmokeResult, ...] = ()


UNHEALTHY_HOLD_SECONDS = 60.0
"""How long after its last heartbeat an Unhealthy node keeps its table (`holds_its_table`)."""


def holds_its_table(node: ObservedNode, now: float) -> bool:
    """Whether a pass leaves `node`'s table as it is: Unhealthy, and heard within UNHEALTHY_HOLD_SECONDS.

    Its modules are placed on healthy nodes meanwhile; its own table is not emptied under a node
    that may only be slow to be heard (a busy machine, a control plane whose store restarts), which
    would answer its callers 404 for every module until its next heartbeat, and which a node that
    cannot be reached never receives anyway. One silent for longer is emptied, as before: a node
    that still long-polls but cannot heartbeat does not keep serving, for long, a release rolled
    back meanwhile."""
    return (
        node.status is NodeStatus.UNHEALTHY
        and node.last_heartbeat is not None
        and now - node.last_heartbeat < UNHEALTHY_HOLD_SECONDS
    )


@dataclass(frozen=True)
class RegionMetrics:
    """What the nodes of one region served for one module version during the current step.

    The metrics window (`reconciler.apply.metricswindow.MetricsWindow.since`) sums the nodes' reports
    since the rollout record's `step_started_at`; `p99_ms` is the 99th percentile latency over the
    same window (None when unknown). Not a node's report (`edge.protocol.VersionMetrics`: one node's
    counters and latency histogram since its last heartbeat, no region): a sum of those over a window
    and a region, with the histogram read down to its p99. The planner sums regions
    (`reconciler.planner.analysis.Totals`).
    `health_checks` and `health_failures` count runs of the version's `healthCheck` function (at
    load and every `intervalSeconds`) in the window, not requests; a failed run's message is a
    `last_error` ("health check health failed: trap: ...").
    """

    module: str
    version: str
    region: str
    requests: int = 0
    errors: int = 0
    p99_ms: float | None = None
    last_error: str | None = None  # the module's own words for its latest failure in the window
    health_checks: int = 0
    health_failures: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Release:
    """Everything that makes a module version run the way Git says: a change of any field rolls out."""

    version: str
    digest: str
    limits: Limits
    capabilities: Capabilities
    health_check: HealthCheck | None = None
    smoke: tuple[SmokeCall, ...] = ()
    argv: tuple[str, ...] = ()  # a command's default argv (empty: [module name])

    @classmethod
    def of(cls, spec: ModuleSpec, version: str, digest: str) -> Release:
        return cls(
            version, digest, spec.limits, spec.capabilities, spec.health_check, tuple(spec.smoke), tuple(spec.argv)
        )

    @property
    def label(self) -> str:
        return f"{self.version} ({self.digest[7:19]})" if self.digest.startswith("sha256:") else self.version


class Phase(StrEnum):
    PENDING = "Pending"  # created while no healthy node is in its scope; starts when one is
    WAITING_APPROVAL = "WaitingApproval"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"  # inconclusive analysis (NoTraffic, BaselineDegraded) or failed without autoRollback
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    ABORTED = "Aborted"
    SUPERSEDED = "Superseded"


ACTIVE_PHASES = frozenset({Phase.PENDING, Phase.WAITING_APPROVAL, Phase.PROGRESSING, Phase.PAUSED})


class StepKind(StrEnum):
    WEIGHT = "Weight"  # Canary: `percent` of requests to the new version on every node
    PREVIEW = "Preview"  # BlueGreen: new version loaded at 0 %, reachable with X-Hotswap-Version
    SWITCH = "Switch"  # BlueGreen: all traffic to the new version, the previous one kept loaded at 0 %
    BATCH = "Batch"  # Rolling: the nodes of `batch` (and `done_nodes`) run the new version
    SPLIT = "Split"  # ABTest: `percent` of users to B, sticky by header
    SETTLE = "Settle"  # Regional: the region runs the new version, evaluated before the next region
    PROMOTE = "Promote"  # every step passed: the new version alone everywhere; Promoted once every node reports it


Outcome = Literal["Passed", "Failed", "Inconclusive", "Approved"]
OperatorRequest = Literal["rollback", "abort"]
Awaiting = Literal["gate", "promotion", "winner"]


@dataclass(frozen=True)
class StepResult:
    """One line of a rollout's history: how a step (or a wait) ended."""

    step: int
    kind: StepKind | None
    region: str | None
    at: float
    outcome: Outcome
    reason: str
    message: str
    requests: int = 0
    error_rate: float = 0.0
    p99_ms: float | None = None


@dataclass(frozen=True)
class ABResult:
    """The outcome of an A/B comparison: who won on which metric, with both values."""

    metric: str
    a_value: float
    b_value: float
    winner: Literal["A", "B"]
    a_requests: int
    b_requests: int


@dataclass(frozen=True)
class RolloutRecord:
    """The recorded state of one rollout of one module from `previous` to `target`.

    The step fields describe what is *published* to the nodes now: `step` -1 means nothing yet (the
    rollout waits for approval before starting). `applied_at` is when every node of the scope first
    reported the step's weights (None: not yet); the step's time counts from then, while its metrics
    window starts at `step_started_at`, when the step was entered. `region_index` is the region a Regional rollout is
    in; `done_nodes` and `batch` are Rolling's progress (inside the current region for Regional).
    `held` and `request` are set by an operator (manual pause; rollback or abort) and read by the
    planner. `approvals_used` lists the approval commits already spent on earlier gates, so each
    gate needs fresh approvals.
    """

    id: str
    module: str
    seq: int
    previous: Release | None
    target: Release
    strategy: str | None
    strategy_type: StrategyType | None
    phase: Phase
    created_at: float
    step: int = -1
    kind: StepKind | None = None
    percent: int = 0
    step_started_at: float = 0.0
    applied_at: float | None = None
    region_index: int = 0
    done_nodes: tuple[str, ...] = ()
    batch: tuple[str, ...] = ()
    awaiting: Awaiting | None = None
    ab_result: ABResult | None = None
    reason: str = ""
    message: str = ""
    finished_at: float | None = None
    history: tuple[StepResult, ...] = ()
    approvals_used: tuple[str, ...] = ()
    held: bool = False
    request: OperatorRequest | None = None

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASES

    @property
    def stable(self) -> Release | None:
        """The release every node of the module returns to or stays on when this record is the last."""
        return self.target if self.phase is Phase.PROMOTED else self.previous


@dataclass(frozen=True)
class Snapshot:
    """Everything one planner pass reads, frozen: the planner never looks anywhere else."""

    desired: DesiredFleet
    now: float
    nodes: tuple[ObservedNode, ...] = ()
    records: tuple[RolloutRecord, ...] = ()
    approvals: tuple[Approval, ...] = ()
    metrics: tuple[RegionMetrics, ...] = field(default=())
    # the last fully applied revision's fleet, which interface changes are judged against (None: a
    # first start, nothing to compare with); `reconciler.planner.gate`
    base: DesiredFleet | None = None
