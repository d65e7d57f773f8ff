"""Store calls made from the event loop run together in a worker thread: calls that arrive while a
batch runs share the next hop, each gets its own answer, and one that raises fails only its caller."""

from __future__ import annotations

import asyncio
import functools
import threading

import pytest

from reconciler.threadbatch import ThreadBatch


async def test_calls_waiting_together_share_one_thread_hop_and_keep_their_answers() -> None:
    batch = ThreadBatch()
    gate = threading.Event()
    threads: list[int] = []

    def first() -> str:
        gate.wait(10)  # holds the first hop until the others are queued
        return "first"

    def call(i: int) -> int:
        threads.append(threading.get_ident())
        return i * i

    head = asyncio.create_task(batch.run(first))
    await asyncio.sleep(0)  # the first hop starts
    rest = [asyncio.create_task(batch.run(functools.partial(call, i))) for i in range(50)]
    await asyncio.sleep(0)
    gate.set()
    assert await head == "first"
    assert await asyncio.gather(*rest) == [i * i for i in range(50)]
    assert batch.batches == 2 and len(set(threads)) == 1


async def test_a_call_that_raises_fails_only_its_caller() -> None:
    batch = ThreadBatch()

    def boom() -> None:
        raise KeyError("gone")

    results = await asyncio.gather(batch.run(lambda: 1), batch.run(boom), batch.run(lambda: 3), return_exceptions=True)
    assert results[0] == 1 and results[2] == 3 and isinstance(results[1], KeyError)


async def test_a_batch_holds_at_most_its_limit() -> None:
    batch = ThreadBatch(limit=4)
    assert await asyncio.gather(*(batch.run(functools.partial(int, i)) for i in range(10))) == list(range(10))
    assert batch.batches == 3


@pytest.mark.parametrize("calls", [1, 3])
async def test_an_idle_batch_starts_at_once_and_ends(calls: int) -> None:
    batch = ThreadBatch()
    for _ in range(calls):
        assert await batch.run(lambda: "done") == "done"
    assert batch._draining is None
