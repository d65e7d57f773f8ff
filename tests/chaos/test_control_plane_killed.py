"""Chaos: the control plane process SIGKILLed in the middle of a canary, and started again.

`hotswap serve` runs as its own process on a fixed port with a data dir; three edge nodes point at
it and serve greeter under load. At the canary's second step the control plane is killed (no
shutdown code runs) and a new one starts on the same port and data. It reads the rollout back from
the store and resumes at the recorded step: the store's step history and the record's history
each show steps 0, 1, 2 passed exactly once, in order. The nodes serve throughout.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tests.chaos.remote import RemotePlane
from tests.e2e.cluster import FleetRepo, Load, poll

REGIONS = [("edge-us-east-1", "us-east"), ("edge-us-east-2", "us-east"), ("edge-eu-central-1", "eu-central")]
NODES = [n for n, _ in REGIONS]
DEPLOYMENT = "/api/v1/wasm/deployments/greeter-v1.3.0"


def serving(nodes: list[dict[str, Any]], module: str) -> dict[str, set[tuple[str, int]]]:
    return {n["id"]: {(m["version"], m["weight"]) for m in n["modules"] if m["module"] == module} for n in nodes}


async def test_a_killed_control_plane_resumes_the_canary_at_its_step(tmp_path: Path) -> None:
    repo = FleetRepo(tmp_path / "repo")
    repo.edit("strategies/canary.yaml", "stepSeconds: 0.6", "stepSeconds: 1.5")
    repo.commit("slower canary")
    (tmp_path / "data").mkdir()
    plane = RemotePlane(repo, tmp_path / "data")
    try:
        await plane.start()
        for node_id, region in REGIONS:
            plane.start_node(node_id, region)

        async def greeter_everywhere() -> bool:
            found = serving(await plane.nodes_json(), "greeter")
            return len(plane.urls) == len(NODES) and all(found.get(n) == {("1.1.0", 100)} for n in NODES)

        await poll(greeter_everywhere, "greeter 1.1.0 on every node")
        source = repo.derive_wat(
            "greeter-1.1.0.wat", "greeter-1.3.0.wat", **{"1.1.0": "1.3.0", "hello, friend": "hello, fellow"}
        )
        urls = list(plane.node_urls().values())
        async with Load(plane, "greeter", "greet", lambda i: {"name": "x" * (i % 5)}, lambda: urls) as load:
            repo.set_module("greeter", "1.3.0", source)

            async def second_step() -> bool:
                body = await plane.get(DEPLOYMENT)
                return body is not None and body["step"] >= 1

            await poll(second_step, "the canary's second step")
            before = await plane.get(DEPLOYMENT)
            plane.kill()
            await plane.start()
            resumed = await plane.get(DEPLOYMENT)
            assert resumed["id"] == before["id"]  # the same rollout, read back from the store
            assert resumed["step"] >= before["step"]  # not started over

            async def finished() -> bool:
                body = await plane.get(DEPLOYMENT)
                return body["phase"] in ("Promoted", "RolledBack", "Paused")

            await poll(finished, "the canary to finish")
            done = await plane.get(DEPLOYMENT)
            assert done["phase"] == "Promoted", (done["reason"], done["message"], done["history"], done["steps"])

            async def converged() -> bool:
                found = serving(await plane.nodes_json(), "greeter")
                return all(found.get(n) == {("1.3.0", 100)} for n in NODES)

            await poll(converged, "greeter 1.3.0 on every node")
        history = [(h["step"], h["outcome"]) for h in done["history"]]
        assert history == [(0, "Passed"), (1, "Passed"), (2, "Passed")], done["history"]
        stored = Counter((s["step"], s["event"]) for s in done["steps"])
        assert stored == Counter({(0, "Passed"): 1, (1, "Passed"): 1, (2, "Passed"): 1}), done["steps"]
        assert load.result.failures == []  # the nodes never noticed
        assert load.result.module_errors == {}
        assert load.result.versions["1.3.0"] > 0
    finally:
        plane.stop()
