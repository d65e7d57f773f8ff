"""The reconcile loop survives a pass that fails in a way nobody planned for, and says so."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.nodeapi import Heartbeat, NodeStatus
from reconciler.apply.controller import Controller
from reconciler.apply.nodes import NodeHub
from reconciler.apply.registry import Registry
from reconciler.spec.fleet import DesiredFleet
from reconciler.store.blobs import open_blob_store
from reconciler.store.errors import BackendError
from reconciler.store.records import NodeRecord
from reconciler.store.state import open_state_store


class FailsOnce:
    """A Git source whose first read raises `error` (a bug, a store gone away), then has no revision yet."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.reads = 0

    @property
    def latest(self) -> None:
        self.reads += 1
        if self.reads == 1:
            raise self.error
        return None

    def fleet_at(self, sha: str) -> DesiredFleet | None:
        return None


async def test_an_unexpected_error_in_a_pass_is_logged_and_the_loop_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_state_store(data_dir=tmp_path)
    hub = NodeHub(store, heartbeat_seconds=0.1)
    source = FailsOnce(RuntimeError("a bug in a pass"))
    controller = Controller(
        store=store, registry=Registry(store, open_blob_store(None, tmp_path)), source=source, hub=hub
    )
    hub.poke = controller.poke
    caplog.set_level(logging.ERROR, logger="hotswap.controller")
    task = asyncio.create_task(controller.run())
    try:
        assert await controller.wait_for_pass(1, 10.0)  # a second pass: the loop went on after the failure
        assert source.reads >= 2
        assert controller.state.error == "RuntimeError: a bug in a pass"  # shown in status until a full pass
        assert "reconcile pass failed unexpectedly" in caplog.text
        assert "RuntimeError: a bug in a pass" in caplog.text
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        store.close()


class EmptySource:
    """A Git source with no revision yet: every pass ends at once and waits to be poked."""

    latest = None

    def fleet_at(self, sha: str) -> DesiredFleet | None:
        return None


async def test_a_poke_in_the_same_turn_as_the_stop_does_not_keep_the_loop_alive(tmp_path: Path) -> None:
    # Python 3.11's asyncio.wait_for returns the result when the awaited event fires in the turn the
    # task is cancelled, dropping the cancel: the loop then ran on and the plane's stop waited forever.
    store = open_state_store(data_dir=tmp_path)
    hub = NodeHub(store, heartbeat_seconds=0.1)
    controller = Controller(
        store=store, registry=Registry(store, open_blob_store(None, tmp_path)), source=EmptySource(), hub=hub
    )
    task = asyncio.create_task(controller.run())
    try:
        for round_ in range(5):
            assert await controller.wait_for_pass(round_, 10.0)
        controller.poke()  # wakes the loop's wait ...
        task.cancel()  # ... in the same turn as the stop
        done, _ = await asyncio.wait({task}, timeout=10.0)
        assert done == {task}, "the controller's loop swallowed its cancellation"
        assert task.cancelled()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        store.close()


async def test_the_planes_stop_cancels_again_a_task_that_dropped_its_cancel(caplog: pytest.LogCaptureFixture) -> None:
    from reconciler.server import finish

    cancels = 0

    async def stubborn() -> None:
        nonlocal cancels
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancels += 1
                if cancels == 1:
                    continue  # the first cancel is lost, as a 3.11 wait_for loses one
                raise

    async def quiet() -> None:
        await asyncio.Event().wait()

    tasks = [asyncio.create_task(stubborn(), name="stubborn"), asyncio.create_task(quiet(), name="quiet")]
    await asyncio.sleep(0)  # both started
    caplog.set_level(logging.WARNING, logger="hotswap.serve")
    await finish(tasks)
    assert all(task.cancelled() for task in tasks)
    assert cancels == 2
    assert "task stubborn is still running after its cancel" in caplog.text


def test_no_production_code_waits_with_asyncio_wait_for() -> None:
    # The loops above stop only because their waits use asyncio.timeout; one wait_for in a loop
    # brings the hang back (until Python 3.12 rewrote wait_for on top of asyncio.timeout).
    root = Path(__file__).resolve().parents[2]
    found = [
        f"{path.relative_to(root)}:{number}"
        for package in ("reconciler", "edge", "hotswap")
        for path in sorted((root / package).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "asyncio.wait_for(" in line and not line.lstrip().startswith("#")
    ]
    assert not found, f"use `async with asyncio.timeout(...)` instead of asyncio.wait_for at {found}"


async def test_after_a_pass_the_store_failed_the_next_waits_for_every_nodes_fresh_report(tmp_path: Path) -> None:
    # A store restart fails the nodes' heartbeats as well as the pass. A pass that judged the nodes
    # by that silence called them Unhealthy and published them empty tables (404s for every module
    # they held, until their next heartbeat): tests/chaos/test_postgres_restart.py failed so.
    store = open_state_store(data_dir=tmp_path)
    for node_id in ("a", "b"):
        store.upsert_node(NodeRecord(id=node_id, region="us-east", url=f"http://{node_id}"))
    hub = NodeHub(store, heartbeat_seconds=0.1)
    source = FailsOnce(BackendError("postgresql://db: terminating connection due to administrator command"))
    controller = Controller(
        store=store, registry=Registry(store, open_blob_store(None, tmp_path)), source=source, hub=hub
    )
    hub.poke = controller.poke
    task = asyncio.create_task(controller.run())
    try:
        for node_id in ("a", "b"):  # the first pass waits for both (a start)
            assert await hub.heartbeat(node_id, Heartbeat(generation=0)) is not None
        assert await controller.wait_for_pass(0, 10.0)
        assert controller.state.error is not None and "BackendError" in controller.state.error
        assert await hub.heartbeat("a", Heartbeat(generation=0)) is not None
        # "b" has not reported since the store failed: no pass yet (the wait lasts three heartbeats
        # and a node's reconnect delay, 5.3 s here).
        assert not await controller.wait_for_pass(1, 0.5)
        assert source.reads == 1
        assert await hub.heartbeat("b", Heartbeat(generation=0)) is not None
        assert await controller.wait_for_pass(1, 10.0)
        assert source.reads == 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        store.close()


async def test_a_wait_for_reports_is_bounded_and_waits_again_only_when_asked(tmp_path: Path) -> None:
    store = open_state_store(data_dir=tmp_path)
    try:
        for node_id in ("a", "b"):
            store.upsert_node(NodeRecord(id=node_id, region="us-east", url=f"http://{node_id}"))
        hub = NodeHub(store, heartbeat_seconds=0.1)
        assert await hub.heartbeat("a", Heartbeat(generation=0)) is not None
        assert await hub.wait_reports(timeout=0.2) is False  # "b" never reports
        assert await hub.wait_reports(timeout=0.2) is True  # judged by its row from then on: no wait
        hub.expect_reports()  # "a"'s report came before: it must report again
        waiting = asyncio.create_task(hub.wait_reports(timeout=30.0))
        assert await hub.heartbeat("b", Heartbeat(generation=0)) is not None
        assert await hub.heartbeat("a", Heartbeat(generation=0)) is not None
        assert await waiting is True
    finally:
        store.close()


async def test_a_wait_for_fresh_reports_skips_nodes_long_silent_or_draining(tmp_path: Path) -> None:
    # A node long dead (not yet deleted) or draining must not hold up the pass after every store
    # failure or lead taken for the whole bounded wait.
    store = open_state_store(data_dir=tmp_path)
    try:
        clock = [1_800_000_000.0]
        at = datetime.fromtimestamp(clock[0], UTC)
        store.upsert_node(NodeRecord(id="live", region="us-east", url="http://live", last_heartbeat_at=at))
        dead_at = datetime.fromtimestamp(clock[0] - 3600, UTC)
        store.upsert_node(NodeRecord(id="dead", region="us-east", url="http://dead", last_heartbeat_at=dead_at))
        store.upsert_node(
            NodeRecord(
                id="drained", region="us-east", url="http://drained", status=NodeStatus.DRAINING, last_heartbeat_at=at
            )
        )
        hub = NodeHub(store, heartbeat_seconds=0.1, clock=lambda: clock[0])
        assert await hub.heartbeat("live", Heartbeat(generation=0)) is not None
        assert await hub.wait_reports(timeout=0.2) is False  # a start waits for "dead" too ...
        hub.expect_reports()
        waiting = asyncio.create_task(hub.wait_reports(timeout=30.0))
        assert await hub.heartbeat("live", Heartbeat(generation=0)) is not None
        assert await waiting is True  # ... a store failure or a lead waits for "live" only
    finally:
        store.close()
