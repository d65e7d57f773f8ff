"""A watcher of the fleet's node views: which nodes may look different since it last looked.

Where it sits: `reconciler.apply.nodes.NodeHub.watch` makes one and tells it every row the hub
replaces and every node it drops; when a node's heartbeats come due it learns from the hub's
`reconciler.apply.nodehealth.NodeHealth`. The notifier's tick calls `take` (`Observed.node_changes`,
for `reconciler.notify.watch.NodeWatcher.observe_changes`), so it samples the nodes that changed, not
the whole fleet every second.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping

from reconciler.apply.nodehealth import NodeHealth
from reconciler.apply.noderows import NodeView
from reconciler.store.records import NodeRecord

__all__ = ["NodeChanges"]


class NodeChanges:
    """The nodes whose view may have changed since the last `take` (`NodeHub.watch`): the rows the hub
    replaced, the nodes it dropped, the health changes it noticed, and the nodes whose missed
    heartbeats came due by the clock meanwhile. A watcher of the fleet (the notifier's tick) reads
    these, not a view of every node each time. The first `take` gives every node the hub knows.

    `nodes`: the hub's map of rows (which it keeps current); `views_of`: the hub's views of some of
    them as of a time (`NodeHub.views_of`)."""

    def __init__(
        self,
        nodes: Mapping[str, NodeRecord],
        health: NodeHealth,
        views_of: Callable[[Iterable[str], float], list[NodeView]],
    ) -> None:
        self._nodes = nodes
        self._health = health
        self._views_of = views_of
        self._dirty: set[str] = set(nodes)
        self._gone: set[str] = set()
        self._due: list[tuple[float, str]] = []  # (when its heartbeats would be missed, node): a heap
        for node in nodes.values():
            self._when_silent(node)

    def _when_silent(self, node: NodeRecord) -> None:
        health = self._health
        at = health.last_heard(node, health.clock()) + health.silent_after
        heapq.heappush(self._due, (at, node.id))
        if len(self._due) > 4 * len(self._nodes) + 64:  # superseded entries: one per node is enough
            self._due = [(health.last_heard(n, at) + health.silent_after, n.id) for n in self._nodes.values()]
            heapq.heapify(self._due)

    def changed(self, node_id: str, node: NodeRecord | None) -> None:
        if node is None and node_id not in self._nodes:
            return  # the health check of a node dropped meanwhile (`NodeHub.merge`): it stays gone
        self._dirty.add(node_id)
        self._gone.discard(node_id)
        if node is not None:
            self._when_silent(node)

    def gone(self, node_id: str) -> None:
        self._dirty.discard(node_id)
        self._gone.add(node_id)

    def take(self, now: float | None = None, limit: int | None = None) -> tuple[list[NodeView], list[str]]:
        """(views of the nodes that may have changed, ids of the nodes gone) since the last take; with
        `limit`, the views of that many of them at most (the first by id), the rest left for the
        next take (a switch changes a whole fleet at once: 5,000 views in one turn of the event loop
        held it 50-100 ms)."""
        health = self._health
        now = health.clock() if now is None else now
        ids, self._dirty = self._dirty, set()
        early: list[tuple[float, str]] = []
        while self._due and self._due[0][0] <= now:
            at, node_id = heapq.heappop(self._due)
            node = self._nodes.get(node_id)
            if node is None:
                continue
            last = health.last_heard(node, now)
            if last + health.silent_after > at:
                continue  # a heartbeat since: its own entry is further on
            ids.add(node_id)
            if now - last <= health.silent_after:
                early.append((at, node_id))  # not silent yet (to the float): look again next time
        for entry in early:
            heapq.heappush(self._due, entry)
        gone, self._gone = sorted(self._gone), set()
        taken = sorted(ids)
        if limit is not None and len(taken) > limit:
            taken, rest = taken[:limit], taken[limit:]
            self._dirty.update(rest)
        return self._views_of(taken, now), gone
