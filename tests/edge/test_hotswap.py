"""A real node process under load from another process while its table is swapped 10 times."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge import wasm

ROOT = Path(__file__).resolve().parents[2]
WAT = '(module (func (export "version") (result i32) i32.const {n}))'


@dataclass
class NodeProcess:
    proc: subprocess.Popen[str]
    url: str
    folder: Path

    def call(self) -> tuple[str, Any]:
        request = urllib.request.Request(
            self.url + "/api/v1/wasm/execute",
            data=json.dumps({"module": "greeter", "function": "version", "args": []}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            body = json.loads(resp.read())
            assert resp.headers["X-Hotswap-Version"] == body["version"]
            return body["version"], body["result"]

    def apply(self, table: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.url + "/api/v1/wasm/admin/table",
            data=json.dumps(table).encode(),
            headers={"Content-Type": "application/json"},
            method="PUT",
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            report: dict[str, Any] = json.loads(resp.read())
            return report


def wait_for(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    folder = tmp_path / "modules"
    folder.mkdir()
    for n in (1, 2):
        (folder / f"greeter@{n}.0.0.wat").write_text(WAT.format(n=n))
    (folder / "env.wat").write_text((ROOT / "tests" / "edge" / "modules" / "env.wat").read_text())
    proc = subprocess.Popen(
        [sys.executable, "-m", "hotswap", "edge", "--standalone", str(folder), "--port", "0",
         "--cache-dir", str(tmp_path / "cache"), "--log-level", "WARNING", "--env", "GREETING=hi"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the node prints where it listens once it serves
    assert "serving 3 module version(s)" in line, line
    yield NodeProcess(proc, line.strip().rsplit(" ", 1)[1], folder)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    proc.stdout.close()


def digest(n: int) -> str:
    return wasm.sha256_digest(wasm.compile_wat(WAT.format(n=n)))


def entry(n: int, weight: int) -> dict[str, Any]:
    return {"module": "greeter", "version": f"{n}.0.0", "digest": digest(n), "weight": weight}


def test_ten_swaps_under_load_drop_no_request(node: NodeProcess, tmp_path: Path) -> None:
    out = tmp_path / "load"
    out.mkdir()
    load = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "edge" / "loadgen.py"), node.url + "/api/v1/wasm/execute", str(out)]
    )
    progress = out / "progress"

    def served() -> int:
        try:
            return int(progress.read_text())
        except (OSError, ValueError):
            return 0

    try:
        wait_for(lambda: served() >= 100, "load to flow")
        # Alternate between a single version (the other is unloaded while requests run on it)
        # and a split table in which both serve.
        tables = [
            ([entry(1, 100)], "1.0.0"),
            ([entry(2, 100)], "2.0.0"),
            ([entry(1, 50), entry(2, 50)], None),
            ([entry(1, 100), entry(2, 0)], "1.0.0"),
            ([entry(2, 100)], "2.0.0"),
        ] * 2
        for generation, (modules, expected) in enumerate(tables, start=2):
            report = node.apply({"generation": generation, "modules": modules})
            assert report["failed"] == {} and report["generation"] == generation
            if expected is not None:
                version, result = node.call()
                assert version == expected and result == int(expected[0])
            before = served()
            wait_for(lambda before=before: served() >= before + 100, "load between swaps")  # type: ignore[misc]
    finally:
        (out / "stop").touch()
        assert load.wait(timeout=60) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["failures"] == []
    counts: dict[str, int] = result["counts"]
    assert sum(counts.values()) >= 1000
    seen = set()
    for key in counts:
        status, header, version, value = key.split()
        assert status == "200" and header == version and value == version[0]
        seen.add(version)
    assert seen == {"1.0.0", "2.0.0"}


def test_standalone_modules_get_the_env_given_on_the_command_line(node: NodeProcess) -> None:
    request = urllib.request.Request(
        node.url + "/api/v1/wasm/execute",
        data=json.dumps({"module": "env", "function": "_start"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert json.loads(resp.read())["result"] == "GREETING=hi\0"


def test_sighup_rescans_the_folder(node: NodeProcess) -> None:
    assert node.call() == ("2.0.0", 2)
    (node.folder / "greeter@3.0.0.wat").write_text(WAT.format(n=3))
    os.kill(node.proc.pid, signal.SIGHUP)
    wait_for(lambda: node.call() == ("3.0.0", 3), "the new version to serve")


def test_a_node_stops_promptly_while_a_module_spins(tmp_path: Path) -> None:
    folder = tmp_path / "modules"
    folder.mkdir()
    (folder / "limits.wat").write_text((ROOT / "tests" / "edge" / "modules" / "limits.wat").read_text())
    proc = subprocess.Popen(
        [sys.executable, "-m", "hotswap", "edge", "--standalone", str(folder), "--port", "0",
         "--cache-dir", str(tmp_path / "cache"), "--timeout-s", "300", "--log-level", "ERROR"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    url = proc.stdout.readline().strip().rsplit(" ", 1)[1]
    request = urllib.request.Request(
        url + "/api/v1/wasm/execute",
        data=json.dumps({"module": "limits", "function": "spin", "args": []}).encode(),
        headers={"Content-Type": "application/json"},
    )
    statuses: list[int] = []

    def call() -> None:
        try:
            urllib.request.urlopen(request, timeout=120)
        except urllib.error.HTTPError as exc:
            statuses.append(exc.code)
        except OSError:
            statuses.append(0)

    caller = threading.Thread(target=call)
    caller.start()

    def spinning() -> bool:
        with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
            return 'hotswap_inflight_requests{module="limits",version="0.0.0"} 1' in resp.read().decode()

    wait_for(spinning, "the call to spin")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0  # well before the module's 300 s timeout
    proc.stdout.close()
    caller.join(timeout=60)
    assert statuses in ([504], [0])  # answered "timeout", or the connection closed
