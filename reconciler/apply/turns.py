"""Sharing the event loop's turns between a wave of node-protocol requests and everything else.

Where it sits: the node hub owns one `TurnShare` (`NodeHub.turns`); the node protocol's handlers
(`reconciler.api.control`: registration, heartbeats, the long-poll's answer) await `share()` before
their work. It is the request side of what `NodeHub._wake_in_turns` does for a pass's answers.

A fleet's nodes act together: a table reaches a thousand of them in a few turns, and each reports
back at once with a heartbeat. The event loop runs every handler that is ready in one turn, so a
wave of a few hundred heartbeats (100-200 us of Python each) held it 50-100 ms at 1,000 nodes
(bench/scale.py's stall sampler), and everything else waited: the other replica's notices, the
lease, the timers, the API. Here the handlers of one turn run until they have used `budget`
seconds; the rest go to the next turn, behind the timers and I/O that came due meanwhile, and so
on. Every request is still served in the order it came, and the total work is the same.

How a turn is told from the next: the first handler to ask in a turn notes the time and schedules a
callback with `call_soon`, which asyncio and uvloop both run on the next turn (a turn runs only the
callbacks that were ready when it began). That callback opens a new budget.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["TURN_BUDGET_SECONDS", "TurnShare"]

TURN_BUDGET_SECONDS = 0.010  # node-protocol handlers' time in one turn of the event loop


class TurnShare:
    """Node-protocol handlers' share of each turn of the event loop (see the module docstring)."""

    def __init__(self, budget: float = TURN_BUDGET_SECONDS, clock: Callable[[], float] = time.perf_counter) -> None:
        self.budget = budget
        self.clock = clock
        self.deferred = 0  # how often a handler waited for a later turn (bench figures, tests)
        self._opened: float | None = None  # when this turn's first handler asked; None: a new turn

    async def share(self) -> None:
        """Return at once while this turn's handlers are within the budget; else after the turns
        that take the ones before it."""
        while True:
            now = self.clock()
            if self._opened is None:
                self._opened = now
                asyncio.get_running_loop().call_soon(self._next_turn)
                return
            if now - self._opened < self.budget:
                return
            self.deferred += 1
            await asyncio.sleep(0)

    def _next_turn(self) -> None:
        self._opened = None
