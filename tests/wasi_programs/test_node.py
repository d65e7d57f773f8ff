"""CPython and QuickJS behind a standalone node process, called over HTTP the way a client calls them:
argv, stdin (text and base64), env, a read-only directory, exit codes, no network, the timeout and
the memory limit, set per version by a table; and a node that goes on serving while it compiles."""

from __future__ import annotations

import base64
import shutil
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.wasminfo import sha256_digest
from tests.edge.standalone import StandaloneNode, start_standalone

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def folder(tmp_path: Path, python_wasm: Path, quickjs_wasm: Path) -> Path:
    modules = tmp_path / "modules"
    modules.mkdir()
    shutil.copy(python_wasm, modules / "python-1.0.0.wasm")
    shutil.copy(quickjs_wasm, modules / "qjs-1.0.0.wasm")
    shutil.copy(ROOT / "fleet-example" / "wasm" / "calc-1.0.0.wat", modules / "calc-1.0.0.wat")
    data = tmp_path / "grants" / "data"
    data.mkdir(parents=True)
    (data / "words.txt").write_text("alpha beta gamma\n")
    return modules


@pytest.fixture
def node(folder: Path, program_cache: Path, tmp_path: Path) -> Iterator[StandaloneNode]:
    started = start_standalone(folder, program_cache, "--allow-dir", str(tmp_path / "grants"), "--timeout-s", "5")
    try:
        yield started
    finally:
        started.stop()


def entry(module: str, digest: str, **extra: Any) -> dict[str, Any]:
    return {"module": module, "version": "1.0.0", "digest": digest, "weight": 100, **extra}


def call(node: StandaloneNode, module: str, **body: Any) -> tuple[int, Any]:
    return node.request("POST", "/api/v1/wasm/execute", {"module": module, "function": "_start", **body})


def test_a_python_program_called_over_http(node: StandaloneNode, folder: Path, tmp_path: Path) -> None:
    python = sha256_digest((folder / "python-1.0.0.wasm").read_bytes())
    status, _ = node.apply(
        [
            entry(
                "python",
                python,
                limits={"memoryMB": 64, "timeoutSeconds": 2},
                capabilities={
                    "env": {"LANG_NAME": "python"},
                    "filesystem": [{"host": str(tmp_path / "grants" / "data"), "guest": "/data", "mode": "ro"}],
                },
                argv=["python", "-c", "import os; print(os.environ['LANG_NAME'])"],
            )
        ],
        generation=1,
    )
    assert status == 200

    status, answer = call(node, "python")  # the table's default argv
    assert status == 200, answer
    assert (answer["result"], answer["exitCode"], answer["stderr"]) == ("python\n", 0, "")

    status, answer = call(
        node, "python", argv=["python", "-c", "import sys; print(sys.stdin.read()[::-1])"], stdin="olleh"
    )
    assert (status, answer["result"]) == (200, "hello\n")

    raw = base64.b64encode(bytes(range(256))).decode()
    code = "import sys, hashlib; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())"
    status, answer = call(node, "python", argv=["python", "-c", code], stdinBase64=raw)
    assert answer["result"] == sha256_digest(bytes(range(256))).removeprefix("sha256:") + "\n"

    status, answer = call(node, "python", argv=["python", "-c", "print(open('/data/words.txt').read().split())"])
    assert answer["result"] == "['alpha', 'beta', 'gamma']\n"

    code = "import json; print(json.dumps({'n': 6 * 7}))"
    status, answer = call(node, "python", argv=["python", "-c", code])
    assert answer["result"] == {"n": 42}  # stdout that parses as JSON is JSON

    status, answer = call(node, "python", argv=["python", "-c", "import sys; sys.exit('no input given')"])
    assert status == 500
    assert answer["error"] == "exit" and answer["exitCode"] == 1 and answer["stderr"] == "no input given"
    assert answer["module"] == "python" and answer["version"] == "1.0.0"

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        code = f"import socket; socket.socket().connect(('127.0.0.1', {listener.getsockname()[1]}))"
        status, answer = call(node, "python", argv=["python", "-c", code])
        assert (status, answer["error"]) == (500, "exit")
        assert "OSError" in answer["stderr"]
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing reached the host

    status, answer = call(node, "python", argv=["python", "-c", "while True: pass"])
    assert (status, answer["error"]) == (504, "timeout")

    status, answer = call(node, "python", argv=["python", "-c", "b = []\nwhile True: b.append(bytearray(10**6))"])
    assert (status, answer["error"]) == (507, "memory")

    status, answer = call(node, "python", argv=["python", "-c", "print(1)"], stdin="x", args=[1])
    assert (status, answer["error"]) == (400, "bad_request")
    status, answer = call(node, "python", stdin="x", stdinBase64="eA==")
    assert status == 400 and "stdinBase64" in answer["message"]

    status, modules = node.request("GET", "/api/v1/wasm/modules", None)
    python_row = next(m for m in modules["modules"] if m["module"] == "python")
    assert python_row is not None


def test_argv_for_an_export_that_is_not_a_command_is_a_400(node: StandaloneNode) -> None:
    status, answer = node.request(
        "POST", "/api/v1/wasm/execute", {"module": "calc", "function": "add", "args": [1, 2], "argv": ["x"]}
    )
    assert status == 400
    assert "argv: only a command export (_start) takes them; add is a numeric export" in answer["message"]


def test_quickjs_over_http_with_the_folder_defaults(node: StandaloneNode) -> None:
    script = "console.log(JSON.stringify({upper: std.in.readAsString().toUpperCase()}))"
    status, answer = call(node, "qjs", argv=["qjs", "--std", "-e", script], stdin="edge")
    assert (status, answer["result"]) == (200, {"upper": "EDGE"})
    status, answer = call(node, "qjs", argv=["qjs", "-e", "throw new Error('boom')"])
    assert (status, answer["error"], answer["exitCode"]) == (500, "exit", 1)
    assert "boom" in answer["stderr"]


def test_the_node_serves_other_modules_while_a_big_one_compiles(
    tmp_path: Path, python_wasm: Path, quickjs_wasm: Path
) -> None:
    """A fresh cache: the 26 MB interpreter compiles (seconds) off the event loop while QuickJS answers."""
    folder = tmp_path / "only-qjs"
    folder.mkdir()
    shutil.copy(quickjs_wasm, folder / "qjs-1.0.0.wasm")
    node = start_standalone(folder, tmp_path / "fresh-cache")
    try:
        assert call(node, "qjs", argv=["qjs", "-e", "console.log(1)"])[0] == 200
        shutil.copy(python_wasm, folder / "python-1.0.0.wasm")
        node.proc.send_signal(signal.SIGHUP)  # rescan the folder: python is new, and compiles
        answered_before = 0
        while True:
            status, _ = call(node, "qjs", argv=["qjs", "-e", "console.log(2)"])
            assert status == 200
            _, listed = node.request("GET", "/api/v1/wasm/modules", None)
            if any(m["module"] == "python" for m in listed["modules"]):
                break
            answered_before += 1
        assert answered_before >= 3, f"only {answered_before} calls were answered while python compiled"
        status, answer = call(node, "python", argv=["python", "-c", "print(7)"])
        assert (status, answer["result"]) == (200, 7)
    finally:
        node.stop()
