"""The notifier's tick looks at the nodes that changed (`NodeHub.watch`), not at the whole fleet, and
still tells every health change the full view would: a node that turns Unhealthy by the clock alone,
one that comes back, one that fills up, one deleted. Driven with a test clock, side by side with a
notifier that reads the whole fleet every tick."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from edge.nodeapi import Heartbeat, Registration, Running
from reconciler.apply.nodehealth import MISSED_HEARTBEATS
from reconciler.apply.nodes import NodeHub
from reconciler.notify import Notifier, Observed, Settings
from reconciler.notify import notifier as notifier_module
from reconciler.notify.scaling import Thresholds
from reconciler.store.state import open_state_store
from tests.e2e.cluster import poll

T0 = 1_800_000_000.0
BEAT = 5.0  # heartbeat seconds; the notifier ticks every second
NODES = 40


def told(notifier: Notifier, now: float) -> list[tuple[str, str | None]]:
    return sorted((n.type, n.node) for n in notifier.tick(now))


async def test_the_tick_samples_only_changed_nodes_and_tells_every_health_change(tmp_path: Path) -> None:
    store = open_state_store(data_dir=tmp_path)
    clock = [T0]
    try:
        hub = NodeHub(store, heartbeat_seconds=BEAT, clock=lambda: clock[0])
        ids = [f"n{i:02d}" for i in range(NODES)]
        for node_id in ids:
            url = f"http://{node_id}.example:8080"
            await hub.register(Registration(id=node_id, region="us-east", hostname=node_id, url=url, max_modules=2))
        settings = Settings(tick_seconds=None, node_grace_seconds=0)
        changes = Notifier([], observed=Observed(node_changes=hub.watch().take), settings=settings, env={})
        full = Notifier([], observed=Observed(nodes=hub.view), settings=settings, env={})

        def tick() -> list[tuple[str, str | None]]:
            found = told(changes, clock[0])
            assert found == told(full, clock[0])  # the same notifications as a look at every node
            return found

        assert tick() == []
        assert changes.sampled == NODES  # the first look: every node

        async def beat(node_id: str, running: int = 0) -> None:
            rows = tuple(
                Running(module=f"m{k}", version="1.0.0", digest="sha256:" + "0" * 64, weight=100)
                for k in range(running)
            )
            assert await hub.heartbeat(node_id, Heartbeat(generation=0, running=rows)) is not None

        # Half a heartbeat later two nodes report: only they are looked at.
        clock[0] += BEAT / 2
        await beat("n00")
        await beat("n01")
        sampled = changes.sampled
        assert tick() == []
        assert changes.sampled - sampled == 2
        sampled = changes.sampled
        assert tick() == [] and changes.sampled == sampled  # nothing changed: nothing looked at

        # Every node but n02 and n03 keeps reporting, each once a heartbeat period, in turn (a tick
        # a second, as the notifier runs); those two go silent: Unhealthy by the clock alone, with
        # no row of theirs changing (the controller's health check has not run either).
        full_sampled = full.sampled
        found = []
        for second in range(1, 4 * MISSED_HEARTBEATS * int(BEAT)):
            clock[0] = T0 + BEAT / 2 + second
            for i, node_id in enumerate(ids):
                if node_id not in ("n02", "n03") and (second + i) % int(BEAT) == 0:
                    await beat(node_id)
            found += tick()
        assert found == [("node.unhealthy", "n02"), ("node.unhealthy", "n03")]
        assert changes.sampled - sampled < (full.sampled - full_sampled) / 3  # a fifth of the fleet a tick

        # n02 comes back, n04 fills up (2 module versions, its maxModules), n03 is deleted.
        await beat("n02")
        await beat("n04", running=2)
        assert await hub.delete("n03")
        sampled = changes.sampled
        assert tick() == [("capacity.reached", "n04"), ("node.recovered", "n02")]
        assert changes.sampled - sampled == 2
        # A node that was gone and registers again is seen afresh.
        url = "http://n03.example:8080"
        await hub.register(Registration(id="n03", region="us-east", hostname="n03", url=url, max_modules=2))
        assert tick() == []
        assert "n03" in changes.node_watcher._status
    finally:
        store.close()


async def test_a_tick_reads_a_bounded_number_of_changed_nodes_and_the_loop_reads_the_rest_on_its_next_turns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A switch changes every node at once: a tick reads NODE_CHANGES_A_TICK of them, and the ticks on
    the event loop's next turns the rest (not a second later each). The regions' scaling figures are
    judged once every node's sample is current: a region whose busiest nodes come last is told once."""
    monkeypatch.setattr(notifier_module, "NODE_CHANGES_A_TICK", 8)
    store = open_state_store(data_dir=tmp_path)
    clock = [T0]
    try:
        hub = NodeHub(store, heartbeat_seconds=BEAT, clock=lambda: clock[0])
        ids = [f"n{i:02d}" for i in range(20)]
        for node_id in ids:
            url = f"http://{node_id}.example:8080"
            await hub.register(Registration(id=node_id, region="us-east", hostname=node_id, url=url, max_modules=4))
            running = tuple(
                Running(module=f"m{k}", version="1.0.0", digest="sha256:" + "0" * 64, weight=100)
                for k in range(3 if node_id >= "n16" else 1)
            )
            assert await hub.heartbeat(node_id, Heartbeat(generation=0, running=running)) is not None
        thresholds = Thresholds(max_modules_per_node=2)
        settings = Settings(tick_seconds=None, node_grace_seconds=0, thresholds=thresholds)
        notifier = Notifier([], observed=Observed(node_changes=hub.watch().take), settings=settings, env={})

        assert told(notifier, clock[0]) == [] and (notifier.sampled, notifier.behind) == (8, True)
        assert told(notifier, clock[0]) == [] and (notifier.sampled, notifier.behind) == (16, True)
        assert told(notifier, clock[0]) == [("scaling.scaleUp", None)]  # n16-n19 run 3 versions each
        assert (notifier.sampled, notifier.behind) == (20, False)
        assert told(notifier, clock[0]) == [] and notifier.sampled == 20  # nothing changed since

        # Running, with an hour between ticks: every node is read again within a few turns.
        for node_id in ids:
            assert await hub.heartbeat(node_id, Heartbeat(generation=0)) is not None
        hourly = Notifier(
            [], observed=Observed(node_changes=hub.watch().take), settings=replace(settings, tick_seconds=3600), env={}
        )
        hourly.start()
        try:
            await poll(lambda: hourly.sampled == 20, "the ticks on the next turns to read every node")
            assert not hourly.behind
        finally:
            await hourly.stop()
    finally:
        store.close()


async def test_a_node_another_replica_deleted_is_gone_for_the_tick(tmp_path: Path) -> None:
    """`NodeHub.merge` forgets a node another replica deleted, then checks its health: that check must
    not bring it back as changed (a tick then had no view of it and never heard it was gone, so its
    sample stayed in the regions' figures)."""
    store = open_state_store(data_dir=tmp_path)
    try:
        hub = NodeHub(store, heartbeat_seconds=BEAT)
        for node_id in ("a", "b"):
            await hub.register(Registration(id=node_id, region="r", hostname=node_id, url=f"http://{node_id}:8080"))
        watcher = hub.watch()
        notifier = Notifier([], observed=Observed(node_changes=watcher.take), settings=Settings(tick_seconds=None))
        notifier.tick()
        assert set(notifier._samples) == {"a", "b"}
        hub.merge((), ["b"])
        notifier.tick()
        assert set(notifier._samples) == {"a"} and "b" not in notifier.node_watcher._status
    finally:
        store.close()


async def test_a_tick_that_fails_behind_waits_for_the_next_tick_not_the_next_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tick that found a full slice of changes and then failed is not tried again every turn."""
    monkeypatch.setattr(notifier_module, "NODE_CHANGES_A_TICK", 2)
    calls: list[float] = []

    class Broken:
        @property
        def id(self) -> str:
            raise RuntimeError("a view that cannot be read")

    def node_changes(now: float, limit: int) -> tuple[list[Broken], list[str]]:
        calls.append(now)
        return [Broken()] * limit, []

    notifier = Notifier(
        [],
        observed=Observed(node_changes=node_changes),
        settings=Settings(tick_seconds=3600),
        env={},  # type: ignore[arg-type]
    )
    notifier.start()
    try:
        await poll(lambda: len(calls) == 1, "the first tick")
        for _ in range(20):  # turns of the loop: a retry every turn would tick again within them
            await asyncio.sleep(0)
        assert len(calls) == 1 and not notifier.behind
    finally:
        await notifier.stop()
