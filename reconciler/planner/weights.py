"""Weights: the module entries each placed node gets, from the rollout record alone.

Where it sits: after the rollout machine has moved the module's record, the planner asks `scope`
for the entries of every node in the rollout's scope; pinned nodes and version-override regions get
their fixed version from the planner directly. Because the entries follow from the record (and not
from what happened in the pass), a replayed pass publishes exactly the same tables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from reconciler.planner.types import AssignmentEntry, Release, RolloutRecord, StepKind

__all__ = ["EntryMaker", "scope"]

Entries = tuple[AssignmentEntry, ...]
EntryMaker = Callable[[Release, int, str | None], AssignmentEntry]


def _unit_entries(r: RolloutRecord, make: EntryMaker, sticky: str | None) -> Entries | None:
    """Entries every node of the current unit gets; None for Rolling, which decides per node."""
    old, new = r.previous, r.target
    assert old is not None
    if r.kind is None or r.step < 0:
        return (make(old, 100, None),)
    if r.kind is StepKind.WEIGHT:
        if r.percent >= 100:
            return (make(old, 0, None), make(new, 100, None))
        return (make(old, 100 - r.percent, None), make(new, r.percent, None))
    if r.kind is StepKind.PREVIEW:
        return (make(old, 100, None), make(new, 0, None))
    if r.kind is StepKind.SWITCH:
        return (make(old, 0, None), make(new, 100, None))
    if r.kind is StepKind.SPLIT:
        return (make(old, 100 - r.percent, sticky), make(new, r.percent, sticky))
    if r.kind is StepKind.SETTLE:
        return (make(new, 100, None),)
    return None


def scope(
    r: RolloutRecord,
    regions: Sequence[str],
    nodes: Mapping[str, tuple[str, ...]],
    regional: bool,
    make: EntryMaker,
    sticky: str | None = None,
) -> dict[str, Entries]:
    """node id -> entries for every node in an active rollout's scope (`nodes`: region -> node ids).

    A finished rollout needs no help: every node of its scope runs `r.stable` at 100 %.
    """
    out: dict[str, Entries] = {}
    assert r.active and r.previous is not None
    only_old = (make(r.previous, 100, None),)
    only_new = (make(r.target, 100, None),)
    if r.kind is StepKind.PROMOTE:  # every step passed: the new release alone on every node
        return {node: only_new for region in regions for node in nodes.get(region, ())}
    unit = _unit_entries(r, make, sticky)
    switched = set(r.done_nodes) | set(r.batch)
    for position, region in enumerate(regions):
        if regional and position < r.region_index:
            shared: Entries | None = only_new
        elif regional and position > r.region_index:
            shared = only_old
        else:
            shared = unit
        for node in nodes.get(region, ()):
            if shared is not None:
                out[node] = shared
            else:
                out[node] = only_new if node in switched else only_old
    return out
