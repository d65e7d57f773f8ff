"""Keeping long-lived objects out of the garbage collector's full passes, and the heap compact.

Where it sits: the control plane (`reconciler.server`) runs a `LongLivedFreezer` beside the
controller, and the controller freezes what a new revision built (`freeze_survivors`). Both use the
one policy here; `bench/stalls.py` times every collection, and `bench/scale.py` prints them.

At thousands of nodes the control plane holds millions of container objects that live for the whole
run (node rows and tables, the planner's state, every open connection's objects); each full
collection walks all of them on the event loop, for hundreds of milliseconds at 1,000 nodes and
seconds at 5,000. `gc.freeze()` moves every object that exists into a permanent generation the
collector skips. What freezing must not do is keep garbage alive, and what it must not cost is the
very full walk it saves, so:

- a routine freeze (`freeze_survivors`) first collects the young generations only, which frees what
  died young (almost all garbage, cycles included) in a pause as short as the collector's usual
  ones, then freezes. Garbage that had already reached the oldest generation when it died is frozen
  with the rest until the next full refreeze; that is what a full collection would have found;
- every `REFREEZE_SECONDS` the frozen objects go back (`gc.unfreeze()`), a full collection frees what
  died among them (a closed connection's cycles, cyclic garbage frozen by a routine freeze), and what
  is left is frozen again: one full walk per period, where the collector's own schedule would walk
  the whole heap every hundred middle collections;
- acyclic objects (most node state: rows, reports, tables) are freed by their reference counts,
  frozen or not.

The C heap under Python's own allocator is glibc's malloc, which gives each thread that contends for
it an arena of its own, up to eight per core. The control plane's worker threads (store writes,
passes) allocate the bodies and rows the event loop frees, and every arena keeps its own free
space: at 1,000 nodes the process ended a rollout bench 40-60 MB over its steady size.
`limit_malloc_arenas` caps them at two (`MALLOC_ARENA_MAX`, when set, stands instead).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import time
from collections.abc import Callable

__all__ = ["LongLivedFreezer", "collect_in_full_rarely", "freeze_survivors", "limit_malloc_arenas"]

FULL_COLLECTION_EVERY = 1000  # middle-generation collections per full one (the refreeze walks all too)
FREEZE_CHECK_SECONDS = 5.0  # how often the freezer looks at the fleet's size
REFREEZE_SECONDS = 600.0  # frozen objects go back to the collector this often (what died among them is freed)
FREEZE_GROWTH = 1.1  # the fleet grew by a tenth since the last freeze: freeze again once it settles
FREEZE_MIN_NODES = 100  # below this, the collector's passes are short: nothing is frozen
MALLOC_ARENAS = 2  # glibc malloc arenas at most (see the module's docstring)
M_ARENA_MAX = -8  # glibc's mallopt parameter for it (malloc.h)


def collect_in_full_rarely() -> None:
    """Full collections a hundredth as often as Python's default (one per 10 middle ones): each walks
    every object not frozen, on the event loop, and at 5,000 nodes the objects not frozen (the reports,
    connections and tables that came after the last freeze) took 0.5-1 s a walk, a dozen walks in two
    minutes. The refreeze (`REFREEZE_SECONDS`) walks the whole heap anyway; below `FREEZE_MIN_NODES`,
    where nothing is frozen, the heap is small. The young generations stay as they are."""
    gen0, gen1, _ = gc.get_threshold()
    gc.set_threshold(gen0, gen1, FULL_COLLECTION_EVERY)


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process (see the module's docstring); whether it did. Not on
    another C library, nor where the operator set `MALLOC_ARENA_MAX` (glibc read it at start)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):
            return False
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # pragma: no cover - no C library to load, or no mallopt in it
        return False


def freeze_survivors() -> None:
    """Free what died young, then freeze everything alive (see the module's docstring)."""
    gc.collect(1)
    gc.freeze()


def refreeze() -> None:
    """Give the frozen objects back, free what died among them, freeze the rest: one full walk."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class LongLivedFreezer:
    """Freezes once the fleet has settled (its size unchanged over one check) after growing (at the
    start, or by a tenth since the last freeze), and refreezes every `refreeze_seconds`; never for
    fewer than `min_nodes` nodes, where a full collection is short anyway."""

    def __init__(
        self,
        count: Callable[[], int],
        *,
        refreeze_seconds: float = REFREEZE_SECONDS,
        min_nodes: int = FREEZE_MIN_NODES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.count = count
        self.refreeze_seconds = refreeze_seconds
        self.min_nodes = max(min_nodes, 1)
        self.clock = clock
        self.freezes = 0
        self.refreezes = 0
        self._last_count = -1
        self._frozen_count = 0
        self._frozen_at: float | None = None
        self._refrozen_at: float | None = None

    def check(self) -> bool:
        """Freeze or refreeze if it is time to (see the class); whether it did."""
        count, now = self.count(), self.clock()
        settled, self._last_count = count == self._last_count, count
        if not settled or count < self.min_nodes:
            return False
        if self._refrozen_at is not None and now - self._refrozen_at >= self.refreeze_seconds:
            refreeze()
            self.refreezes += 1
            self._refrozen_at = now
        elif self._frozen_at is None or count > self._frozen_count * FREEZE_GROWTH:
            freeze_survivors()
            if self._refrozen_at is None:
                self._refrozen_at = now  # the period starts with the first freeze
        else:
            return False
        self.freezes += 1
        self._frozen_count, self._frozen_at = count, now
        return True

    async def run(self, every: float = FREEZE_CHECK_SECONDS) -> None:
        try:
            while True:
                await asyncio.sleep(every)
                self.check()
        finally:
            if self.freezes:
                gc.unfreeze()  # a stopped plane's objects are the collector's again
