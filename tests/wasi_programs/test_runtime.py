"""CPython and QuickJS, as their toolchains built them, in the edge runtime's sandbox: argv, raw
stdin, env, a read-only preopened directory, exit codes, no network, the timeout and the memory limit."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from edge import wasm
from edge.coremodule import LoadedModule
from edge.errors import BadRequestError, ExitError, MemoryLimitError, ModuleTimeoutError
from edge.loaded import CallResult
from edge.runtime import MIB, DirGrant, Runtime, Sandbox


def run(loaded: LoadedModule, *argv: str, stdin: bytes | None = None, args: Any = None) -> CallResult:
    call = loaded.prepare("_start", args, argv=argv or None, stdin=stdin)
    return loaded.invoke(call)


@pytest.fixture
def python(runtime: Runtime, python_wasm: Path, tmp_path: Path) -> LoadedModule:
    data = tmp_path / "data"
    data.mkdir()
    (data / "greeting.txt").write_text("hello from a read-only directory\n")
    sandbox = Sandbox(
        memory_bytes=64 * MIB,
        timeout_seconds=2,
        env=(("GREETING", "hi"),),
        dirs=(DirGrant(data, "/data"),),
        argv=("python", "-c", "print('default argv')"),
    )
    return runtime.load(python_wasm.read_bytes(), sandbox)


def test_the_interpreters_load_though_they_import_the_socket_functions(python_wasm: Path, quickjs_wasm: Path) -> None:
    info = wasm.describe(python_wasm.read_bytes())
    names = {i.name for i in info.imports}
    assert {"sock_accept", "sock_recv", "sock_send", "sock_shutdown"} <= names
    assert info.problems == ()
    assert info.size > 20 * MIB
    assert info.export("_start") is not None and info.functions()["_start"].convention == "command"
    assert wasm.describe(quickjs_wasm.read_bytes()).problems == ()


def test_argv_stdout_and_the_default_argv(python: LoadedModule) -> None:
    assert run(python, "python", "-c", "print(6*7)").value == 42  # stdout parsed as JSON when it parses
    assert run(python).value == "default argv\n"  # not JSON: the text
    answer = run(python, "python", "-c", "import sys; print(sys.argv[1:])", "a b", "c")
    assert answer.value == "['a b', 'c']\n"
    assert (answer.exit_code, answer.stderr) == (0, "")


def test_raw_stdin_text_and_bytes(python: LoadedModule) -> None:
    upper = run(python, "python", "-c", "import sys; print(sys.stdin.read().upper(), end='')", stdin=b"abc\ndef")
    assert upper.value == "ABC\nDEF"
    size = run(python, "python", "-c", "import sys; print(len(sys.stdin.buffer.read()))", stdin=bytes(range(256)) * 4)
    assert size.value == 1024


def test_args_still_arrive_as_json_on_stdin(python: LoadedModule) -> None:
    code = "import json, sys; print(json.dumps(sum(json.load(sys.stdin))))"
    call = python.prepare("_start", [1, 2, 3], argv=None)
    assert call.payload == b"[1,2,3]"
    python_with_code = python.prepare("_start", [4, 5], argv=("python", "-c", code))
    assert python.invoke(python_with_code).value == 9


def test_args_and_stdin_together_are_refused(python: LoadedModule) -> None:
    with pytest.raises(BadRequestError, match="args and stdin"):
        python.prepare("_start", [1], stdin=b"x")


def test_env_and_a_read_only_preopened_directory(python: LoadedModule) -> None:
    env = run(python, "python", "-c", "import os; print(os.environ.get('GREETING'), len(os.environ))")
    assert env.value == "hi 1\n"  # only what the sandbox lists
    read = run(python, "python", "-c", "print(open('/data/greeting.txt').read(), end='')")
    assert read.value == "hello from a read-only directory\n"
    with pytest.raises(ExitError) as refused:
        run(python, "python", "-c", "open('/data/new.txt', 'w').write('x')")
    assert refused.value.exit_code == 1
    assert "PermissionError" in refused.value.stderr or "Read-only" in refused.value.stderr
    with pytest.raises(ExitError) as outside:
        run(python, "python", "-c", "open('/etc/passwd').read()")
    assert "FileNotFoundError" in outside.value.stderr or "PermissionError" in outside.value.stderr


def test_a_nonzero_exit_is_an_error_with_its_status_stderr_and_stdout(python: LoadedModule) -> None:
    code = "import sys; print('partial'); print('cannot go on', file=sys.stderr); sys.exit(3)"
    with pytest.raises(ExitError) as exited:
        run(python, "python", "-c", code)
    assert exited.value.code == "exit" and exited.value.status == 500
    assert exited.value.details == {"exitCode": 3, "stderr": "cannot go on", "stdout": "partial\n"}
    assert exited.value.message == "exited with status 3: cannot go on"
    with pytest.raises(ExitError, match="ZeroDivisionError"):
        run(python, "python", "-c", "1/0")


def test_no_network_a_connection_is_refused_inside_the_sandbox(python: LoadedModule) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        code = (
            "import socket\n"
            "try:\n"
            f"    socket.socket().connect(('127.0.0.1', {port}))\n"
            "    print('connected')\n"
            "except OSError as exc:\n"
            "    print('refused:', exc)\n"
        )
        answer = run(python, "python", "-c", code)
        assert answer.value.startswith("refused:"), answer.value
        # a connection the program made would wait in the backlog by now, handshake done
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_the_timeout_stops_an_endless_program(python: LoadedModule) -> None:
    with pytest.raises(ModuleTimeoutError, match="timeout of 2s"):
        run(python, "python", "-c", "while True: pass")
    assert run(python, "python", "-c", "print(1)").value == 1  # the next call gets a fresh instance


def test_the_memory_limit_is_reported_as_such(python: LoadedModule) -> None:
    code = "chunks = []\nwhile True: chunks.append(bytearray(1_000_000))"
    with pytest.raises(MemoryLimitError, match="memory limit of 64 MB") as hit:
        run(python, "python", "-c", code)
    assert hit.value.code == "memory" and "MemoryError" in hit.value.message


def test_a_program_that_exits_nonzero_with_little_memory_is_not_a_memory_error(python: LoadedModule) -> None:
    with pytest.raises(ExitError):
        run(python, "python", "-c", "raise SystemExit(2)")


def test_quickjs_argv_stdin_and_exit(runtime: Runtime, quickjs_wasm: Path) -> None:
    qjs = runtime.load(quickjs_wasm.read_bytes(), Sandbox(argv=("qjs",), timeout_seconds=5))
    script = "console.log(JSON.stringify({sum: 6 * 7, input: std.in.readAsString()}))"
    assert run(qjs, "qjs", "--std", "-e", script, stdin=b"abc").value == {"sum": 42, "input": "abc"}
    with pytest.raises(ExitError) as exited:
        run(qjs, "qjs", "--std", "-e", "std.err.puts('bye'); std.exit(4)")
    assert (exited.value.exit_code, exited.value.stderr) == (4, "bye")
    with pytest.raises(ExitError) as thrown:
        run(qjs, "qjs", "-e", "nosuchname()")
    assert "ReferenceError" in thrown.value.stderr


def test_a_big_module_compiles_once_then_loads_from_the_precompiled_cache(python_wasm: Path, tmp_path: Path) -> None:
    data = python_wasm.read_bytes()
    with Runtime(cache_dir=tmp_path / "cache") as first:
        assert first.load(data, Sandbox()).from_cache is False
    with Runtime(cache_dir=tmp_path / "cache") as second:
        loaded = second.load(data, Sandbox(argv=("python", "-c", "print('again')")))
        assert loaded.from_cache is True
        assert run(loaded).value == "again\n"
