"""Store writes made from the event loop run together in a worker thread: rows that arrive while a
batch runs share the next hop, each gets its own answer, and one that fails fails only its caller."""

from __future__ import annotations

import asyncio
import threading

import pytest

from reconciler.apply.threadbatch import RowBatch


def squares(threads: list[int] | None = None, gate: threading.Event | None = None) -> RowBatch[int, int]:
    """A batcher whose bulk write squares its rows (row 0 waits for `gate`; -1 cannot be written)."""

    def single(row: int) -> int:
        if row < 0:
            raise KeyError(row)
        if row == 0 and gate is not None:
            gate.wait(10)  # holds the first hop until the others are queued
        if threads is not None:
            threads.append(threading.get_ident())
        return row * row

    def bulk(rows: list[int]) -> list[int]:
        if any(row < 0 for row in rows):
            raise KeyError("a bad row: the whole transaction fails")
        return [single(row) for row in rows]

    return RowBatch(bulk, single)


async def test_rows_waiting_together_share_one_thread_hop_and_keep_their_answers() -> None:
    gate = threading.Event()
    threads: list[int] = []
    batch = squares(threads, gate)
    head = asyncio.create_task(batch.write(0))
    await asyncio.sleep(0)  # the first hop starts
    rest = [asyncio.create_task(batch.write(i)) for i in range(1, 51)]
    await asyncio.sleep(0)
    gate.set()
    assert await head == 0
    assert await asyncio.gather(*rest) == [i * i for i in range(1, 51)]
    # The 50 that queued while the first hop ran went in one hop: one thread ran them all (the pool
    # may run that hop on another thread than the first's, which has not gone idle yet on a busy machine).
    assert batch.batches == 2 and len(threads) == 51 and len(set(threads[1:])) == 1


async def test_a_row_that_fails_fails_only_its_caller() -> None:
    batch = squares()
    results = await asyncio.gather(batch.write(1), batch.write(-1), batch.write(3), return_exceptions=True)
    assert results[0] == 1 and results[2] == 9 and isinstance(results[1], KeyError)


async def test_a_batch_holds_at_most_its_limit() -> None:
    batch: RowBatch[int, int] = RowBatch(list, int, limit=4)
    assert await asyncio.gather(*(batch.write(i) for i in range(10))) == list(range(10))
    assert batch.batches == 3


@pytest.mark.parametrize("calls", [1, 3])
async def test_an_idle_batch_starts_at_once_and_ends(calls: int) -> None:
    batch = squares()
    for _ in range(calls):
        assert await batch.write(2) == 4
    assert batch._draining is None
