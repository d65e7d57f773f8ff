"""`ControlPlane.install_notifier` wires a notifier into a running control plane: controller events, the Git source's
stalls, node health and scaling reach a real receiver, and the notifier stops with the plane."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from edge.nodeapi import Heartbeat, Registration
from reconciler.notify import RetryPolicy, Settings
from reconciler.server import ControlPlane, ServeOptions
from reconciler.spec.alerts import Alert
from tests.e2e.cluster import FleetRepo
from tests.notify.conftest import HttpReceiver, until


async def test_install_on_a_running_control_plane(tmp_path: Path, http_receiver: HttpReceiver) -> None:
    repo = FleetRepo(tmp_path / "repo")
    plane = ControlPlane(
        ServeOptions(
            repo=str(repo.root), path="fleet", data_dir=tmp_path / "data", port=0, interval=60, heartbeat_seconds=0.2
        )
    )
    await plane.start()
    alert = Alert.model_validate({"metadata": {"name": "ops"}, "spec": {"webhook": {"url": http_receiver.url()}}})
    notifier = plane.install_notifier(
        [alert], Settings(retry=RetryPolicy(attempts=1), tick_seconds=0.05, node_grace_seconds=0)
    )
    try:
        assert notifier.settings.base_url == plane.url
        await until(lambda: "rollout.promoted" in http_receiver.types(), "the first rollouts, from the controller", 30)
        promoted = next(b for b in http_receiver.bodies() if b["type"] == "rollout.promoted")
        assert promoted["revision"] == plane.source.latest.sha if plane.source.latest else False
        assert promoted["link"].startswith(plane.url + "/api/v1/wasm/deployments/")

        (repo.fleet / "modules" / "greeter.yaml").write_text("kind: Module\nmetadata: {name: greeter}\nspec: [\n")
        bad = repo.commit("broken yaml")
        plane.source.trigger()
        await until(lambda: "source.stalled" in http_receiver.types(), "the stalled source", 30)
        stalled = next(b for b in http_receiver.bodies() if b["type"] == "source.stalled")
        assert stalled["reason"] == "InvalidFleet" and stalled["revision"] == bad
        assert "modules/greeter.yaml" in stalled["message"]

        await plane.hub.register(Registration(id="edge-9", region="us-east", hostname="h", url="http://127.0.0.1:9"))
        await until(lambda: "node.unhealthy" in http_receiver.types(), "the silent node to be reported", 30)
        deadline = time.monotonic() + 30
        while "node.recovered" not in http_receiver.types():  # it speaks again (and keeps speaking)
            assert time.monotonic() < deadline, "timed out waiting for the node's recovery"
            await plane.hub.heartbeat("edge-9", Heartbeat(cpu_percent=95.0))
            await asyncio.sleep(0.05)
        assert notifier.status()["receivers"][0]["state"] == "Ready"
    finally:
        await plane.stop()
    assert not notifier.running
