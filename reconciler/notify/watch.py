"""Watchers: turn polled state (the Git source's conditions, node health and capacity) into events.

Where it sits: the Git source and the node hub report state, not events. Every notifier tick hands
their current state to these watchers, which compare it with what they saw last and return a
`Notification` per change:

- `SourceWatcher`: `source.stalled` when the source's `Stalled` condition appears or changes (a new
  unverified commit, a new broken file), `source.recovered` when it clears; the controller's own
  stalls (ImmutableVersion, MissingBinary) arrive as controller events, and their clearing is
  reported here too.
- `NodeWatcher`: `node.unhealthy` and `node.recovered` when a node's health flips, `capacity.reached`
  when a node runs as many module versions as it may hold. Transitions seen during a grace period
  after the first look are taken as the starting point, not reported: a restarted control plane
  reads its nodes from the store before they speak again, and that is nobody's emergency.
  `observe` takes the whole fleet (a node missing from it is gone); `observe_changes` takes only the
  nodes that may have changed and the ones gone (`reconciler.apply.nodechanges.NodeChanges`), so a tick
  at thousands of nodes costs what changed, not the fleet.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from reconciler.notify.events import Notification
from reconciler.spec.alerts import Severity

__all__ = ["NodeLike", "NodeWatcher", "SourceWatcher", "StallLike", "StatusLike"]


class StallLike(Protocol):
    """A Stalled condition (`reconciler.spec.conditions.Condition`, from the source or the controller)."""

    @property
    def reason(self) -> str: ...

    @property
    def message(self) -> str: ...


class StatusLike(Protocol):
    """What the watcher reads of `reconciler.gitsource.SourceStatus`."""

    @property
    def stalled(self) -> StallLike | None: ...

    @property
    def observed_revision(self) -> str | None: ...

    @property
    def last_applied_revision(self) -> str | None: ...


class NodeLike(Protocol):
    """What the watcher reads of `reconciler.apply.noderows.NodeView`."""

    @property
    def id(self) -> str: ...

    @property
    def region(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def max_modules(self) -> int: ...

    @property
    def running(self) -> tuple[tuple[str, str, str, int], ...]: ...

    @property
    def last_heartbeat(self) -> float | None: ...


SOURCE_ACTIONS = {
    "UnverifiedCommit": "sign the commit with a trusted key (or revert it); git verify-commit shows why",
    "InvalidFleet": "run hotswap validate on the fleet repository and fix the lines it names",
    "HistoryRewritten": "check the force-push; accept the rewritten head only if it is intended",
}


@dataclass(frozen=True)
class _Stall:
    reason: str
    message: str


class SourceWatcher:
    def __init__(self) -> None:
        self._source: _Stall | None = None
        self._controller: _Stall | None = None

    def observe(
        self, now: float, status: StatusLike | None, controller_stall: StallLike | None = None
    ) -> list[Notification]:
        out: list[Notification] = []
        if status is not None:
            found = status.stalled
            stall = _Stall(found.reason, found.message) if found is not None else None
            if stall is not None and stall != self._source:
                out.append(
                    Notification(
                        type="source.stalled",
                        severity=Severity.ERROR,
                        reason=stall.reason,
                        message=f"Git source stalled: {stall.message}",
                        at=now,
                        revision=status.observed_revision,
                        action=SOURCE_ACTIONS.get(stall.reason),
                        details={"lastAppliedRevision": status.last_applied_revision},
                    )
                )
            elif stall is None and self._source is not None:
                out.append(self._recovered(now, self._source, status.last_applied_revision, "Git source"))
            self._source = stall
        current = _Stall(controller_stall.reason, controller_stall.message) if controller_stall is not None else None
        if current is None and self._controller is not None:
            revision = status.last_applied_revision if status is not None else None
            out.append(self._recovered(now, self._controller, revision, "reconciler"))
        self._controller = current
        return out

    @staticmethod
    def _recovered(now: float, was: _Stall, revision: str | None, what: str) -> Notification:
        return Notification(
            type="source.recovered",
            severity=Severity.INFO,
            reason="Recovered",
            message=f"{what} no longer stalled ({was.reason} resolved)",
            at=now,
            revision=revision,
            details={"previousReason": was.reason},
        )


class NodeWatcher:
    def __init__(self, grace_seconds: float = 20.0) -> None:
        self.grace_seconds = grace_seconds
        self._first: float | None = None
        self._status: dict[str, str] = {}
        self._full: set[str] = set()

    def observe(self, now: float, nodes: Iterable[NodeLike]) -> list[Notification]:
        """Every node there is, as it is now: what changed since the last look."""
        seen: set[str] = set()

        def noted(all_nodes: Iterable[NodeLike]) -> Iterable[NodeLike]:
            for node in all_nodes:
                seen.add(node.id)
                yield node

        out = self.observe_changes(now, noted(nodes), ())
        for gone in set(self._status) - seen:
            del self._status[gone]
            self._full.discard(gone)
        return out

    def observe_changes(self, now: float, nodes: Iterable[NodeLike], gone: Iterable[str]) -> list[Notification]:
        """Only the nodes that may have changed, and the ids of nodes gone: what changed."""
        if self._first is None:
            self._first = now
        quiet = now - self._first < self.grace_seconds
        out: list[Notification] = []
        for node_id in gone:
            self._status.pop(node_id, None)
            self._full.discard(node_id)
        for node in nodes:
            before = self._status.get(node.id)
            self._status[node.id] = node.status
            if not quiet and before != node.status:
                if node.status == "Unhealthy":
                    out.append(self._unhealthy(now, node))
                elif node.status == "Healthy" and before == "Unhealthy":
                    out.append(self._about_node(now, node, "node.recovered", Severity.INFO, "NodeRecovered", "is back"))
            count = len(node.running)
            if count >= node.max_modules:
                if node.id not in self._full and not quiet:
                    out.append(self._capacity(now, node, count))
                self._full.add(node.id)
            else:
                self._full.discard(node.id)
        return out

    @staticmethod
    def _about_node(now: float, node: NodeLike, kind: str, severity: Severity, reason: str, what: str) -> Notification:
        return Notification(
            type=kind,
            severity=severity,
            reason=reason,
            message=f"node {node.id} in {node.region} {what}",
            at=now,
            node=node.id,
            region=node.region,
            details={"modules": len(node.running), "lastHeartbeat": node.last_heartbeat},
        )

    def _unhealthy(self, now: float, node: NodeLike) -> Notification:
        ago = f"{now - node.last_heartbeat:.0f}s ago" if node.last_heartbeat is not None else "never"
        unhealthy = self._about_node(
            now,
            node,
            "node.unhealthy",
            Severity.ERROR,
            "NodeUnhealthy",
            f"missed its heartbeats (last {ago}); its modules are placed on other nodes",
        )
        return replace(unhealthy, action=f"check the edge process on {node.id}")

    def _capacity(self, now: float, node: NodeLike, count: int) -> Notification:
        full = self._about_node(
            now,
            node,
            "capacity.reached",
            Severity.WARNING,
            "NodeFull",
            f"runs {count} module versions, its limit of {node.max_modules}",
        )
        return replace(
            full,
            action=f"add a node in {node.region}, or raise maxModules",
            details={"modules": count, "maxModules": node.max_modules},
        )
