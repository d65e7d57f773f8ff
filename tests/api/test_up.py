"""`hotswap up` with security on: it writes an admin token to <data-dir>/admin.token and prints it,
each node it starts joins with its own node token, the admin token works on the API (nodes refuse
it), and an edge token (<data-dir>/edge.token) works on the nodes' execute endpoint."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from hotswap.cli import main
from reconciler.commands import ports
from tests.api.conftest import call
from tests.e2e.cluster import EXAMPLE, FleetRepo
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
        while "hotswap token --subject NAME" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        token = (data / "admin.token").read_text().strip()
        assert (data / "admin.token").stat().st_mode & 0o777 == 0o600
        # The exact trust file line that makes the control plane's API commits verify, with its key.
        public = (data / "auth" / "git-signing-key.pub").read_text().strip()
        line = f'  - {{name: hotswap-control-plane, actsFor: [admin, developer, operator], keys: ["{public}"]}}'
        assert line in log.read_text().splitlines()
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


# -- ports, nodes and a fleet that cannot come up whole ---------------------------------------------


def _run_up(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    repo = FleetRepo(tmp_path / "repo")
    return subprocess.run(
        [sys.executable, "-m", "hotswap", "up", "--repo", str(repo.root), "--path", "fleet",
         "--data-dir", str(tmp_path / "data"), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("flag", ["--port", "--node-port"])
def test_up_refuses_a_taken_port_it_was_given_before_starting_anything(tmp_path: Path, flag: str) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = _run_up(tmp_path, "--nodes", "1", flag, str(port))
    assert done.returncode == 1, done
    assert f"port {port} is already in use (held by pid {os.getpid()} (" in done.stderr, done.stderr
    assert f"give another {flag}" in done.stderr
    assert "hotswap is up" not in done.stdout
    assert not (tmp_path / "data").exists()  # nothing was started, nothing written


def test_up_exits_non_zero_naming_a_node_that_did_not_join_and_never_lists_it(tmp_path: Path) -> None:
    done = _run_up(tmp_path, "--nodes", "1", "--node-workers", "0")  # the node refuses to start
    assert done.returncode == 1, done
    assert "1 of 1 edge nodes did not join" in done.stderr, done.stderr
    assert "edge node edge-us-east-01 (us-east, port " in done.stderr and "exited with 2" in done.stderr
    assert "--workers 0: at least 1" in done.stderr  # the end of the node's own log
    assert "hotswap is up" not in done.stdout and "edge-us-east-01" not in done.stdout
    assert not (tmp_path / "data" / "control.url").exists()


def test_ports_by_default_are_free_ones_and_the_default_control_port_gives_way() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        holder = ports.holder(taken)
        assert holder is not None and holder.startswith(f"pid {os.getpid()} (") and "python" in holder
        port, note = ports.pick("127.0.0.1", None, taken, set(), "control plane", "--port")
        assert port != taken and note is not None
        assert note.startswith(f"port {taken} is in use (held by pid {os.getpid()} (")
        assert note.endswith(f"the control plane listens on {port} instead")
        port, note = ports.pick("127.0.0.1", None, None, {taken}, "edge node", "--node-port")
        assert port != taken and note is None and ports.is_free("127.0.0.1", port)
        with pytest.raises(ports.PortTakenError, match=f"edge node port {port} is already in use \\(by another"):
            ports.pick("127.0.0.1", port, None, {port}, "edge node", "--node-port")


def test_up_starts_in_each_region_as_many_nodes_as_the_largest_replicas_there() -> None:
    from reconciler.commands.up import load, node_regions

    fleet = load(EXAMPLE)  # greeter asks for 2 replicas in every region
    assert Counter(node_regions(fleet, None)) == {"us-east": 2, "eu-central": 2, "apac-east": 2}
    assert node_regions(fleet, None)[:3] == ["us-east", "eu-central", "apac-east"]  # one per region first
    assert node_regions(fleet, 4) == ["us-east", "eu-central", "apac-east", "us-east"]  # --nodes N: spread N
    assert node_regions(fleet, 0) == []


def test_token_files_are_private_from_the_first_byte_even_over_an_old_file(tmp_path: Path) -> None:
    from reconciler.commands.up import write_secret

    old = tmp_path / "admin.token"
    old.write_text("an earlier run's token\n")
    old.chmod(0o644)
    write_secret(old, "new")
    assert old.read_text() == "new\n" and old.stat().st_mode & 0o777 == 0o600
    fresh = tmp_path / "edge.token"
    write_secret(fresh, "edge")
    assert fresh.stat().st_mode & 0o777 == 0o600
