"""Limits and WASI isolation: memory, timeout, environment, filesystem."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.coremodule import LoadedModule
from edge.errors import ExitError, LoadError, MemoryLimitError, ModuleTimeoutError
from edge.loaded import BudgetExceededError
from edge.protocol import Capabilities, Limits, Mount
from edge.runtime import MIB, DirGrant, Runtime, Sandbox
from edge.wat import compile_wat
from tests.edge.conftest import module_bytes

EBADF = 8
EPERM = 63
ENOTCAPABLE = 76


def call(loaded: LoadedModule, function: str, args: Any = None) -> Any:
    return loaded.invoke(loaded.prepare(function, args)).value


# -- memory ---------------------------------------------------------------------------------------


def test_memory_growth_past_the_limit_is_refused(runtime: Runtime) -> None:
    loaded = runtime.load(module_bytes("limits"), Sandbox(memory_bytes=2 * MIB))  # 32 pages
    assert call(loaded, "grow", [20]) == 1  # previous size: 1 page
    assert call(loaded, "grow", [20]) == -1  # 41 pages > 32: refused
    assert call(loaded, "grow", [11]) == 21  # up to exactly the limit is fine


def test_a_module_that_traps_at_its_memory_limit_reports_memory(runtime: Runtime) -> None:
    loaded = runtime.load(module_bytes("limits"), Sandbox(memory_bytes=2 * MIB))
    with pytest.raises(MemoryLimitError, match="memory limit of 2 MB"):
        call(loaded, "grow_or_trap", [40])
    assert call(loaded, "fast", []) == 7  # a fresh instance serves the next call
    assert call(loaded, "grow_or_trap", [3]) == 4


def test_initial_memory_over_the_limit_is_refused_at_load(runtime: Runtime) -> None:
    data = compile_wat('(module (memory (export "memory") 100) (func (export "f")))')  # 6.25 MB
    with pytest.raises(LoadError, match="memory"):
        runtime.load(data, Sandbox(memory_bytes=4 * MIB))
    runtime.load(data, Sandbox(memory_bytes=8 * MIB))


# -- time -----------------------------------------------------------------------------------------


def test_an_infinite_loop_is_stopped_at_its_timeout(runtime: Runtime) -> None:
    loaded = runtime.load(module_bytes("limits"), Sandbox(timeout_seconds=0.05))
    with pytest.raises(ModuleTimeoutError, match=r"timeout of 0.05s"):
        call(loaded, "spin", [])
    assert call(loaded, "fast", []) == 7


def test_an_endless_start_function_fails_the_load(runtime: Runtime) -> None:
    data = compile_wat('(module (func $s (loop $l (br $l))) (start $s) (func (export "f")))')
    with pytest.raises(LoadError, match="cannot instantiate"):
        runtime.load(data, Sandbox(timeout_seconds=0.05))


def test_a_long_call_releases_the_gil(runtime: Runtime) -> None:
    """A module spinning on one thread does not stop Python code on another."""
    loaded = runtime.load(module_bytes("limits"), Sandbox(timeout_seconds=0.5))
    spin = loaded.prepare("spin", [])
    outcome: list[BaseException] = []

    def spinner() -> None:
        try:
            loaded.invoke(spin)
        except ModuleTimeoutError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=spinner)
    thread.start()
    fast = [call(loaded, "fast", []) for _ in range(200)]
    assert thread.is_alive()  # still spinning while 200 calls went through here
    assert fast == [7] * 200
    thread.join()
    assert len(outcome) == 1


# -- environment ----------------------------------------------------------------------------------


def test_only_listed_environment_variables_are_visible(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTSWAP_HOST_SECRET", "do-not-leak")
    sandbox = Sandbox.from_entry(Limits(), Capabilities(env={"GREETING": "hello", "EMPTY": ""}))
    loaded = runtime.load(module_bytes("env"), sandbox)
    output = call(loaded, "_start")
    variables = sorted(v for v in output.split("\0") if v)
    assert variables == ["EMPTY=", "GREETING=hello"]
    assert "do-not-leak" not in output
    assert "PATH=" not in output


def test_no_environment_at_all_by_default(runtime: Runtime) -> None:
    assert os.environ  # the host has some
    loaded = runtime.load(module_bytes("env"), Sandbox())
    assert call(loaded, "_start") == ""


# -- filesystem -----------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """tmp/data/inside.txt is granted; tmp/secret.txt is not."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "inside.txt").write_text("A: granted")
    (tmp_path / "secret.txt").write_text("S: not granted")
    return tmp_path


def files_module(runtime: Runtime, tree: Path, mode: str) -> LoadedModule:
    capabilities = Capabilities(filesystem=(Mount(host=str(tree / "data"), guest="/data", mode=mode),))
    return runtime.load(module_bytes("files"), Sandbox.from_entry(Limits(), capabilities))


def test_a_granted_file_can_be_read(runtime: Runtime, tree: Path) -> None:
    assert call(files_module(runtime, tree, "ro"), "read_inside") == ord("A")


@pytest.mark.parametrize("function", ["read_outside", "read_absolute"])
def test_nothing_outside_the_preopen_can_be_opened(runtime: Runtime, tree: Path, function: str) -> None:
    errno = call(files_module(runtime, tree, "rw"), function)
    assert errno in (EPERM, ENOTCAPABLE)


def test_a_read_only_directory_cannot_be_written(runtime: Runtime, tree: Path) -> None:
    errno = call(files_module(runtime, tree, "ro"), "write_new")
    assert errno != 0
    assert not (tree / "data" / "new.txt").exists()


def test_a_read_write_directory_can_be_written(runtime: Runtime, tree: Path) -> None:
    assert call(files_module(runtime, tree, "rw"), "write_new") == 0
    assert (tree / "data" / "new.txt").read_text() == "hi"


def test_without_a_grant_there_is_no_filesystem(runtime: Runtime) -> None:
    loaded = runtime.load(module_bytes("files"), Sandbox())
    assert call(loaded, "read_inside") == -EBADF
    assert call(loaded, "write_new") == EBADF


def test_a_grant_of_a_missing_directory_fails_the_load(runtime: Runtime, tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="is not a directory"):
        runtime.load(module_bytes("files"), Sandbox(dirs=(DirGrant(tmp_path / "nope", "/data"),)))


def test_a_nonzero_exit_is_an_exit_error_with_stderr(runtime: Runtime) -> None:
    data = compile_wat(
        """(module
          (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (data (i32.const 100) "bad input")
          (func (export "_start")
            (i32.store (i32.const 0) (i32.const 100)) (i32.store (i32.const 4) (i32.const 9))
            (drop (call $w (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
            (call $exit (i32.const 3))))"""
    )
    loaded = runtime.load(data, Sandbox())
    with pytest.raises(ExitError, match="exited with status 3: bad input") as raised:
        call(loaded, "_start")
    assert (raised.value.exit_code, raised.value.stderr, raised.value.code) == (3, "bad input", "exit")


def test_closing_the_runtime_stops_calls_that_are_still_running() -> None:
    runtime = Runtime()
    loaded = runtime.load(module_bytes("limits"), Sandbox(timeout_seconds=300))
    outcome: list[BaseException] = []

    def spinner() -> None:
        try:
            loaded.invoke(loaded.prepare("spin", []))
        except ModuleTimeoutError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=spinner)
    thread.start()
    while runtime.busy == 0:
        time.sleep(0.001)
    runtime.close()  # a node shutting down does not wait 300 s for the module
    thread.join(timeout=60)
    assert not thread.is_alive() and len(outcome) == 1


# -- the ticker parks when nothing runs (edge.runtime.Ticker) -----------------------------------


@pytest.fixture
def parking() -> Iterator[Runtime]:
    """A runtime whose ticker parks after 20 ms without a call."""
    with Runtime(park_after=0.02) as rt:
        yield rt


def until_parked(runtime: Runtime) -> None:
    deadline = time.monotonic() + 30
    while not runtime.ticker.parked:
        assert time.monotonic() < deadline, "the ticker never parked"
        time.sleep(0.001)


def ended(runtime: Runtime, work: Callable[[], object], hang: float = 60.0) -> BaseException | None:
    """What `work` raised (None if it returned), run on a thread; a call left without ticks would
    never end: after `hang` seconds the epoch is run ahead and the runtime closed (which stops it),
    and the test fails."""
    raised: list[BaseException | None] = []

    def run() -> None:
        try:
            work()
            raised.append(None)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=hang)
    if thread.is_alive():
        for _ in range(100_000):  # whatever the call's deadline, the epoch is past it
            runtime.engine.increment_epoch()
        runtime.close()
        thread.join(timeout=60)
        pytest.fail("the call ran past its deadline: the parked ticker never woke")
    return raised[0]


def test_an_idle_ticker_parks_and_the_next_call_still_stops_at_its_timeout(parking: Runtime) -> None:
    loaded = parking.load(module_bytes("limits"), Sandbox(timeout_seconds=0.05))
    until_parked(parking)
    assert isinstance(ended(parking, lambda: call(loaded, "spin", [])), ModuleTimeoutError)
    until_parked(parking)  # and it parks again once idle
    assert call(loaded, "fast", []) == 7


def test_an_inline_call_after_a_park_still_runs_out_of_its_budget(parking: Runtime) -> None:
    loaded = parking.load(module_bytes("limits"), Sandbox(timeout_seconds=30))
    spin = loaded.prepare("spin", [])
    until_parked(parking)
    assert isinstance(ended(parking, lambda: loaded.invoke(spin, budget=2)), BudgetExceededError)


def test_an_endless_start_function_after_a_park_still_fails_the_load(parking: Runtime) -> None:
    data = compile_wat('(module (func $s (loop $l (br $l))) (start $s) (func (export "f")))')
    until_parked(parking)
    failed = ended(parking, lambda: parking.load(data, Sandbox(timeout_seconds=0.05)))
    assert isinstance(failed, LoadError) and "cannot instantiate" in str(failed)


def test_a_call_running_longer_than_the_park_delay_keeps_the_ticker_going(parking: Runtime) -> None:
    loaded = parking.load(module_bytes("limits"), Sandbox(timeout_seconds=0.3))  # 15 park delays
    until_parked(parking)
    assert isinstance(ended(parking, lambda: call(loaded, "spin", [])), ModuleTimeoutError)


def test_a_second_memory_is_refused(runtime: Runtime) -> None:
    data = compile_wat('(module (memory 1) (memory $two 1) (func (export "f")))')
    with pytest.raises(LoadError):
        runtime.load(data, Sandbox())


def test_table_growth_is_bounded_by_the_memory_budget(runtime: Runtime) -> None:
    data = compile_wat(
        '(module (table $t 1 funcref) (func (export "grow") (param i32) (result i32)'
        " ref.null func local.get 0 table.grow $t))"
    )
    loaded = runtime.load(data, Sandbox(memory_bytes=1 * MIB))  # 131,072 elements at 8 bytes
    assert call(loaded, "grow", [1000]) == 1
    assert call(loaded, "grow", [200_000]) == -1


def test_only_modules_that_cannot_block_may_run_on_the_event_loop(runtime: Runtime, tmp_path: Path) -> None:
    """The epoch deadline stops wasm code, not a host call such as a sleep or a file read."""
    arith = runtime.load(module_bytes("arith"), Sandbox())
    assert arith.may_run_inline("add")
    sleeper = runtime.load(
        compile_wat(
            '(module (import "wasi_snapshot_preview1" "poll_oneoff" (func (param i32 i32 i32 i32) (result i32)))'
            ' (memory (export "memory") 1) (func (export "f") (result i32) i32.const 1))'
        ),
        Sandbox(),
    )
    assert not sleeper.may_run_inline("f")
    with_files = runtime.load(module_bytes("arith"), Sandbox(dirs=(DirGrant(tmp_path, "/data"),)))
    assert not with_files.may_run_inline("add")
    commands = runtime.load(module_bytes("cat"), Sandbox())
    assert not commands.may_run_inline("_start")
