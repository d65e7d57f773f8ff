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
callbacks that were ready when it began). Handlers past the budget wait in a queue, in order, at no
cost a turn. That callback lets some of them go on the next turn; each still asks the budget of the
turn it wakes in (the first of a turn always goes on), and one that finds it spent goes back to the
head of the queue. How many are woken a turn follows what the last turn took: as many as went on
before the budget ran out, twice as many after a turn they all fit in. So one slow handler does not
leave a wave of cheap ones going one a turn, and a turn of cheap ones does not let a wave of heavy
ones run far past the budget.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

__all__ = ["TURN_BUDGET_SECONDS", "TurnShare"]

# Node-protocol handlers' time in one turn of the event loop. A turn holds more than its handlers: the
# reads, the parsing and the routing of the requests that arrive, the answers' writes, a pass's steps.
# At 1,000 nodes, over a switch, a budget of 10 ms left the loop held over 50 ms in 5-17 ticks a run
# (75-126 ms at most), 2.5 ms in 0-4 (38-91 ms), with the switch no slower (bench/scale.py;
# bench/RESULTS.md, sixth stop).
TURN_BUDGET_SECONDS = 0.0025
QUOTA_MAX = 4096  # waiting handlers woken in one turn, at most


class TurnShare:
    """Node-protocol handlers' share of each turn of the event loop (see the module docstring)."""

    def __init__(self, budget: float = TURN_BUDGET_SECONDS, clock: Callable[[], float] = time.perf_counter) -> None:
        self.budget = budget
        self.clock = clock
        self.deferred = 0  # how many handlers waited for a later turn (bench figures, tests)
        self._opened: float | None = None  # when this turn's first handler asked; None: a new turn
        self._admitted = 0  # handlers that went on this turn
        self._spent = False  # one found this turn's budget spent
        self._quota = 1  # waiting handlers woken a turn (see the module docstring)
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._returned: collections.deque[asyncio.Future[None]] = collections.deque()  # woken, sent back: first
        self._armed = False  # `_next_turn` is scheduled

    async def share(self) -> None:
        """Return at once while this turn's handlers are within the budget and none wait; else when
        the handlers queued before it have had their turns."""
        if not self._waiting and not self._returned and self._admit():
            return
        self.deferred += 1
        queue = self._waiting
        while True:
            waiter = asyncio.get_running_loop().create_future()
            queue.append(waiter)
            self._arm()
            await waiter
            if self._admit():
                return
            queue = self._returned  # the budget of the turn it woke in was spent: back to the head

    def _admit(self) -> bool:
        now = self.clock()
        if self._opened is None:
            self._opened = now
            self._arm()
        if self._admitted == 0 or now - self._opened < self.budget:  # the first of a turn always goes on
            self._admitted += 1
            return True
        self._spent = True
        return False

    def _arm(self) -> None:
        if not self._armed:
            self._armed = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._armed = False
        if self._spent:
            self._quota = max(self._admitted, 1)
        elif self._admitted >= self._quota:
            self._quota = min(2 * self._quota, QUOTA_MAX)
        self._opened, self._admitted, self._spent = None, 0, False
        woken = 0
        for queue in (self._returned, self._waiting):
            while queue and woken < self._quota:
                waiter = queue.popleft()
                if not waiter.done():  # a handler cancelled while it waited is skipped
                    waiter.set_result(None)
                    woken += 1
        if self._returned or self._waiting:
            self._arm()
