"""Blocking store writes from the event loop, run together: one worker thread hop per batch, not per call.

Where it sits: `reconciler.apply.nodes.NodeHub` writes each heartbeat and each published table through a
batcher. At 1,000 nodes a blue-green switch is 2,000 table writes and 2,000 heartbeats within a
second or two; one `asyncio.to_thread` each cost the event loop a future, a thread hand-off and a
wake-up apiece. Here a call that arrives while a batch runs waits for the next one, so an idle
control plane pays nothing extra and a busy one pays one hop for many calls.

`RowBatch` takes rows of one kind (a heartbeat, a shared heartbeat with its metric deltas, a node's
table) and writes a batch with one bulk call in ONE transaction. When the bulk write raises, nothing
of it was written and the rows are written again one by one, so a bad row fails only its caller.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, cast

log = logging.getLogger("hotswap.nodes")

Item = TypeVar("Item")
Row = TypeVar("Row")
Answer = TypeVar("Answer")
Outcome = tuple[bool, Any]  # (True, answer) or (False, the exception for its caller)
BATCH_LIMIT = 256  # calls in one hop: a long batch would hold back the first caller's answer


def _run_all(calls: Sequence[Callable[[], Any]]) -> list[Outcome]:
    out: list[Outcome] = []
    for call in calls:
        try:
            out.append((True, call()))
        except Exception as exc:  # handed to the caller of that call
            out.append((False, exc))
    return out


def _bulk_or_each(
    bulk: Callable[[list[Row]], Sequence[Any]], single: Callable[[Row], Any], rows: list[Row]
) -> list[Outcome]:
    if len(rows) > 1:
        try:
            answers = bulk(rows)
        except Exception as exc:  # one transaction, so nothing was written: each row on its own
            log.warning("a bulk write of %d rows failed (%s); writing them one by one", len(rows), exc)
        else:
            return [(True, answer) for answer in answers]
    return _run_all([functools.partial(single, row) for row in rows])


class _Batcher(Generic[Item]):
    """Queue items; one task drains them, `limit` at a time, through `execute` in a worker thread."""

    def __init__(self, execute: Callable[[list[Item]], list[Outcome]], limit: int) -> None:
        self.limit = limit
        self.batches = 0  # hops made, for tests and benches
        self._execute = execute
        self._pending: list[tuple[Item, asyncio.Future[Any]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def _submit(self, item: Item) -> Any:
        return await self._enqueue([item])[0]

    def _enqueue(self, items: Sequence[Item]) -> list[asyncio.Future[Any]]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = []
        for item in items:
            future: asyncio.Future[Any] = loop.create_future()
            self._pending.append((item, future))
            futures.append(future)
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain())
        return futures

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.limit], self._pending[self.limit :]
                self.batches += 1
                try:
                    results = await asyncio.to_thread(self._execute, [item for item, _ in batch])
                except BaseException:  # cancelled (the loop is closing): no caller is left waiting
                    for _, future in batch + self._pending:
                        if not future.done():
                            future.set_exception(RuntimeError("the control plane is stopping"))
                    self._pending = []
                    raise
                for (_, future), (ok, value) in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        finally:
            self._draining = None


class RowBatch(_Batcher[Row], Generic[Row, Answer]):
    def __init__(
        self,
        bulk: Callable[[list[Row]], Sequence[Answer]],
        single: Callable[[Row], Answer],
        limit: int = BATCH_LIMIT,
    ) -> None:
        """`bulk(rows)` writes rows in one transaction and answers for each in order; `single(row)`
        writes one (the same answer as bulk would give it)."""
        super().__init__(functools.partial(_bulk_or_each, bulk, single), limit)

    async def write(self, row: Row) -> Answer:
        """Write `row` with whatever other rows are waiting; its own answer, or its own exception."""
        return cast(Answer, await self._submit(row))

    async def write_all(self, rows: Sequence[Row]) -> list[Answer | BaseException]:
        """Write `rows` (with whatever others are waiting): each one's answer, or its exception, in
        order. One waiter for them all: a fleet's tables written by one task each woke thousands of
        tasks in one turn of the event loop."""
        if not rows:
            return []
        return cast(list[Answer | BaseException], await asyncio.gather(*self._enqueue(rows), return_exceptions=True))
