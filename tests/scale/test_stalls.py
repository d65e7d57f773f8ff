"""bench/stalls.py names the code that holds the event loop, and only while the loop is late."""

from __future__ import annotations

import asyncio
import signal
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


async def test_the_turn_sampler_counts_a_long_turn_whole_from_its_start() -> None:
    """Sampled inside the loop's thread: the first part of a hold (here before `hold_the_loop`, in the
    test itself) is counted too, once the loop's ticker runs again; the thread-based sampler starts
    looking only once the loop is already late."""
    from bench.stalls import TurnSampler

    sampler = TurnSampler(threading.get_ident(), threshold=0.02, every=0.001, ours=("/tests/",))
    before = signal.getsignal(signal.SIGALRM)
    sampler.start()
    try:
        await asyncio.sleep(0.01)  # the ticker has run: a hold is measured from its last beat
        noted = len(sampler._notes)
        deadline = time.monotonic() + DEADLINE
        while len(sampler._notes) < noted + 5 and time.monotonic() < deadline:  # the start of the turn
            sum(range(1000))
        while len(sampler._notes) < noted + 10 and time.monotonic() < deadline:
            busy_later()
        while time.monotonic() - sampler.beat < 0.03 and time.monotonic() < deadline:
            busy_later()  # past the threshold
        await asyncio.sleep(0.01)  # the ticker runs again and counts the hold
    finally:
        sampler.stop()
    assert sampler.holds >= 1
    stacks = dict(sampler.counts)
    assert any("test_the_turn_sampler_counts" in s and "busy_later" not in s for s in stacks), stacks
    assert any("busy_later" in s for s in stacks), stacks
    assert "holds over 20 ms seen whole: " in sampler.report()
    assert signal.getsignal(signal.SIGALRM) == before  # the handler and the timer are as they were
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def busy_later() -> None:
    sum(range(1000))


def test_the_turn_sampler_refuses_a_thread_other_than_the_main_one() -> None:
    from bench.stalls import TurnSampler

    failed: list[BaseException] = []

    def start() -> None:
        async def run() -> None:
            TurnSampler(threading.get_ident()).start()

        try:
            asyncio.run(run())
        except RuntimeError as exc:
            failed.append(exc)

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    assert failed and "main thread" in str(failed[0])
