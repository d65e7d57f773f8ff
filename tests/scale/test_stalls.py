"""bench/stalls.py names the code that holds the event loop, and only while the loop is late."""

from __future__ import annotations

import threading
import time

from bench.stalls import StallSampler

DEADLINE = 30.0


def hold_the_loop(sampler: StallSampler, samples: int) -> None:
    """Busy on the loop's thread (no await) until the sampler has seen it `samples` times."""
    deadline = time.monotonic() + DEADLINE
    while sampler.samples < samples and time.monotonic() < deadline:
        sum(range(1000))


async def test_a_hold_is_counted_against_the_function_that_held_the_loop() -> None:
    sampler = StallSampler(threading.get_ident(), threshold=0.02, every=0.002, ours=("/tests/",))
    sampler.start()
    try:
        hold_the_loop(sampler, 5)
    finally:
        sampler.stop()
    assert sampler.samples >= 5
    stack, _ = sampler.counts.most_common(1)[0]
    assert stack.startswith("scale/test_stalls.py:") and "hold_the_loop" in stack
    assert "test_a_hold_is_counted" in stack  # the caller, after the innermost frame
    assert "hold_the_loop" in sampler.report()


async def test_nothing_is_counted_while_the_loop_is_on_time() -> None:
    sampler = StallSampler(threading.get_ident(), threshold=60.0, every=0.002, ours=("/tests/",))
    sampler.start()
    try:
        deadline = time.monotonic() + DEADLINE
        while sampler.checks < 5 and time.monotonic() < deadline:  # held, but less than the threshold
            sum(range(1000))
    finally:
        sampler.stop()
    assert sampler.checks >= 5
    assert sampler.samples == 0 and not sampler.counts


async def test_garbage_collections_are_timed_while_sampling() -> None:
    import gc

    sampler = StallSampler(threading.get_ident(), threshold=60.0, ours=("/tests/",))
    sampler.start()
    try:
        gc.collect()
    finally:
        sampler.stop()
    collections, total, longest, own = sampler.gc[2]
    assert collections >= 1 and total >= longest > 0 and longest >= own
    assert "gc generation 2: " in sampler.report()


def test_the_time_a_thread_waits_for_a_cpu_another_process_holds_is_counted() -> None:
    """Pinned to one CPU with a process that spins on it, a busy thread waits for that CPU."""
    import os
    import subprocess
    import sys

    from bench.stalls import waited_for_cpu

    allowed = os.sched_getaffinity(0)
    cpu = min(allowed)
    spin = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"
    spinner = subprocess.Popen([sys.executable, "-c", spin])
    try:
        os.sched_setaffinity(0, {cpu})  # this thread only
        start = waited_for_cpu()
        assert start is not None  # Linux with schedstats, as CI's machines are
        now, deadline = start, time.monotonic() + DEADLINE
        while now == start and time.monotonic() < deadline:
            sum(range(10000))
            now = waited_for_cpu() or start
        assert now > start
    finally:
        os.sched_setaffinity(0, allowed)
        spinner.kill()
        spinner.wait()
