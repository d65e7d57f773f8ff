"""What the bench scripts share: one percentile (nearest rank), CPU pinning, and the machine's line."""

from __future__ import annotations

import os
import platform
import time


def percentile(values: list[float], q: float) -> float:
    """The value at rank `q` (0..1) of the sorted values, nearest rank; NaN when there are none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def pin(pid: int, cpu: int) -> None:
    """Keep a process on one CPU (when there is more than one), so client and server do not share."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(pid, {cpu})


def machine() -> str:
    """The machine, the date and the load, as a bench's first line prints them."""
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; load average {load}"
    )
