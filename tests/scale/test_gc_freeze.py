"""The control plane freezes its long-lived objects once the fleet has registered
(`reconciler.apply.freezing.LongLivedFreezer`), so full collections skip them; nothing may stay alive because
of it: node state the hub retires (a row a heartbeat replaced, a table a publish replaced, a deleted
node's row, table and view) is freed while frozen, young garbage is never frozen, and what was
frozen alive and died in a cycle goes at the next refreeze. A routine freeze costs a young
collection, not a walk of the whole heap."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.nodeapi import Heartbeat, Registration
from edge.protocol import ModuleEntry
from reconciler.apply.freezing import LongLivedFreezer
from reconciler.apply.nodes import NodeHub
from reconciler.store.state import open_state_store

# These tests run the collector (the freezer collects before it freezes), which finalises whatever
# earlier tests in the same process left unreachable, e.g. a socket a client did not close: that
# warning is about the earlier test, whichever test happens to collect, not about freezing.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


class Cycle:
    """An object only the cycle collector can free."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test run is not frozen


def entry(module: str, version: str) -> ModuleEntry:
    return ModuleEntry(module=module, version=version, digest="sha256:" + "0" * 64, weight=100)


async def test_frozen_node_state_is_freed_once_retired(tmp_path: Path) -> None:
    store = open_state_store(data_dir=tmp_path)
    try:
        hub = NodeHub(store, heartbeat_seconds=5.0)
        ids = [f"n{i}" for i in range(20)]
        for node_id in ids:
            url = f"http://{node_id}.example:8080"
            await hub.register(Registration(id=node_id, region="us-east", hostname=node_id, url=url))
            assert await hub.publish(node_id, (entry("greeter", "1.0.0"),)) is not None
            assert await hub.heartbeat(node_id, Heartbeat(generation=1)) is not None
        watcher = hub.watch()
        watcher.take()
        freezer = LongLivedFreezer(hub.count, min_nodes=len(ids))
        assert not freezer.check()  # the fleet's size is seen once: not settled yet
        assert freezer.check() and freezer.freezes == 1
        assert gc.get_freeze_count() > 0
        assert not freezer.check()  # settled and frozen: nothing to do until it grows or time passes
        few = LongLivedFreezer(hub.count, min_nodes=len(ids) + 1)
        assert not few.check() and not few.check()  # settled, but too few nodes to be worth it

        rows = [weakref.ref(hub._nodes[i]) for i in ids]
        tables = [weakref.ref(hub._tables[i]) for i in ids]
        views = [weakref.ref(v) for v in hub.view()]
        assert all(r() is not None for r in rows) and all(r() is not None for r in tables)
        assert all(r() is not None for r in views)
        # Retire them: new reports for half the fleet, a new table for the other half, one node deleted.
        for node_id in ids[:10]:
            assert await hub.heartbeat(node_id, Heartbeat(generation=1, cpu_percent=5.0)) is not None
        for node_id in ids[10:]:
            assert await hub.publish(node_id, (entry("greeter", "1.1.0"),)) is not None
        assert await hub.delete("n0")
        hub.view()
        watcher.take()
        gc.collect()  # does not look at frozen objects: only reference counts can free them
        assert [r() for r in rows[:10]] == [None] * 10  # replaced by a heartbeat
        assert [r() for r in tables[10:]] == [None] * 10  # replaced by a publish
        assert rows[0]() is None and tables[0]() is None and views[0]() is None
        assert all(r() is None for r in views[1:10])  # their rows changed: new views
    finally:
        store.close()


def test_garbage_is_never_frozen_and_frozen_cycles_go_at_the_next_freeze() -> None:
    clock = [0.0]
    freezer = LongLivedFreezer(lambda: 1, refreeze_seconds=600.0, min_nodes=1, clock=lambda: clock[0])
    garbage = weakref.ref(Cycle())  # unreachable before the freeze: collected by it, not frozen
    alive = Cycle()
    held = weakref.ref(alive)
    assert garbage() is not None  # not collected yet
    freezer.check()
    assert freezer.check() and freezer.freezes == 1
    assert garbage() is None
    del alive  # frozen while alive, now cyclic garbage: out of the collector's reach ...
    gc.collect()
    assert held() is not None
    clock[0] += 599.0
    assert not freezer.check()
    clock[0] += 1.0
    assert freezer.check() and freezer.freezes == 2  # ... until the next freeze gives it back
    assert held() is None


def test_a_routine_freeze_walks_only_the_young_generations_and_a_refreeze_walks_everything() -> None:
    clock = [0.0]
    freezer = LongLivedFreezer(lambda: 1, refreeze_seconds=600.0, min_nodes=1, clock=lambda: clock[0])

    def full_collections() -> int:
        return int(gc.get_stats()[2]["collections"])

    full = full_collections()
    freezer.check()
    assert freezer.check() and freezer.freezes == 1 and freezer.refreezes == 0
    assert full_collections() == full  # the first freeze: no walk of the whole heap on the event loop
    clock[0] += 600.0
    assert freezer.check() and freezer.refreezes == 1
    assert full_collections() == full + 1
