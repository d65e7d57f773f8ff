"""The rows of the state store as frozen dataclasses: what the registry, planner inputs, executor and API
read and write through `StateStore`.

Times are timezone-aware UTC datetimes. JSON-shaped fields (an assignment table, a node's report, a
rollout's record) are plain dicts: the store keeps them as JSON text and does not look inside.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edge.nodeapi import NodeStatus

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class BuildInfo:
    """Where a module's bytes came from, as the CI system that uploaded it says."""

    commit: str | None = None
    timestamp: str | None = None  # ISO 8601, as given


@dataclass(frozen=True)
class ImportRef:
    module: str
    name: str
    kind: str  # func | memory | table | global


@dataclass(frozen=True)
class ExportRef:
    name: str
    kind: str
    signature: str | None = None  # "(i32, i32) -> (i32)" for functions
    convention: str | None = None  # numeric | json | command | component, or None when not callable


@dataclass(frozen=True)
class ModuleRecord:
    """One registered module version. `id` is `{name}-v{version}`; `digest` is `sha256:<hex>`."""

    id: str
    name: str
    version: str
    digest: str
    size: int
    compressed_size: int
    imports: tuple[ImportRef, ...]
    exports: tuple[ExportRef, ...]
    wasi_imports: tuple[str, ...]  # preview 1 function names
    capabilities: tuple[str, ...]  # WASI capabilities the imports need, sorted
    component: bool
    memory_min_pages: int
    build: BuildInfo
    created_at: datetime


@dataclass(frozen=True)
class NodeRecord:
    """An edge node known to the control plane.

    `generation` counts the assignments published to the node (it long-polls for a newer one);
    `assignment` is the last published module table, `reported` what the node said it runs.
    """

    id: str
    region: str
    url: str
    status: NodeStatus = NodeStatus.HEALTHY
    max_modules: int = 1000
    registered_at: datetime | None = None
    last_heartbeat_at: datetime | None = None
    generation: int = 0
    assignment: JsonObject = field(default_factory=dict)
    reported: JsonObject = field(default_factory=dict)

    @functools.cached_property
    def heard_at(self) -> float | None:
        """`last_heartbeat_at`, or else `registered_at`, in seconds since the epoch (None: neither).
        Read once per row: node health reads it for every node several times a second."""
        at = self.last_heartbeat_at or self.registered_at
        return at.timestamp() if at is not None else None


@dataclass(frozen=True)
class RolloutRecord:
    """A rollout as the store keeps it: the record itself once (`detail`, JSON its owner encodes: the
    rollout book's holds the planner's record and the Git commit that asked for it), beside the keys
    that queries filter and order by (`module`, `state`, `created_at`).

    `generation` is bumped by every `update_rollout`; an update names the generation it read, so two
    reconcilers cannot both advance the same rollout (the loser gets `StaleRecord`). The rollout's
    step history is not in here: it is the `RolloutStepRecord`s, kept once, beside it.
    """

    id: str
    module: str  # module name
    state: str  # the record's phase: Pending | Progressing | Paused | Promoted | RolledBack | ...
    detail: JsonObject = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    generation: int = 0


@dataclass(frozen=True)
class RolloutStepRecord:
    """One event in a rollout's history (a step passed, failed, was approved; a pause, a rollback), kept
    only here: `analysis` holds the rest of the event as its writer encodes it (the rollout book: the
    step's kind, region and reason, and the analysis figures)."""

    rollout_id: str
    step: int
    event: str
    at: datetime
    message: str = ""
    analysis: JsonObject = field(default_factory=dict)
    seq: int = 0  # assigned by the store


@dataclass(frozen=True)
class RevisionRecord:
    """A Git revision the source has seen, whether it verified, and when (if ever) it was applied."""

    sha: str
    seen_at: datetime
    verified: bool
    message: str = ""
    applied_at: datetime | None = None


@dataclass(frozen=True)
class ApprovalRecord:
    """An approval found in Git: `commit` approves `module@version` on behalf of `principal`."""

    commit: str
    module: str
    version: str
    principal: str
    roles: tuple[str, ...]
    kind: str  # commit (a Hotswap-Approve trailer) | merge (a merged pull request)
    found_at: datetime


@dataclass(frozen=True)
class InterfaceRecord:
    """A WIT interface package, as the fleet declares it."""

    id: str  # the package, e.g. example:greeter@1.0.0
    name: str
    package: str
    version: str
    wasi: str  # preview1 | preview2
    wit: str
    digest: str
    status: str = "active"  # active | pending | deprecated
    approved_by: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class AuditEntry:
    """One line of the append-only audit log."""

    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: JsonObject = field(default_factory=dict)
