"""Fair use of an edge node's worker threads: a share per module version, and a queue behind it.

Where it sits: `edge.server.Node.run` sends a call that cannot run inline (a command, a module with
file grants or one that can sleep, a function that once ran past its inline budget) to the worker
threads. Before it does, the call takes one of its version's thread shares here, and gives it back
when the thread is done with it (not when the request ends: a cancelled request whose call still
runs keeps its share until the call stops).

* A version runs at most `share` calls on the threads at once (`max(1, threads // 2)` unless the
  node says otherwise). A version whose calls all run into their timeout holds at most that many
  threads, so a call of any other version finds a free thread at once instead of queueing behind
  them in the thread pool.
* Calls over the share wait in the version's own FIFO queue: at most `queue` of them, each at most
  `max_wait` seconds. Past either bound the call is answered 429 `{"error": "busy"}`: the version's
  slow calls cost its own callers, not its neighbours'. Busy is load shedding, not a failure of
  the module, so it does not count against the version in rollout analysis.
* A share is handed from the call that ends straight to the first waiter, so a new arrival never
  overtakes the queue.

Limits of the scheme: with `threads` = 1 the share is the one thread (no isolation). Two versions
that saturate their shares at the same time fill the threads between them; a third version's call
then waits for the first of their calls to end (one timeout at most), never for their queues. A
node serving one heavy thread-lane module uses half its threads for it; raise `threads` (or the
share) for that.

Everything here runs on the event loop thread, so the counters need no lock. The inline lane never
comes here: its cost per call is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from edge.errors import BusyError


class ThreadShares:
    """Per version (any hashable key): calls running on the threads, and the calls waiting."""

    def __init__(self, share: int, queue: int, max_wait: float) -> None:
        if share < 1 or queue < 0 or max_wait < 0:
            raise ValueError(f"thread shares: share {share} must be >= 1, queue {queue} and max_wait {max_wait} >= 0")
        self.share = share
        self.queue = queue
        self.max_wait = max_wait
        self._running: dict[object, int] = {}
        self._waiting: dict[object, deque[asyncio.Future[None]]] = {}

    def running(self, key: object) -> int:
        return self._running.get(key, 0)

    def waiting(self, key: object) -> int:
        return len(self._waiting.get(key, ()))

    async def take(self, key: object, name: str) -> None:
        """Take a share for `key` (at once, or after waiting in its queue), or raise BusyError."""
        running = self._running.get(key, 0)
        if running < self.share:
            self._running[key] = running + 1
            return
        waiting = self._waiting.setdefault(key, deque())
        if len(waiting) >= self.queue:
            raise BusyError(
                f"{name}: its {self.share} worker thread(s) are taken and {len(waiting)} call(s) wait for them; "
                "retry later"
            )
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting.append(ticket)
        try:
            async with asyncio.timeout(self.max_wait):
                await ticket
        except BaseException as exc:
            if ticket.done() and not ticket.cancelled():  # handed a share just as the wait ended
                if isinstance(exc, TimeoutError):
                    return  # it is ours: run the call
                self.give_back(key)
                raise
            with contextlib.suppress(ValueError):  # give_back may have dropped the cancelled ticket
                waiting.remove(ticket)
            if not waiting and self._waiting.get(key) is waiting:
                del self._waiting[key]
            if isinstance(exc, TimeoutError):
                raise BusyError(
                    f"{name}: waited {self.max_wait:g}s for one of its {self.share} worker thread(s); retry later"
                ) from None
            raise

    def give_back(self, key: object) -> None:
        """A call of `key` left its thread: the share goes to the first waiter, or is free again."""
        waiting = self._waiting.get(key)
        while waiting:
            ticket = waiting.popleft()
            if not ticket.done():
                ticket.set_result(None)
                if not waiting:
                    del self._waiting[key]
                return
        if waiting is not None:
            del self._waiting[key]
        running = self._running[key] - 1
        if running:
            self._running[key] = running
        else:
            del self._running[key]
