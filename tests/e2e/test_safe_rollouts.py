"""End to end: rollouts on strategies written without an analysis finish with no traffic at all, and a
faulty canary under light load is rolled back after a handful of client errors.

Real processes: the control plane in this event loop, four edge node processes on 127.0.0.1, a fleet
Git repository. The strategies are written as a new user writes them from the README: every field
left out but the times (so a test takes seconds, not the default minutes).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.api.conftest import call
from tests.e2e.cluster import FOUR_NODES, GREETER_NODES, Cluster, Load, ready_cluster

REGIONS = FOUR_NODES
ALL_NODES = [n for n, _ in REGIONS]

PLAIN = {  # file -> (type, the one line of parameters besides the type)
    "strategies/blue-green.yaml": ("BlueGreen", "blueGreen: {previewSeconds: 0, keepPreviousSeconds: 0}"),
    "strategies/rolling.yaml": ("Rolling", "rolling: {batchSeconds: 0}"),
    "strategies/canary.yaml": ("Canary", ""),  # every field left out: 10, 25, 50, 100 % for 30 s each
}
STUCK = """\
apiVersion: hotswap.dev/v1
kind: RolloutStrategy
metadata: {name: waits-for-preview-traffic}
spec:
  type: BlueGreen
  analysis: {minRequests: 10}
"""


def write_plain_strategies(cluster: Cluster) -> None:
    fleet = cluster.repo.fleet
    for rel, (kind, params) in PLAIN.items():
        head = f"apiVersion: hotswap.dev/v1\nkind: RolloutStrategy\nmetadata: {{name: {Path(rel).stem}}}\n"
        (fleet / rel).write_text(head + f"spec:\n  type: {kind}\n" + (f"  {params}\n" if params else ""))
    (fleet / "strategies/waits.yaml").write_text(STUCK)
    cluster.repo.commit("strategies as the README writes them")


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with ready_cluster(tmp_path, REGIONS) as cluster:
        await cluster.wait_all_serving("greeter", "1.1.0", GREETER_NODES)
        write_plain_strategies(cluster)
        yield cluster


async def test_plain_blue_green_and_rolling_finish_without_any_traffic(cluster: Cluster) -> None:
    repo = cluster.repo
    repo.set_module("calc", "1.1.0", "calc-1.1.0.wat")
    repo.set_module("wc", "1.1.0", "wc-1.1.0.wat")
    calc = await cluster.wait_phase("calc", "1.1.0", ["Promoted", "RolledBack", "Aborted"])
    wc = await cluster.wait_phase("wc", "1.1.0", ["Promoted", "RolledBack", "Aborted"])
    assert (calc.phase.value, calc.strategy) == ("Promoted", "blue-green"), calc
    assert (wc.phase.value, wc.strategy) == ("Promoted", "rolling"), wc
    assert [h.outcome for h in calc.history] == ["Passed", "Passed"]  # preview, switch
    assert all(h.requests == 0 for h in (*calc.history, *wc.history))  # nobody sent a request
    # Promoted means every node reports the new version alone: no waiting after it.
    assert all(cluster.serving("calc")[n] == {("1.1.0", 100)} for n in ALL_NODES)
    holders = {n: v for n, v in cluster.serving("wc").items() if v}  # one replica a region
    assert len(holders) == 2 and all(v == {("1.1.0", 100)} for v in holders.values()), holders
    # The strategy that cannot progress is named in the status, at its file and line.
    async with (
        aiohttp.ClientSession(headers=cluster.headers("viewer")) as session,
        session.get(f"{cluster.url}/api/v1/wasm/status") as response,
    ):
        status = await response.json()
    assert any(
        w.startswith("strategies/waits.yaml:6: spec.analysis.minRequests: warning: this strategy cannot progress")
        for w in status["warnings"]
    ), status["warnings"]


class PacedLoad(Load):
    """The same checked requests as `Load`, one at a time at `rate` a second, round the target nodes."""

    rate = 2.0

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout, headers=self.cluster.edge_headers("developer")) as session:
            for i in itertools.count():
                urls = list(self.targets())
                if urls:
                    await self._one(session, urls[i % len(urls)], i)
                try:
                    await asyncio.wait_for(self._stop.wait(), 1 / self.rate)  # the load's pace
                    return
                except TimeoutError:
                    pass


def greeting(i: int) -> dict[str, str]:
    return {"name": "x" * (i % 7)}  # the faulty build traps on odd lengths: 3 requests in 7


async def test_faulty_canary_under_light_load_rolls_back_after_a_few_client_errors(cluster: Cluster) -> None:
    urls = cluster.node_urls()
    load = PacedLoad(cluster, "greeter", "greet", greeting, targets=lambda: [urls[n] for n in GREETER_NODES])
    async with load:
        cluster.repo.set_module("greeter", "1.2.0", "greeter-1.2.0-faulty.wat")
        # Paused NoTraffic is no end here: a step that waits for traffic is still judged on every pass
        # (a slow machine may bring fewer than a step's worth of requests in its 30 s).
        record = await cluster.wait_phase("greeter", "1.2.0", ["RolledBack", "Promoted", "Aborted"])
        await cluster.wait_all_serving("greeter", "1.1.0", GREETER_NODES)
    assert (record.phase.value, record.reason) == ("RolledBack", "ErrorRateTooHigh"), record
    assert record.history[-1].requests < 50  # judged long before the 50 requests of minRequests
    assert load.result.failures == []
    errors = load.result.module_errors["1.2.0:trap"]
    assert 1 <= errors <= 10, load.result
    assert set(load.result.module_errors) == {"1.2.0:trap"}
    # why, in the module's own words, in the record, the event and the deployments API
    assert "last error: trap: " in record.message and "unreachable" in record.message, record.message
    events = [e.message for e in cluster.plane.controller.events if e.reason == "RolledBack"]
    assert any("unreachable" in m for m in events), events
    answer = await call(cluster.url, "GET", f"/api/v1/wasm/deployments/{record.id}", cluster.token("viewer"))
    assert "unreachable" in answer.body["message"], answer.body
