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
callbacks that were ready when it began). Handlers past the budget wait in a queue, in order; each
turn after, that callback lets through as many as the budget let through the last time it ran out
(they run on the turn after), until the queue is empty. A waiting handler costs nothing a turn (a
first version had each retry on every turn: 130 ms of a 5,000-node run's holds were those retries).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

__all__ = ["TURN_BUDGET_SECONDS", "TurnShare"]

TURN_BUDGET_SECONDS = 0.010  # node-protocol handlers' time in one turn of the event loop


class TurnShare:
    """Node-protocol handlers' share of each turn of the event loop (see the module docstring)."""

    def __init__(self, budget: float = TURN_BUDGET_SECONDS, clock: Callable[[], float] = time.perf_counter) -> None:
        self.budget = budget
        self.clock = clock
        self.deferred = 0  # how many handlers waited for a later turn (bench figures, tests)
        self._opened: float | None = None  # when this turn's first handler asked; None: a new turn
        self._admitted = 0  # handlers let through on the budget of this turn
        self._quota = 1  # handlers let through a turn while some wait: what the budget let through
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._armed = False  # `_next_turn` is scheduled

    async def share(self) -> None:
        """Return at once while this turn's handlers are within the budget and none wait; else when
        the handlers queued before it have had their turns."""
        if not self._waiting:
            now = self.clock()
            if self._opened is None:
                self._opened = now
                self._arm()
            if now - self._opened < self.budget:
                self._admitted += 1
                return
            self._quota = max(self._admitted, 1)
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        self.deferred += 1
        self._arm()
        await waiter

    def _arm(self) -> None:
        if not self._armed:
            self._armed = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._armed = False
        self._opened, self._admitted = None, 0
        released = 0
        while self._waiting and released < self._quota:
            waiter = self._waiting.popleft()
            if not waiter.done():  # a handler cancelled while it waited is skipped
                waiter.set_result(None)
                released += 1
        if self._waiting:
            self._arm()
