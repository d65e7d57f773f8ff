"""What the nodes say they run, summed per module and version (`NodeHub.running_weights`, which every
rollout the API shows carries as `weightsOnNodes`): from the nodes' last reports, the same sums a walk
of the hub's views gives, whatever the nodes' health, kept as rows change rather than walked."""

from __future__ import annotations

from pathlib import Path

from edge.nodeapi import Heartbeat, Registration, Running
from reconciler.apply.nodes import NodeHub
from reconciler.store.state import open_state_store

DIGEST = "sha256:" + "0" * 64


def every(hub: NodeHub) -> dict[str, dict[str, int]]:
    """`running_weights` of each module any node may report here, those with a version only."""
    return {m: weights for m in ("greeter", "adder") if (weights := hub.running_weights(m))}


def running(*entries: tuple[str, str, int]) -> tuple[Running, ...]:
    return tuple(Running(module=m, version=v, digest=DIGEST, weight=w) for m, v, w in entries)


async def test_the_sums_are_those_of_the_last_reports(tmp_path: Path) -> None:
    store = open_state_store(data_dir=tmp_path)
    try:
        clock = [1_800_000_000.0]
        hub = NodeHub(store, heartbeat_seconds=5.0, clock=lambda: clock[0])
        for i in range(3):
            node_id = f"n{i}"
            await hub.register(Registration(id=node_id, region="us-east", hostname=node_id, url=f"http://{node_id}"))
        assert every(hub) == {}
        await hub.heartbeat("n0", Heartbeat(running=running(("greeter", "1.0.0", 100))))
        await hub.heartbeat("n1", Heartbeat(running=running(("greeter", "1.0.0", 80), ("greeter", "1.1.0", 20))))
        await hub.heartbeat("n2", Heartbeat(running=running(("adder", "2.0.0", 100), ("greeter", "1.1.0", 0))))
        await hub.heartbeat("n0", Heartbeat(running=running(("greeter", "1.1.0", 100))))  # the last report counts
        expected = {"greeter": {"1.0.0": 80, "1.1.0": 120}, "adder": {"2.0.0": 100}}
        assert every(hub) == expected
        clock[0] += 3600.0  # every node silent for an hour: Unhealthy, and their reports still count
        assert {view.status for view in hub.view()} == {"Unhealthy"}
        walked: dict[str, dict[str, int]] = {}
        for view in hub.view():
            for module, version, _, weight in view.running:
                walked.setdefault(module, {}).setdefault(version, 0)
                walked[module][version] += weight
        assert every(hub) == walked == expected

        assert await hub.delete("n2")  # a node gone: what it ran goes with it, a version nobody runs too
        await hub.heartbeat("n1", Heartbeat(running=running(("greeter", "1.1.0", 0))))
        assert every(hub) == {"greeter": {"1.1.0": 100}}
        await hub.heartbeat("n0", Heartbeat())
        assert every(hub) == {"greeter": {"1.1.0": 0}}  # reported at weight 0: listed, at 0
    finally:
        store.close()
