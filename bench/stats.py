"""What the bench scripts share: one percentile (nearest rank) and CPU pinning."""

from __future__ import annotations

import os


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
