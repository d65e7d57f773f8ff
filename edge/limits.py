"""CPU share of a module version, measured over a sliding window.

Where it sits: the server charges the thread CPU time of every call to the version's `CpuShare`
and, before running a call, asks `delay()`. A version over its `cpuPercent` (of one core) in the
last `window` seconds gets its requests held back (they wait until the share frees up) and, if
the wait would exceed `max_wait`, refused with 429 `{"error": "cpu"}`.

Time is injected (`clock`), so the window logic is tested without sleeping.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger("hotswap.edge.limits")


def lower_priority(nice: int) -> None:
    """The calling thread runs at a lower priority than the event loop (Linux: per thread): worker
    threads running calls, and health check threads."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):  # pragma: no cover - not Linux, or not permitted
        log.debug("cannot lower the priority of this thread")


Clock = Callable[[], float]


class CpuShare:
    """CPU nanoseconds charged in the last `window` seconds, against `percent` of one core."""

    def __init__(self, percent: float, *, window: float = 1.0, clock: Clock = time.monotonic) -> None:
        if not 0 < percent <= 100:
            raise ValueError(f"cpuPercent must be in (0, 100], got {percent}")
        self.percent = percent
        self.window = window
        self.budget_ns = int(window * 1e9 * percent / 100)
        self._clock = clock
        self._charges: deque[tuple[float, int]] = deque()
        self._used_ns = 0

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        charges = self._charges
        while charges and charges[0][0] <= horizon:
            self._used_ns -= charges.popleft()[1]

    def charge(self, cpu_ns: int) -> None:
        now = self._clock()
        self._expire(now)
        if cpu_ns > 0:
            self._charges.append((now, cpu_ns))
            self._used_ns += cpu_ns

    def used_ns(self) -> int:
        self._expire(self._clock())
        return self._used_ns

    def over(self) -> bool:
        """Whether a request must wait now (`delay() > 0`). While the charges in the window stay
        under the budget it answers without reading the clock: expiring charges only lowers them."""
        if self._used_ns < self.budget_ns:
            return False
        return self.delay() > 0

    def now(self) -> float:
        """The time on this share's clock."""
        return self._clock()

    def free_at(self, now: float) -> float:
        """When (on this share's clock) the version is back under its share: `now` when it is under
        now. The same instant however late it is asked, as long as no new charge comes: a request
        held until then (`edge.execute`) is refused or served by it, not by how its sleeps fell."""
        self._expire(now)
        excess = self._used_ns - self.budget_ns
        if excess < 0:
            return now
        # The oldest charges leave the window first: find when enough of them have left.
        freed = 0
        for at, ns in self._charges:
            freed += ns
            if freed > excess:
                return max(at + self.window, now)
        return now + self.window  # pragma: no cover - freed always reaches used_ns > excess

    def delay(self) -> float:
        """Seconds until the version is back under its share (0.0 when it is under now)."""
        now = self._clock()
        return self.free_at(now) - now
