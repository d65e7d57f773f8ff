"""CPython from a package registry, rolled out by the control plane from a fleet repository: two nodes
fetch, compile and serve the 26 MB interpreter; calls through the control plane carry argv and stdin,
read a granted read-only directory and an env var, and meet a non-zero exit, a refused connection, the
timeout and the memory limit; a canary moves to a new default argv under load, and a build whose
program exits non-zero is rolled back by the analysis, which counts its exits like traps, with the
program's own words in the message."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.cluster import Cluster, poll, start_cluster, stop_cluster

NODES = [("edge-py-1", "us-east"), ("edge-py-2", "us-east")]
PROGRAM = (
    "import json, os, sys; "
    "print(json.dumps({{'v': {v}, 'sum': sum(json.load(sys.stdin)), 'env': os.environ['STAGE']}}))"
)


def module_yaml(version: str, argv_code: str, data: Path) -> str:
    return f"""\
apiVersion: hotswap.dev/v1
kind: Module
metadata: {{name: py}}
spec:
  version: {version}
  source: {{path: ../wasm/python.wasm}}
  argv: [python, -c, {argv_code!r}]
  limits: {{memoryMB: 64, timeoutSeconds: 3}}
  capabilities:
    env: {{STAGE: canary}}
    filesystem: [{{host: {data}, guest: /data, mode: ro}}]
  placement: {{replicas: all}}
  rollout: canary
"""


FILES = {
    "fleet.yaml": """\
apiVersion: hotswap.dev/v1
kind: Fleet
metadata: {name: programs}
spec:
  environment: dev
  regions: [{name: us-east}]
""",
    "strategies/canary.yaml": """\
apiVersion: hotswap.dev/v1
kind: RolloutStrategy
metadata: {name: canary}
spec:
  type: Canary
  canary: {steps: [50, 100], stepSeconds: 3}
  analysis: {maxErrorRate: 0.05, minRequests: 5, onNoTraffic: pause}
  autoRollback: true
""",
}


class Calls:
    """Execute calls with JSON args to every node, in a loop, counting answers by version and error."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.seen: Counter[str] = Counter()
        self.other: list[str] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        headers = self.cluster.edge_headers("developer")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20), headers=headers) as session:
            while not self._stop.is_set():
                urls = list(self.cluster.node_urls().values())
                await asyncio.gather(*(self._one(session, url) for url in urls for _ in range(2)))

    async def _one(self, session: aiohttp.ClientSession, url: str) -> None:
        body = {"module": "py", "function": "_start", "args": [1, 2, 3]}
        async with session.post(f"{url}/api/v1/wasm/execute", json=body) as response:
            data = await response.json(content_type=None)
        if response.status == 200 and data["result"]["sum"] == 6 and data["exitCode"] == 0:
            self.seen[f"{data['version']}:ok"] += 1
        elif response.status == 500 and data.get("error") == "exit":
            self.seen[f"{data['version']}:exit"] += 1
        else:
            self.other.append(f"{response.status} {data}")


async def through_control_plane(cluster: Cluster, **body: Any) -> tuple[int, Any]:
    url = f"{cluster.url}/api/v1/wasm/execute"
    async with (
        aiohttp.ClientSession(headers=cluster.headers("developer")) as session,
        session.post(url, json={"module": "py", **body}) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_python_rolled_out_from_git_and_a_build_that_exits_rolled_back(tmp_path: Path, python_wasm: Path) -> None:
    data = tmp_path / "grants" / "data"
    data.mkdir(parents=True)
    (data / "motd.txt").write_text("served from a read-only directory\n")
    fleet = tmp_path / "repo" / "fleet"
    (fleet / "wasm").mkdir(parents=True)
    shutil.copy(python_wasm, fleet / "wasm" / "python.wasm")
    files = {**FILES, "modules/py.yaml": module_yaml("1.0.0", PROGRAM.format(v=1), data)}
    cluster = await start_cluster(tmp_path, [], files=files)
    try:
        for node_id, region in NODES:
            cluster.start_node(node_id, region, flags=["--allow-dir", str(tmp_path / "grants")])
        await cluster.wait_ready(len(NODES))
        await cluster.wait_all_serving("py", "1.0.0", [n for n, _ in NODES])

        # the control plane's execute passes argv and stdin through to a node
        code = "import sys; print(open('/data/motd.txt').read().strip(), sys.stdin.read())"
        status, answer = await through_control_plane(cluster, function="_start", argv=["python", "-c", code], stdin="!")
        assert status == 200, answer
        assert (answer["result"], answer["exitCode"]) == ("served from a read-only directory !\n", 0)
        status, answer = await through_control_plane(cluster, function="_start", argv=["python", "-c", "exit(9)"])
        assert (status, answer["error"], answer["exitCode"]) == (500, "exit", 9)
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            listener.setblocking(False)
            code = f"import socket; socket.socket().connect(('127.0.0.1', {listener.getsockname()[1]}))"
            status, answer = await through_control_plane(cluster, function="_start", argv=["python", "-c", code])
            assert (status, answer["error"]) == (500, "exit") and "OSError" in answer["stderr"], answer
            with pytest.raises(BlockingIOError):
                listener.accept()  # no connection reached the host
        spin = ["python", "-c", "while True: pass"]
        status, answer = await through_control_plane(cluster, function="_start", argv=spin)
        assert (status, answer["error"]) == (504, "timeout"), answer
        hog = ["python", "-c", "b = []\nwhile True: b.append(bytearray(10**6))"]
        status, answer = await through_control_plane(cluster, function="_start", argv=hog)
        assert (status, answer["error"]) == (507, "memory"), answer

        calls = Calls(cluster)
        load = asyncio.create_task(calls.run())
        try:
            cluster.repo.edit("modules/py.yaml", "'v': 1", "'v': 2")
            cluster.repo.edit("modules/py.yaml", "version: 1.0.0", "version: 1.1.0")
            cluster.repo.commit("py 1.1.0: a new default argv")
            record = await cluster.wait_ended("py", "1.1.0")
            assert record.phase.value == "Promoted", record.message
            await cluster.wait_all_serving("py", "1.1.0", [n for n, _ in NODES])

            broken = "import sys; sys.exit('broken build: no config')"
            cluster.repo.edit("modules/py.yaml", repr(PROGRAM.format(v=2)), repr(broken))
            cluster.repo.edit("modules/py.yaml", "version: 1.1.0", "version: 1.2.0")
            cluster.repo.commit("py 1.2.0")
            record = await cluster.wait_ended("py", "1.2.0")
            assert record.phase.value == "RolledBack", record.message
            assert "last error: exit: exited with status 1: broken build: no config" in record.message
            await cluster.wait_all_serving("py", "1.1.0", [n for n, _ in NODES])

            served = calls.seen["1.1.0:ok"]
            await poll(lambda: calls.seen["1.1.0:ok"] > served + 4, "calls answered by 1.1.0 after the rollback")
        finally:
            calls._stop.set()
            await load
        assert calls.seen["1.2.0:exit"] > 0, calls.seen
        assert calls.seen["1.2.0:ok"] == 0 and not calls.other, (calls.seen, calls.other[:3])
    finally:
        await stop_cluster(cluster)
