"""Blocking store calls from the event loop, run together: one worker thread hop per batch, not per call.

Where it sits: `reconciler.nodes.NodeHub` writes each heartbeat and each published table through one
`ThreadBatch`. At 1,000 nodes a blue-green switch is 2,000 table writes and 2,000 heartbeats within a
second or two; one `asyncio.to_thread` each cost the event loop a future, a thread hand-off and a
wake-up apiece. Here a call that arrives while a batch runs waits for the next one, so an idle
control plane pays nothing extra and a busy one pays one hop for many calls. The calls of a batch run
in order, each on its own (one that raises fails only its caller); each is its own transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
BATCH_LIMIT = 256  # calls in one hop: a long batch would hold back the first caller's answer


def _run_all(calls: list[Callable[[], Any]]) -> list[tuple[bool, Any]]:
    out: list[tuple[bool, Any]] = []
    for call in calls:
        try:
            out.append((True, call()))
        except Exception as exc:  # handed to the caller of that call
            out.append((False, exc))
    return out


class ThreadBatch:
    def __init__(self, limit: int = BATCH_LIMIT) -> None:
        self.limit = limit
        self.batches = 0  # hops made, for tests and benches
        self._pending: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def run(self, call: Callable[[], T]) -> T:
        """`call()` in a worker thread, with whatever other calls are waiting."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((call, future))
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.limit], self._pending[self.limit :]
                self.batches += 1
                try:
                    results = await asyncio.to_thread(_run_all, [call for call, _ in batch])
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
