"""A component rolls out with a canary like any module: real control plane, edge processes, load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.components.conftest import ROOT, WASM_TOOLS
from tests.e2e.cluster import Load, start_cluster, stop_cluster

REGIONS = [("edge-us-east-1", "us-east"), ("edge-eu-central-1", "eu-central")]


async def test_a_component_canary_promotes_under_load(tmp_path: Path) -> None:
    cluster = await start_cluster(tmp_path, REGIONS)
    try:
        await cluster.wait_ready(len(REGIONS))
        await cluster.wait_all_serving("hello", "1.0.0", ["edge-us-east-1"])
        repo = cluster.repo
        wat = repo.derive_wat("hello-1.0.0.wat", "hello-1.1.0.wat", **{"hello, ": "howdy, "})
        out = repo.fleet / "wasm" / "hello-1.1.0.wasm"
        script = ROOT / "scripts" / "build-component.sh"
        env = {"WASM_TOOLS": WASM_TOOLS, "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
        args = [str(repo.fleet / "wasm" / wat), str(repo.fleet / "interfaces" / "hello.wit"), "hello", str(out)]
        subprocess.run(["bash", str(script), *args], check=True, env=env, capture_output=True)

        def us_east() -> list[str]:  # hello is placed in us-east only
            return [url for node, url in cluster.node_urls().items() if node == "edge-us-east-1"]

        async with Load(cluster, "hello", "greet", lambda i: ["x" * (i % 7)], us_east) as load:
            repo.set_module("hello", "1.1.0", "hello-1.1.0.wasm")
            record = await cluster.wait_ended("hello", "1.1.0")
            assert record.phase.value == "Promoted", record
            await cluster.wait_all_serving("hello", "1.1.0", ["edge-us-east-1"])
        assert load.result.failures == []
        assert load.result.module_errors == {}
        assert load.result.versions["1.0.0"] > 0 and load.result.versions["1.1.0"] > 0
    finally:
        await stop_cluster(cluster)
