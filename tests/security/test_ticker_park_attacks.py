"""Attacks on the parking epoch ticker (`edge.runtime.Ticker`, commit 28d9268): the ticker stops
ticking once no call has started for `park_after` seconds, and every way into wasm must wake it,
or an endless loop runs past its timeout for ever. Each runaway below is started after the ticker
parked (or while it parks) and must end at its deadline; the node or runtime must serve afterwards.

Every blocking call runs on a thread joined with a timeout; on a hang the runtime is closed (or the
node killed) and the test fails."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.errors import LoadError, ModuleTimeoutError
from edge.loaded import BudgetExceededError
from edge.runtime import Runtime, Sandbox
from edge.wat import compile_wat
from tests.edge.standalone import StandaloneNode, start_standalone
from tests.edge.test_sandbox import ended, until_parked

EXECUTE = "/api/v1/wasm/execute"
HANG = 30.0  # a call still running after this long never stops: the test fails

NUMERIC_WAT = """\
(module
  (memory (export "memory") 1)
  (func (export "spin") (result i32) (loop $l (br $l)) i32.const 0)
  (func (export "fast") (result i32) i32.const 7))
"""

# JSON convention: alloc(len) -> ptr; spin(ptr, len) never returns.
JSON_WAT = """\
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "1")
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "spin") (param i32 i32) (result i64) (loop $l (br $l)) i64.const 0)
  (func (export "answer") (param i32 i32) (result i64)
    i64.const 68719476737))
"""

COMMAND_WAT = """\
(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $l (br $l))))
"""

START_WAT = """\
(module
  (memory (export "memory") 1)
  (func $forever (loop $l (br $l)))
  (start $forever)
  (func (export "fast") (result i32) i32.const 7))
"""


def sleeper_wat(nanoseconds: int, export: str = "_start") -> str:
    """A WASI module whose `export` sleeps `nanoseconds` in poll_oneoff (one relative clock
    subscription), then loops for ever."""
    return f"""\
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "{export}")
    (i64.store (i32.const 0) (i64.const 1))
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const {nanoseconds}))
    (i64.store (i32.const 32) (i64.const 0))
    (i32.store16 (i32.const 40) (i32.const 0))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
    (loop $l (br $l))))
"""


# -- in-process: a runtime whose ticker parks quickly ---------------------------------------------


@pytest.fixture
def parking() -> Iterator[Runtime]:
    with Runtime(park_after=0.02) as rt:
        yield rt


def load(runtime: Runtime, wat: str, timeout: float = 0.1) -> Any:
    return runtime.load(compile_wat(wat), Sandbox(timeout_seconds=timeout))


def worker_call(loaded: Any, function: str, args: Any = None, timeout: float | None = None) -> Any:
    return loaded.invoke(loaded.prepare(function, args), timeout=timeout).value


def still_serves(runtime: Runtime) -> None:
    loaded = load(runtime, NUMERIC_WAT)
    until_parked(runtime)
    assert ended(runtime, lambda: worker_call(loaded, "fast", [])) is None
    assert worker_call(loaded, "fast", []) == 7


def test_a_numeric_loop_on_a_worker_after_a_park_stops(parking: Runtime) -> None:
    loaded = load(parking, NUMERIC_WAT)
    until_parked(parking)
    assert isinstance(ended(parking, lambda: worker_call(loaded, "spin", [])), ModuleTimeoutError)
    still_serves(parking)


def test_a_numeric_loop_inline_after_a_park_runs_out_of_its_budget(parking: Runtime) -> None:
    loaded = load(parking, NUMERIC_WAT, timeout=30)
    spin = loaded.prepare("spin", [])
    for _ in range(3):
        until_parked(parking)
        raised = ended(parking, lambda: loaded.invoke(spin, budget=2, cpu_clock=time.perf_counter_ns))
        assert isinstance(raised, BudgetExceededError)
    still_serves(parking)


def test_a_json_loop_after_a_park_stops_inline_and_on_a_worker(parking: Runtime) -> None:
    loaded = load(parking, JSON_WAT)
    assert worker_call(loaded, "answer", {"x": 1}) == 1  # an instance is ready
    spin = loaded.prepare("spin", {"x": 1})
    until_parked(parking)
    assert isinstance(ended(parking, lambda: loaded.invoke(spin, budget=2)), BudgetExceededError)
    until_parked(parking)
    assert isinstance(ended(parking, lambda: loaded.invoke(spin)), ModuleTimeoutError)
    still_serves(parking)


def test_a_command_loop_after_a_park_stops(parking: Runtime) -> None:
    loaded = load(parking, COMMAND_WAT)
    until_parked(parking)
    assert isinstance(ended(parking, lambda: worker_call(loaded, "_start", None)), ModuleTimeoutError)
    still_serves(parking)


def test_an_endless_start_function_after_a_park_fails_the_load(parking: Runtime) -> None:
    until_parked(parking)
    raised = ended(parking, lambda: load(parking, START_WAT))
    assert isinstance(raised, LoadError), raised
    still_serves(parking)


def test_a_start_function_that_sleeps_past_the_park_delay_then_loops_fails_the_load(parking: Runtime) -> None:
    wat = (
        sleeper_wat(200_000_000)
        .replace('(func (export "_start")', "(func $s")
        .replace("(loop $l (br $l))))", "(loop $l (br $l)))\n  (start $s))")
    )
    until_parked(parking)
    raised = ended(parking, lambda: load(parking, wat, timeout=0.5))
    assert isinstance(raised, LoadError), raised
    still_serves(parking)


def test_a_program_that_sleeps_past_the_park_delay_then_loops_stops(parking: Runtime) -> None:
    loaded = load(parking, sleeper_wat(200_000_000), timeout=0.5)  # the sleep is 10 park delays
    until_parked(parking)
    assert isinstance(ended(parking, lambda: worker_call(loaded, "_start", None)), ModuleTimeoutError)
    still_serves(parking)


def test_a_loop_outlives_a_short_call_that_started_with_it(parking: Runtime) -> None:
    """Two loops start together; the short one ends, the ticker must not park under the long one."""
    loaded = load(parking, NUMERIC_WAT)
    until_parked(parking)
    short: list[BaseException | None] = []
    thread = threading.Thread(
        target=lambda: short.append(ended(parking, lambda: worker_call(loaded, "spin", [], timeout=0.02))),
        daemon=True,
    )
    thread.start()
    long = ended(parking, lambda: worker_call(loaded, "spin", [], timeout=0.4))  # 20 park delays
    thread.join(timeout=HANG)
    assert isinstance(short[0], ModuleTimeoutError) and isinstance(long, ModuleTimeoutError)
    still_serves(parking)


def test_loops_started_while_the_ticker_parks_all_stop() -> None:
    """The ticker parks after a single quiet tick, so it is parking or waking on every call: many
    short loops, inline and on worker threads at once, each must stop."""
    with Runtime(park_after=0.001) as rt:
        loaded = load(rt, NUMERIC_WAT, timeout=0.003)
        spin = loaded.prepare("spin", [])

        def many(inline: bool) -> None:
            for _ in range(150):
                try:
                    if inline:
                        loaded.invoke(spin, budget=1, cpu_clock=time.perf_counter_ns)
                    else:
                        loaded.invoke(spin)
                except (BudgetExceededError, ModuleTimeoutError):
                    pass
                else:
                    raise AssertionError("an endless loop returned")

        assert ended(rt, lambda: many(True)) is None
        workers = [threading.Thread(target=many, args=(False,), daemon=True) for _ in range(3)]
        for worker in workers:
            worker.start()
        assert ended(rt, lambda: many(False)) is None
        for worker in workers:
            worker.join(timeout=HANG)
            assert not worker.is_alive()
        assert worker_call(loaded, "fast", []) == 7


def test_an_inline_budget_longer_than_the_park_delay_still_stops() -> None:
    """An inline call counts as busy like any other: the ticker does not park under it."""
    with Runtime(park_after=0.005) as rt:
        loaded = load(rt, NUMERIC_WAT, timeout=30)
        spin = loaded.prepare("spin", [])
        until_parked(rt)
        raised = ended(rt, lambda: loaded.invoke(spin, budget=200, cpu_clock=time.perf_counter_ns), hang=3)
        assert isinstance(raised, BudgetExceededError)


# -- over HTTP: a real node process after it has been idle longer than the park delay -------------

IDLE = 1.3  # longer than the default park delay (PARK_AFTER_SECONDS, 1 s): the node's ticker parks


def post(node: StandaloneNode, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        node.url + EXECUTE, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=HANG) as response:  # a hang ends as a failure
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def idle(seconds: float = IDLE) -> None:
    """Leave the node without a call for longer than its park delay (the attack's precondition)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "numeric-1.0.0.wat").write_text(NUMERIC_WAT)
    (modules / "jsonspin-1.0.0.wat").write_text(JSON_WAT)
    (modules / "command-1.0.0.wat").write_text(COMMAND_WAT)
    return modules


def node_of(folder: Path, tmp_path: Path, *flags: str) -> Iterator[StandaloneNode]:
    node = start_standalone(folder, tmp_path / "cache", "--timeout-s", "0.5", *flags)
    try:
        yield node
    finally:
        node.kill()


@pytest.fixture
def node(folder: Path, tmp_path: Path) -> Iterator[StandaloneNode]:
    yield from node_of(folder, tmp_path)


@pytest.fixture
def two_workers(folder: Path, tmp_path: Path) -> Iterator[StandaloneNode]:
    yield from node_of(folder, tmp_path, "--workers", "2")


def timed_out(node: StandaloneNode, module: str, function: str, **extra: Any) -> None:
    status, answer = post(node, {"module": module, "function": function, **extra})
    assert status == 504 and answer["error"] == "timeout", (status, answer)


def serves(node: StandaloneNode) -> None:
    status, answer = post(node, {"module": "numeric", "function": "fast", "args": []})
    assert status == 200, answer


def test_every_kind_of_runaway_stops_on_an_idle_node(node: StandaloneNode) -> None:
    serves(node)
    for module, function, extra in (
        ("numeric", "spin", {"args": []}),  # inline first, then on a worker
        ("jsonspin", "spin", {"args": {"x": 1}}),
        ("command", "_start", {}),
    ):
        idle()
        timed_out(node, module, function, **extra)
        serves(node)


def test_concurrent_runaways_on_an_idle_multi_process_node(two_workers: StandaloneNode) -> None:
    idle()
    answers: list[tuple[int, Any]] = []
    bodies = [
        {"module": "numeric", "function": "spin", "args": []},
        {"module": "jsonspin", "function": "spin", "args": {"x": 1}},
        {"module": "command", "function": "_start"},
        {"module": "numeric", "function": "fast", "args": []},
    ]
    threads = [threading.Thread(target=lambda b=b: answers.append(post(two_workers, b)), daemon=True) for b in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=HANG + 5)
        assert not thread.is_alive(), "a call never answered"
    assert sorted(a[0] for a in answers) == [200, 504, 504, 504], answers
    idle()
    timed_out(two_workers, "numeric", "spin", args=[])
    serves(two_workers)
