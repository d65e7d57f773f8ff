"""The reconcile loop survives a pass that fails in a way nobody planned for, and says so."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest

from reconciler.controller import Controller
from reconciler.nodes import NodeHub
from reconciler.registry import Registry
from reconciler.spec.fleet import DesiredFleet
from reconciler.store.blobs import open_blob_store
from reconciler.store.state import open_state_store


class FlakySource:
    """A Git source whose first read fails with a bug, then has no revision yet."""

    def __init__(self) -> None:
        self.reads = 0

    @property
    def latest(self) -> None:
        self.reads += 1
        if self.reads == 1:
            raise RuntimeError("a bug in a pass")
        return None

    def fleet_at(self, sha: str) -> DesiredFleet | None:
        return None


async def test_an_unexpected_error_in_a_pass_is_logged_and_the_loop_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_state_store(data_dir=tmp_path)
    hub = NodeHub(store, heartbeat_seconds=0.1)
    source = FlakySource()
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
