"""Where the event loop is held: a sampler that names the code running while the loop is late.

Where it sits: bench/scale.py's control-plane child starts one (`--stalls FILE`) beside its loop-lag
monitor. The monitor says *that* the loop was held (a 10 ms sleep that woke 600 ms late); asyncio's
debug mode says which task, but a request handler shows only as `RequestHandler._handle_request`.
This says *what*: a thread looks at the loop thread's stack every few milliseconds while the loop is
late, and counts the project frames it finds there. Each sample stands for `every` seconds of hold,
so the counts add up to the time each stack held the loop.

    sampler = StallSampler(threading.get_ident())
    sampler.start()                      # from the loop's thread, with the loop running
    ...
    sampler.stop(); print(sampler.report())

Sampling needs the GIL, so the sampler sees the loop thread between two of its bytecodes: a hold in C
code that keeps the GIL (a long `json.dumps`) shows as the Python line that called it. And it looks
only once the loop is already late, from another thread that must win the GIL to look: it sees the end
of a long turn, at the points where the loop gives the GIL up. `TurnSampler` samples from inside the
loop's thread instead (a timer signal), and counts every sample of a hold once the hold is over: whole
turns. bench/scale.py takes it with `HOTSWAP_SCALE_STALLS_SAMPLER=turns`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

OURS = ("/reconciler/", "/edge/")  # the frames that say what held the loop; the rest is plumbing
SCHEDSTAT = Path("/proc/thread-self/schedstat")  # Linux: on-CPU ns, run-queue wait ns, timeslices


def waited_for_cpu() -> float | None:
    """Seconds the calling thread has spent runnable but not running, since it started: the time the
    kernel gave the CPU to something else (another process on a shared machine). None where the
    kernel does not say (no schedstats).

    A loop that wakes 60 ms late, of which the thread waited 40 ms for a CPU, was held 20 ms by its
    own process: its code, a collection, or a thread of its own holding the GIL (a thread waiting
    for the GIL sleeps; it is not runnable, so that wait is not subtracted)."""
    try:
        return int(SCHEDSTAT.read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def summarize(frame: FrameType | None, depth: int = 4, ours: tuple[str, ...] = OURS) -> str:
    """The innermost `depth` project frames of a stack, innermost first ("dir/file:line function")."""
    found: list[str] = []
    fallback: str | None = None
    while frame is not None and len(found) < depth:
        code = frame.f_code
        where = f"{'/'.join(code.co_filename.split('/')[-2:])}:{frame.f_lineno} {code.co_name}"
        if fallback is None:
            fallback = where
        if any(part in code.co_filename for part in ours):
            found.append(where)
        frame = frame.f_back
    if not found:
        return f"(outside the project) {fallback}"
    return " <- ".join(found)


class StallSampler:
    """Counts the loop thread's stacks while the loop is more than `threshold` seconds late."""

    def __init__(
        self, loop_thread: int, *, threshold: float = 0.05, every: float = 0.005, ours: tuple[str, ...] = OURS
    ) -> None:
        self.loop_thread = loop_thread
        self.ours = ours
        self.threshold = threshold
        self.every = every
        self.beat = time.monotonic()
        self.counts: collections.Counter[str] = collections.Counter()
        self.samples = 0
        self.checks = 0  # how often the thread looked, late or not
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="stall-sampler", daemon=True)
        self._ticker: asyncio.Task[None] | None = None
        # The garbage collector's pauses, by generation: (collections, total s, longest s, longest s
        # less the time the thread waited for a CPU meanwhile). A full collection over a large heap
        # holds the loop wherever it happens to allocate.
        self.gc: dict[int, list[float]] = {g: [0, 0.0, 0.0, 0.0] for g in (0, 1, 2)}
        self._gc_started = 0.0
        self._gc_waited: float | None = None

    def start(self) -> None:
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        self._thread.start()
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_waited = waited_for_cpu()
            self._gc_started = time.perf_counter()
            return
        took = time.perf_counter() - self._gc_started
        waited, before = waited_for_cpu(), self._gc_waited
        own = took - (waited - before) if waited is not None and before is not None else took
        figures = self.gc[info["generation"]]
        figures[0] += 1
        figures[1] += took
        figures[2] = max(figures[2], took)
        figures[3] = max(figures[3], own)

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        self._done.set()
        if self._ticker is not None:
            self._ticker.cancel()
        self._thread.join()

    async def _tick(self) -> None:
        while True:
            self.beat = time.monotonic()
            await asyncio.sleep(self.every)

    def _sample(self) -> None:
        while not self._done.wait(self.every):
            self.checks += 1
            if time.monotonic() - self.beat < self.threshold:
                continue
            frame = sys._current_frames().get(self.loop_thread)
            self.counts[summarize(frame, ours=self.ours)] += 1
            self.samples += 1

    def report(self, top: int = 15) -> str:
        lines = [f"loop held > {self.threshold * 1000:g} ms: {self.samples * self.every:.1f} s sampled in all"]
        for stack, count in self.counts.most_common(top):
            lines.append(f"{count * self.every * 1000:8.0f} ms  {stack}")
        for generation, (collected, total, longest, own) in self.gc.items():
            lines.append(
                f"gc generation {generation}: {collected:.0f} collections, {total * 1000:.0f} ms in all, "
                f"longest {longest * 1000:.1f} ms ({own * 1000:.1f} ms less the waits for a CPU)"
            )
        return "\n".join(lines)


class TurnSampler(StallSampler):
    """The same counts, sampled from inside the loop's own thread: a timer signal (`SIGALRM`, every
    `every` seconds of wall time) notes the innermost frames the thread is running, and the loop's
    ticker, once it runs again after a hold over `threshold`, counts every note taken during that
    hold. So a long turn is seen whole, from its start, and at every point, not only where the loop
    gives up the GIL and only once it is already late (what the thread-based sampler sees).

    Only for the main thread (Python runs signal handlers there), and it interrupts the thread's
    system calls `1 / every` times a second (they are retried): a bench's diagnostic, not for a
    service. Noting a stack costs a few microseconds a sample; `holds` counts the holds seen."""

    DEPTH = 40  # frames noted a sample, innermost first: enough to reach the project's from aiohttp's

    def __init__(
        self, loop_thread: int, *, threshold: float = 0.05, every: float = 0.001, ours: tuple[str, ...] = OURS
    ) -> None:
        super().__init__(loop_thread, threshold=threshold, every=every, ours=ours)
        self.holds = 0
        self._notes: list[tuple[float, tuple[tuple[str, int, str], ...]]] = []
        self._previous: Any = None

    def start(self) -> None:
        if threading.get_ident() != threading.main_thread().ident:
            raise RuntimeError("TurnSampler runs in the main thread: Python runs signal handlers only there")
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        self._previous = signal.signal(signal.SIGALRM, self._note)
        signal.setitimer(signal.ITIMER_REAL, self.every, self.every)
        gc.callbacks.append(self._on_gc)

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        if self._previous is not None:
            signal.signal(signal.SIGALRM, self._previous)
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        if self._ticker is not None:
            self._ticker.cancel()

    def _note(self, signum: int, frame: FrameType | None) -> None:
        stack: list[tuple[str, int, str]] = []
        while frame is not None and len(stack) < self.DEPTH:
            code = frame.f_code
            stack.append((code.co_filename, frame.f_lineno, code.co_name))
            frame = frame.f_back
        self._notes.append((time.monotonic(), tuple(stack)))

    async def _tick(self) -> None:
        while True:
            now = time.monotonic()
            self.checks += 1
            if now - self.beat > self.threshold:
                self.holds += 1
                for at, stack in self._notes:
                    if at > self.beat:
                        self.counts[_summarize_noted(stack, self.ours)] += 1
                        self.samples += 1
            self._notes.clear()
            self.beat = now
            await asyncio.sleep(self.every)

    def report(self, top: int = 15) -> str:
        return f"{super().report(top)}\nholds over {self.threshold * 1000:g} ms seen whole: {self.holds}"


def _summarize_noted(stack: tuple[tuple[str, int, str], ...], ours: tuple[str, ...], depth: int = 4) -> str:
    """`summarize` for a stack noted as (file, line, function), innermost first."""
    found = [
        f"{'/'.join(filename.split('/')[-2:])}:{line} {name}"
        for filename, line, name in stack
        if any(part in filename for part in ours)
    ][:depth]
    if found:
        return " <- ".join(found)
    if stack:
        filename, line, name = stack[0]
        return f"(outside the project) {'/'.join(filename.split('/')[-2:])}:{line} {name}"
    return "(outside the project) no frame"
