"""Outside attacks on real WASI programs (CPython, hand-made WAT commands) now that edge nodes link every
WASI preview 1 function (`sock_*` included) and command calls carry `argv` and raw `stdin`.

The attacker is a caller with a valid execute token (role developer): with `argv` it runs code of its
choice in an interpreter the fleet serves (`python -c CODE`), or a fleet author with a module in a
table. Each call goes to a real node process (`hotswap edge --standalone`, tables through its admin
endpoint) or through a real control plane to real nodes.

Findings (each test asserts the SAFE behaviour, so it fails while the hole is open):

* A grant is re-opened by its host path for every new instance (`_Instance` calls `preopen_dir` with
  the path `GrantRoots.check` resolved at load), so the check is a time-of-check: a program with a
  read-write grant on a directory that holds another grant replaces that directory by a relative
  symlink (wasmtime lets it create one), and the next instance's "read-only /data" is whatever the
  link points at, outside every `--allow-dir` root, the node's own cache and key included, even `/`
  (and writable, when the inner grant is rw). Seen: `os.listdir('/data')` listed the host's `/` after
  `os.rename('/w/data', '/w/old'); os.symlink('../../../../../../../..', '/w/data')`.
* The same re-open makes a call whose grant has gone a 500 `internal` that is never recorded: the
  version's requests and failures stay as they were, so an analysis cannot see it fail.
* `poll_oneoff` (Python's `time.sleep`, `select`) blocks in a host call, where the epoch deadline does
  not reach: a call with a 1 s timeout sleeps as long as it likes, holds a worker thread (a version
  holds up to half of them) and keeps the node from stopping on SIGTERM (its worker threads are
  joined at exit). Seen: `time.sleep(3600)` with timeoutSeconds 1 gave no answer, the node did not
  exit after SIGTERM.
* A command's stdout is capped at RESULT_CAP (16 MiB) bytes, but the answer re-encodes it as a JSON
  string with `ensure_ascii`: every byte that is not UTF-8 becomes `\\ufffd` (6 bytes). A module with
  128 KiB of memory makes the node build and send a 100 MB answer (peak RSS +240 MB per call).
* The control plane reads at most 8 MiB of a node's answer and treats a bigger one as an unreachable
  node: a command that succeeds with a large stdout is run again on every other node (its side
  effects repeated) and the caller gets 502 `nodes_unreachable`.
* A command whose stdout parses as a JSON number out of float range (`1e400`) becomes `inf`, which
  the answer encoder refuses: the call is recorded as a success and answered 500 `internal`.

Held (tests that pass): no `sock_*` call on any descriptor reaches the network; a read-only grant
refuses every way of writing, `..` and symlinks out of it, and only listed env vars are visible; bad
argv/stdin bodies are 4xx and the node goes on serving; every exit status (0, 1..125, and what
proc_exit cannot carry: 126+, negative) is answered and counted; many concurrent calls each filling
their memory limit keep the node's peak memory within threads x limit.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.runtime import RESULT_CAP
from edge.wasminfo import sha256_digest
from edge.wat import compile_wat
from reconciler.api.execute import ANSWER_BYTES
from tests.api.conftest import call as api_call
from tests.e2e.cluster import Cluster, start_cluster, stop_cluster
from tests.edge.standalone import StandaloneNode, start_standalone
from tests.wasi_programs.programs import fetch

EXECUTE = "/api/v1/wasm/execute"
MIB = 1 << 20
SECRET = "host-secret-outside-every-allowed-root"
MODULE_ERRORS = ("trap", "exit", "timeout", "memory", "cpu")

# flood: reads one byte N from stdin and writes N blocks of 64 KiB of the byte 0xFF (not UTF-8) to
# stdout, then returns (exit 0). Its memory is two pages: 128 KiB.
FLOOD_WAT = """\
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start") (local $n i32)
    (memory.fill (i32.const 65536) (i32.const 255) (i32.const 65536))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 1))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (local.set $n (i32.load8_u (i32.const 16)))
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.const 65536))
    (block $done
      (loop $more
        (br_if $done (i32.eqz (local.get $n)))
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $more)))))
"""

# sockets: every sock_* function on every descriptor 0..11 (3 is the first preopen), each result
# written to stdout as one letter: 'A' + errno (A: success).
SOCKETS_WAT = """\
(module
  (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_recv" (func $recv (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_send" (func $send (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_shutdown" (func $shutdown (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func $put (param $errno i32)
    (i32.store8 (i32.const 200) (i32.add (i32.const 65) (local.get $errno)))
    (i32.store (i32.const 300) (i32.const 200))
    (i32.store (i32.const 304) (i32.const 1))
    (drop (call $fd_write (i32.const 1) (i32.const 300) (i32.const 1) (i32.const 400))))
  (func (export "_start") (local $fd i32)
    (i32.store (i32.const 500) (i32.const 600))
    (i32.store (i32.const 504) (i32.const 16))
    (loop $each
      (call $put (call $accept (local.get $fd) (i32.const 0) (i32.const 100)))
      (call $put (call $recv (local.get $fd) (i32.const 500) (i32.const 1) (i32.const 0) (i32.const 104)
                             (i32.const 108)))
      (call $put (call $send (local.get $fd) (i32.const 500) (i32.const 1) (i32.const 0) (i32.const 104)))
      (call $put (call $shutdown (local.get $fd) (i32.const 3)))
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br_if $each (i32.lt_u (local.get $fd) (i32.const 12))))))
"""
ENOTSOCK, EBADF = 57, 8

# exiter: reads 4 bytes (a little-endian i32) from stdin, writes "out" to stdout and "err" to stderr,
# and calls proc_exit with that status.
EXITER_WAT = """\
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "out")
  (data (i32.const 80) "err")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 4))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 32) (i32.const 64))
    (i32.store (i32.const 36) (i32.const 3))
    (drop (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 32) (i32.const 80))
    (drop (call $fd_write (i32.const 2) (i32.const 32) (i32.const 1) (i32.const 8)))
    (call $exit (i32.load (i32.const 16)))))
"""


@pytest.fixture(scope="module")
def python_wasm() -> Path:
    return fetch("python")


@pytest.fixture(scope="module")
def program_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One precompiled cache for the module: the 26 MB interpreter is compiled once."""
    return tmp_path_factory.mktemp("program-cache")


@pytest.fixture
def folder(tmp_path: Path, python_wasm: Path) -> Path:
    """The node's module folder; `grants/` (the allowed root) and `outside/` (with a secret) beside it."""
    modules = tmp_path / "modules"
    modules.mkdir()
    shutil.copy(python_wasm, modules / "python-1.0.0.wasm")
    (modules / "flood-1.0.0.wat").write_text(FLOOD_WAT)
    (modules / "sockets-1.0.0.wat").write_text(SOCKETS_WAT)
    (modules / "exiter-1.0.0.wat").write_text(EXITER_WAT)
    (tmp_path / "grants").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text(SECRET)
    return modules


def _node(folder: Path, cache: Path, tmp_path: Path, *flags: str) -> StandaloneNode:
    return start_standalone(folder, cache, "--allow-dir", str(tmp_path / "grants"), "--timeout-s", "5", *flags)


@pytest.fixture
def node(folder: Path, program_cache: Path, tmp_path: Path) -> Iterator[StandaloneNode]:
    started = _node(folder, program_cache, tmp_path)
    try:
        yield started
    finally:
        started.stop()


def python_entry(folder: Path, **extra: Any) -> dict[str, Any]:
    digest = sha256_digest((folder / "python-1.0.0.wasm").read_bytes())
    return {"module": "python", "version": "1.0.0", "digest": digest, "weight": 100, **extra}


def run(node: StandaloneNode, code: str, **body: Any) -> tuple[int, Any]:
    """`python -c CODE` on the node, as a developer calls it."""
    return node.request(
        "POST", EXECUTE, {"module": "python", "function": "_start", "argv": ["python", "-c", code], **body}
    )


def raw_post(url: str, body: dict[str, Any], timeout: float) -> tuple[int, bytes] | None:
    """(status, raw answer) of one execute call; None when no answer came within `timeout`."""
    request = urllib.request.Request(url + EXECUTE, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()
    except (TimeoutError, urllib.error.URLError):
        return None


def counts(url: str, module: str) -> tuple[int, int]:
    """(invocations, failures of any reason) of `module` in the node's /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=30) as answer:
        text = answer.read().decode()
    invoked = failed = 0
    for line in text.splitlines():
        if f'module="{module}"' not in line or line.startswith("#"):
            continue
        if line.startswith("wasm_functions_invoked_total{"):
            invoked += int(line.rsplit(" ", 1)[1])
        elif line.startswith("wasm_functions_failed_total{"):
            failed += int(line.rsplit(" ", 1)[1])
    return invoked, failed


# -- findings ---------------------------------------------------------------------------------------


def test_a_grant_cannot_be_moved_outside_the_allowed_roots_by_a_program_with_a_write_grant(
    node: StandaloneNode, folder: Path, tmp_path: Path
) -> None:
    """A developer's code in a python that has /w (rw) and, inside it, /data (ro): it swaps data for a
    symlink between two calls, and the next instance opens the grant by its path again."""
    shared = tmp_path / "grants" / "shared"
    (shared / "data").mkdir(parents=True)
    (shared / "data" / "words.txt").write_text("granted\n")
    grants = [
        {"host": str(shared), "guest": "/w", "mode": "rw"},
        {"host": str(shared / "data"), "guest": "/data", "mode": "ro"},
    ]
    status, report = node.apply([python_entry(folder, capabilities={"filesystem": grants})], generation=1)
    assert status == 200 and report["failed"] == {}, report
    status, answer = run(node, "print(open('/data/words.txt').read(), end='')")
    assert (status, answer["result"]) == (200, "granted\n"), answer

    # grants/shared/data -> ../../outside: a relative link, which wasmtime lets the program create
    run(node, "import os; os.rename('/w/data', '/w/old'); os.symlink('../../outside', '/w/data')")
    status, answer = run(node, "print(open('/data/secret.txt').read())")
    assert SECRET not in json.dumps(answer), (
        f"a read-only grant was moved outside --allow-dir by the program's own write grant: {status} {answer}"
    )


def test_a_call_whose_grant_is_gone_is_counted_not_an_unrecorded_internal_error(
    node: StandaloneNode, folder: Path, tmp_path: Path
) -> None:
    """The same layout; the program renames its read-only grant away. Every later call fails before the
    program starts: the failure must be counted against the version (or the call must still work)."""
    shared = tmp_path / "grants" / "shared"
    (shared / "data").mkdir(parents=True)
    grants = [
        {"host": str(shared), "guest": "/w", "mode": "rw"},
        {"host": str(shared / "data"), "guest": "/data", "mode": "ro"},
    ]
    status, report = node.apply([python_entry(folder, capabilities={"filesystem": grants})], generation=1)
    assert status == 200 and report["failed"] == {}, report
    status, answer = run(node, "import os; os.rename('/w/data', '/w/gone'); print('moved')")
    assert (status, answer["result"]) == (200, "moved\n"), answer

    status, answer = run(node, "print(1)")
    invoked, failed = counts(node.url, "python")
    assert answer.get("error") != "internal", f"an uncounted 500 internal: {answer}"
    assert invoked == 2, f"the call was not recorded: {invoked} invocations of 2"
    assert status == 200 or failed == 1, (status, answer, failed)


def test_a_sleeping_program_is_stopped_at_its_timeout(folder: Path, program_cache: Path, tmp_path: Path) -> None:
    """`time.sleep` is poll_oneoff, a host call the epoch deadline does not interrupt. The bounds below
    are liveness bounds (20x the module's timeout), not timing measurements."""
    node = _node(folder, program_cache, tmp_path)
    try:
        status, report = node.apply([python_entry(folder, limits={"timeoutSeconds": 1})], generation=1)
        assert status == 200 and report["failed"] == {}, report
        body = {"module": "python", "function": "_start", "argv": ["python", "-c", "import time; time.sleep(3600)"]}
        answered = raw_post(node.url, body, timeout=20)
        node.proc.send_signal(signal.SIGTERM)
        try:
            exit_code: int | None = node.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            exit_code = None
        assert answered is not None, "no answer 20 s into a call whose timeout is 1 s: the sleep outlives it"
        assert answered[0] == 504 and json.loads(answered[1])["error"] == "timeout", answered
        assert exit_code == 0, "the node did not stop on SIGTERM while a program slept"
    finally:
        node.kill()


def test_a_command_answer_stays_within_the_result_cap_whatever_bytes_it_writes(node: StandaloneNode) -> None:
    """255 blocks of 64 KiB of 0xFF: within RESULT_CAP as bytes, from a module with 128 KiB of memory."""
    body = {"module": "flood", "function": "_start", "stdinBase64": base64.b64encode(bytes([255])).decode()}
    answered = raw_post(node.url, body, timeout=120)
    assert answered is not None
    status, raw = answered
    assert len(raw) <= RESULT_CAP + 64 * 1024, (
        f"{status}: a {len(raw) / MIB:.0f} MiB answer for {255 * 64 / 1024:.1f} MiB of stdout "
        f"(cap {RESULT_CAP / MIB:.0f} MiB)"
    )
    _, answer = node.request("POST", EXECUTE, {"module": "flood", "function": "_start", "stdinBase64": "AQ=="})
    assert "result" in answer  # and the node goes on serving


def test_a_command_that_prints_an_out_of_range_number_is_answered_and_counted(node: StandaloneNode) -> None:
    status, answer = run(node, "print('1e400')")
    invoked, failed = counts(node.url, "python")
    assert answer.get("error") != "internal", f"{status} {answer}: recorded as a success, answered as a node failure"
    assert status == 200 or (answer.get("error") in MODULE_ERRORS and failed == invoked == 1), (status, answer)


# -- the control plane in front of two nodes ---------------------------------------------------------

FLEET = {
    "fleet.yaml": """\
apiVersion: hotswap.dev/v1
kind: Fleet
metadata: {name: flood}
spec:
  environment: dev
  regions: [{name: us-east}]
""",
    "modules/flood.yaml": """\
apiVersion: hotswap.dev/v1
kind: Module
metadata: {name: flood}
spec:
  version: 1.0.0
  source: {path: ../wasm/flood-1.0.0.wat}
  limits: {memoryMB: 16, timeoutSeconds: 10}
  placement: {replicas: all}
""",
    "wasm/flood-1.0.0.wat": FLOOD_WAT,
}
NODES = [("edge-flood-1", "us-east"), ("edge-flood-2", "us-east")]


@pytest.fixture
async def two_nodes(tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = await start_cluster(tmp_path, NODES, files=FLEET)
    try:
        await cluster.wait_ready(len(NODES))
        await cluster.wait_all_serving("flood", "1.0.0", [n for n, _ in NODES])
        yield cluster
    finally:
        await stop_cluster(cluster)


async def test_a_successful_command_with_a_large_answer_runs_once_and_is_answered(two_nodes: Cluster) -> None:
    """40 blocks of 64 KiB (2.5 MiB of stdout, a sixth of the node's cap): the node answers 200 with
    15 MiB of JSON, over the control plane's read bound (ANSWER_BYTES), which takes that for an
    unreachable node and runs the call again on the next one."""
    body = {"module": "flood", "function": "_start", "stdinBase64": base64.b64encode(bytes([40])).decode()}
    answer = await api_call(two_nodes.url, "POST", EXECUTE, two_nodes.token("developer"), json=body)
    urls = two_nodes.node_urls()
    runs = sum(counts(urls[node_id], "flood")[0] for node_id, _ in NODES)
    assert runs == 1, f"one execute call ran the program on {runs} nodes (answer {answer.status})"
    # the node's own answer (the output, or a module error saying it is too big), not a 502 "every node
    # serving flood failed" for a call that succeeded
    module_error = isinstance(answer.body, dict) and answer.body.get("error") in MODULE_ERRORS
    assert answer.status == 200 or module_error, (answer.status, str(answer.body)[:300], ANSWER_BYTES)


# -- held -------------------------------------------------------------------------------------------


def test_no_socket_function_reaches_the_network_on_any_descriptor(
    node: StandaloneNode, folder: Path, tmp_path: Path
) -> None:
    data = tmp_path / "grants" / "rw"
    data.mkdir()
    digest = sha256_digest(compile_wat((folder / "sockets-1.0.0.wat").read_text()))
    grants = [{"host": str(data), "guest": "/rw", "mode": "rw"}]
    entry = {"module": "sockets", "version": "1.0.0", "digest": digest, "capabilities": {"filesystem": grants}}
    status, report = node.apply([entry], generation=1)
    assert status == 200 and report["failed"] == {}, report
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        status, answer = node.request(
            "POST", EXECUTE, {"module": "sockets", "function": "_start", "argv": ["sockets"], "stdin": "data"}
        )
        assert status == 200, answer
        errnos = [ord(c) - 65 for c in answer["result"]]
        assert len(errnos) == 12 * 4
        assert set(errnos) <= {ENOTSOCK, EBADF}, errnos  # never a success, on stdio, the preopen or beyond
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_a_read_only_grant_refuses_every_write_and_every_way_out(
    folder: Path, program_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOTSWAP_HOST_ONLY_SECRET", SECRET)  # in the node process's environment
    data = tmp_path / "grants" / "data"
    (data / "sub").mkdir(parents=True)
    (data / "words.txt").write_text("alpha\n")
    (data / "rel").symlink_to("../../outside/secret.txt")
    (data / "abs").symlink_to(tmp_path / "outside" / "secret.txt")
    (data / "up").symlink_to("../../outside")
    node = _node(folder, program_cache, tmp_path)
    try:
        grants = [{"host": str(data), "guest": "/data", "mode": "ro"}]
        entry = python_entry(folder, capabilities={"filesystem": grants, "env": {"LISTED": "yes"}})
        status, report = node.apply([entry], generation=1)
        assert status == 200 and report["failed"] == {}, report
        attempts = {
            "append": "open('/data/words.txt', 'a').write('x')",
            "write": "os.open('/data/words.txt', os.O_WRONLY)",
            "truncate-open": "os.open('/data/words.txt', os.O_RDONLY | os.O_TRUNC)",
            "create": "os.open('/data/new', os.O_RDONLY | os.O_CREAT)",
            "mkdir": "os.mkdir('/data/d')",
            "rmdir": "os.rmdir('/data/sub')",
            "unlink": "os.unlink('/data/words.txt')",
            "rename": "os.rename('/data/words.txt', '/data/moved')",
            "symlink": "os.symlink('words.txt', '/data/link')",
            "link": "os.link('/data/words.txt', '/data/hard')",
            "utime": "os.utime('/data/words.txt', (1, 1))",
            "futime": "os.utime(os.open('/data/words.txt', os.O_RDONLY), (1, 1))",
            "truncate": "os.truncate('/data/words.txt', 0)",
            "ftruncate": "os.ftruncate(os.open('/data/words.txt', os.O_RDONLY), 0)",
            "pwrite": "os.pwrite(os.open('/data/words.txt', os.O_RDONLY), b'z', 0)",
            "dotdot": "open('/data/../outside/secret.txt').read()",
            "dotdot-list": "os.listdir('/data/sub/../..')",
            "relative-link": "open('/data/rel').read()",
            "absolute-link": "open('/data/abs').read()",
            "dir-link": "os.listdir('/data/up')",
            "root": "os.listdir('/')",
        }
        code = (
            "import json, os\nout = {}\n"
            + "".join(
                f"try:\n    {stmt}\n    out[{name!r}] = 'done'\nexcept OSError as e:\n    out[{name!r}] = e.errno\n"
                for name, stmt in attempts.items()
            )
            + "out['env'] = dict(os.environ)\nprint(json.dumps(out))"
        )
        status, answer = run(node, code)
        assert status == 200, answer
        result = answer["result"]
        assert result.pop("env") == {"LISTED": "yes"}
        assert [name for name, outcome in result.items() if outcome == "done"] == []
        assert SECRET not in json.dumps(answer)
        assert sorted(p.name for p in data.iterdir()) == ["abs", "rel", "sub", "up", "words.txt"]
        assert (data / "words.txt").read_text() == "alpha\n"
    finally:
        node.stop()


def test_every_exit_status_is_answered_and_counted(node: StandaloneNode) -> None:
    """0 is a success; 1..125 an `exit` with the status and the program's words; what proc_exit cannot
    carry (126 and up, negative, 2**31) a trap. None is lost to the counts, none takes the node down."""
    answers = {}
    for status_code in (0, 1, 125, 126, 255, 2**31, -1):
        stdin = base64.b64encode((status_code & 0xFFFFFFFF).to_bytes(4, "little")).decode()
        answers[status_code] = node.request(
            "POST", EXECUTE, {"module": "exiter", "function": "_start", "stdinBase64": stdin}
        )
    assert answers[0] == (200, {**answers[0][1], "result": "out", "exitCode": 0, "stderr": "err"})
    for code in (1, 125):
        status, answer = answers[code]
        got = (status, answer["error"], answer["exitCode"], answer["stderr"], answer["stdout"])
        assert got == (500, "exit", code, "err", "out"), answer
    for code in (126, 255, 2**31, -1):
        status, answer = answers[code]
        assert (status, answer["error"]) == (500, "trap"), answer
    assert counts(node.url, "exiter") == (7, 6)


def test_bad_command_inputs_are_refused_and_the_node_goes_on_serving(node: StandaloneNode) -> None:
    start = {"module": "python", "function": "_start"}
    bodies = [
        {**start, "argv": ["python", "-c", "print(1)", "a\u0000b"]},  # NUL: no C string holds it
        {**start, "argv": ["x"] * 1025},
        {**start, "argv": ["x" * 65537]},
        {**start, "argv": "python -c 1"},
        {**start, "argv": [1, 2]},
        {**start, "stdinBase64": "not base64!"},
        {**start, "stdinBase64": "eA==\n"},
        {**start, "stdin": "x", "stdinBase64": "eA=="},
        {**start, "stdin": "x", "args": [1]},
        {"module": "flood", "function": "memory", "argv": ["x"]},
    ]
    for body in bodies:
        status, answer = node.request("POST", EXECUTE, body)
        assert 400 <= status < 500, (body if len(json.dumps(body)) < 200 else "a big body", status, answer)
    raw = b'{"module": "python", "function": "_start", "argv": ["a\\ud800"]}'  # a lone surrogate
    request = urllib.request.Request(node.url + EXECUTE, raw, {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    with refused.value:
        assert refused.value.code == 400
    answered = raw_post(node.url, {**start, "stdin": "x" * (5 * MIB)}, timeout=60)
    assert answered is not None and answered[0] == 413
    status, answer = run(node, "import sys; print(len(sys.argv))")
    assert (status, answer["result"]) == (200, 1)  # sys.argv == ["-c"]


def test_concurrent_programs_at_their_memory_limit_keep_the_node_within_threads_times_limit(
    folder: Path, program_cache: Path, tmp_path: Path
) -> None:
    threads, limit_mb = 4, 128
    node = _node(folder, program_cache, tmp_path, "--threads", str(threads), "--memory-mb", str(limit_mb))
    try:

        def rss_mb() -> dict[str, int]:
            with open(f"/proc/{node.proc.pid}/status") as status:
                return {
                    line.split(":")[0]: int(line.split()[1]) // 1024
                    for line in status
                    if line.startswith(("VmRSS", "VmHWM"))
                }

        node.request("POST", EXECUTE, {"module": "python", "function": "_start", "argv": ["python", "-c", "1"]})
        before = rss_mb()["VmRSS"]
        with open(f"/proc/{node.proc.pid}/clear_refs", "w") as clear:
            clear.write("5")  # VmHWM from here on, not from compiling the interpreter at load
        code = "b = []\ntry:\n    while True: b.append(bytearray(10**6))\nexcept MemoryError:\n    pass\nprint(len(b))"
        answers: list[tuple[int, Any]] = []

        def one() -> None:
            answers.append(run(node, code))

        for _ in range(2):
            callers = [threading.Thread(target=one) for _ in range(2 * threads)]
            for caller in callers:
                caller.start()
            for caller in callers:
                caller.join()
        assert len(answers) == 4 * threads
        assert all(status in (200, 507, 429) for status, _ in answers), answers  # 429: its share was taken
        assert any(status == 200 for status, _ in answers), answers
        peak = rss_mb()["VmHWM"]
        assert peak - before <= threads * limit_mb + 64, (before, peak)
        status, answer = run(node, "print(2)")
        assert (status, answer["result"]) == (200, 2)
    finally:
        node.stop()
