"""reconciler.apply.turns: a wave of node-protocol handlers shares the event loop's turns with the
rest: once a turn's handlers have used the budget, the others wait for the next turn, in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge.nodeapi import Heartbeat
from reconciler.apply.turns import TurnShare
from reconciler.store.state import open_state_store

from .test_publish_batches import registered

WORK = 0.003  # what each handler "spends", on the test's clock


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_wave_of_handlers_is_spread_over_turns_with_the_loop_turning_between_them() -> None:
    clock = Clock()
    turns = TurnShare(budget=0.010, clock=clock)
    loop = asyncio.get_running_loop()
    order: list[str] = []
    turn = 0
    done = asyncio.Event()

    def tick() -> None:  # the rest of the loop's work: runs once a turn
        nonlocal turn
        turn += 1
        order.append(f"turn {turn}")
        if not done.is_set():
            loop.call_soon(tick)

    async def handler(n: int) -> None:
        await turns.share()
        order.append(f"handler {n}")
        clock.now += WORK

    loop.call_soon(tick)
    handlers = [asyncio.create_task(handler(n)) for n in range(20)]
    await asyncio.gather(*handlers)
    done.set()
    served = [int(line.split()[1]) for line in order if line.startswith("handler")]
    assert served == list(range(20))  # in the order they came
    runs: list[int] = []  # handlers between two turns of the loop's other work
    for line in order:
        if line.startswith("turn"):
            runs.append(0)
        elif runs:
            runs[-1] += 1
    assert max(runs) == 4  # 0, 3, 6 and 9 ms are within 10 ms; the fifth waits for the next turn
    assert sum(runs) == 20 and turns.deferred == 16  # each waited once, in a queue: none retried every turn


async def test_a_handler_cancelled_while_it_waits_leaves_the_queue_to_the_others() -> None:
    turns = TurnShare(budget=0.0, clock=Clock())  # no budget: the first of a turn goes on, the others wait
    waiting = [asyncio.create_task(turns.share()) for _ in range(3)]
    await asyncio.sleep(0)  # they have queued
    waiting[1].cancel()
    await asyncio.wait(waiting)
    assert [task.cancelled() for task in waiting] == [False, True, False]
    assert all(task.result() is None for task in (waiting[0], waiting[2])) and turns.deferred == 2


async def test_handlers_within_the_budget_go_on_at_once() -> None:
    turns = TurnShare(budget=10.0, clock=Clock())
    await asyncio.gather(*(turns.share() for _ in range(100)))
    assert turns.deferred == 0


def test_the_same_on_uvloop_the_loop_the_control_plane_runs_on() -> None:
    import uvloop

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(test_a_wave_of_handlers_is_spread_over_turns_with_the_loop_turning_between_them())
    finally:
        loop.close()


async def test_heartbeats_written_in_one_batch_take_turns_for_the_rest_of_their_work(tmp_path: Path) -> None:
    store = open_state_store(data_dir=tmp_path)
    try:
        hub, ids = await registered(store, 8)
        hub.turns = TurnShare(budget=0.0, clock=Clock())  # one continuation a turn
        answers = await asyncio.gather(*(hub.heartbeat(node_id, Heartbeat()) for node_id in ids))
        assert all(answer is not None for answer in answers)
        assert hub.heartbeat_writes.batches >= 1 and hub.turns.deferred >= len(ids) - 1  # woken together, run in turns
    finally:
        store.close()
