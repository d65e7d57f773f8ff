"""`hotswap up` with security on: it writes an admin token to <data-dir>/admin.token and prints it,
each node it starts joins with its own node token, the admin token works on the API (nodes refuse
it), and an edge token (<data-dir>/edge.token) works on the nodes' execute endpoint."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hotswap.cli import main
from tests.api.conftest import call
from tests.e2e.cluster import FleetRepo
from tests.git.gitutil import free_port


async def test_up_writes_an_admin_token_and_nodes_join_with_node_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = FleetRepo(tmp_path / "repo")
    data = tmp_path / "data"
    port, node_port = free_port(), free_port()
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "hotswap", "up", "--repo", str(repo.root), "--path", "fleet", "--nodes", "1",
             "--port", str(port), "--node-port", str(node_port), "--data-dir", str(data), "--heartbeat-seconds", "0.3"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "API commits are signed with" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        token = (data / "admin.token").read_text().strip()
        assert (data / "admin.token").stat().st_mode & 0o777 == 0o600
        assert token in log.read_text()
        control = f"http://127.0.0.1:{port}"
        assert (await call(control, "GET", "/api/v1/wasm/nodes")).status == 401
        nodes = await call(control, "GET", "/api/v1/wasm/nodes", token)
        assert [n["status"] for n in nodes.body["nodes"]] == ["Healthy"]
        node = f"http://127.0.0.1:{node_port}"
        body = {"module": "calc", "function": "add", "args": [20, 22]}
        edge = (data / "edge.token").read_text().strip()  # what the banner's node curl uses
        assert (data / "edge.token").stat().st_mode & 0o777 == 0o600 and "edge.token" in log.read_text()
        while True:
            answer = await call(node, "POST", "/api/v1/wasm/execute", edge, json=body)
            if answer.status == 200:
                break
            assert answer.status == 404 and time.monotonic() < deadline, answer.body  # calc not placed yet
            await asyncio.sleep(0.1)
        assert answer.body["result"] == 42
        assert (await call(node, "POST", "/api/v1/wasm/execute", json=body)).status == 401
        assert (await call(node, "POST", "/api/v1/wasm/execute", token, json=body)).status == 401  # an API token
        # Client verbs next to `hotswap up` find its admin token without HOTSWAP_TOKEN.
        monkeypatch.delenv("HOTSWAP_TOKEN", raising=False)
        monkeypatch.setenv("HOTSWAP_DATA_DIR", str(data))
        assert await asyncio.to_thread(main, ["status", "--json", "--control", control]) == 0
        assert '"nodes"' in capsys.readouterr().out
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
