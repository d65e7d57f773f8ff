"""The three calling conventions, argument checks, and module failures, on both call paths."""

from __future__ import annotations

from typing import Any

import pytest

from edge.coremodule import LoadedModule
from edge.errors import BadRequestError, LoadError, NotFoundError, TrapError
from edge.loaded import Call
from edge.runtime import Runtime, Sandbox
from edge.wasminfo import sha256_digest
from tests.edge.conftest import module_bytes


@pytest.fixture(params=["fast", "safe"])
def any_runtime(request: pytest.FixtureRequest, runtime: Runtime, slow_runtime: Runtime) -> Runtime:
    return runtime if request.param == "fast" else slow_runtime


def call(loaded: LoadedModule, function: str, args: Any) -> Any:
    return loaded.invoke(loaded.prepare(function, args)).value


@pytest.mark.parametrize(
    ("function", "args", "expected"),
    [
        ("add", [2, 3], 5),
        ("add", [-7, 2], -5),
        ("add", [2**32 - 1, 1], 0),  # unsigned i32 input wraps like the wasm add does
        ("mul64", [2**40, 3], 3 * 2**40),
        ("half", [3], 1.5),
        ("scale", [1.5, 2], 3.0),
        ("nothing", [], None),
        ("nothing", None, None),
    ],
)
def test_numeric_exports_take_and_return_numbers(any_runtime: Runtime, function: str, args: Any, expected: Any) -> None:
    loaded = any_runtime.load(module_bytes("arith"), Sandbox())
    assert call(loaded, function, args) == expected


def test_json_convention_passes_utf8_json_through_memory(any_runtime: Runtime) -> None:
    loaded = any_runtime.load(module_bytes("echo"), Sandbox())
    payload = {"name": "Zoë", "items": [1, 2.5, None, True], "nested": {"a": "b" * 5000}}
    assert call(loaded, "echo", payload) == payload
    assert call(loaded, "answer", None) == {"answer": 42}
    # the instance is reused: a second call sees the allocator state of the first and still works
    assert call(loaded, "echo", [1, 2, 3]) == [1, 2, 3]


def test_conventions_are_detected_per_export(runtime: Runtime) -> None:
    echo = runtime.load(module_bytes("echo"), Sandbox())
    assert echo.functions["echo"].convention == "json"
    assert echo.functions["alloc"].convention == "numeric"
    cat = runtime.load(module_bytes("cat"), Sandbox())
    assert cat.functions["_start"].convention == "command"


def test_command_gets_args_as_json_on_stdin_and_stdout_is_the_result(any_runtime: Runtime) -> None:
    loaded = any_runtime.load(module_bytes("cat"), Sandbox())
    assert call(loaded, "_start", {"hello": ["world", 1]}) == {"hello": ["world", 1]}
    assert call(loaded, "_start", "text") == "text"
    assert call(loaded, "_start", None) is None


def test_command_output_that_is_not_json_is_returned_as_text(runtime: Runtime) -> None:
    loaded = runtime.load(module_bytes("env"), Sandbox(env=(("A", "1"),)))
    assert call(loaded, "_start", None) == "A=1\0"


def test_command_stdout_over_the_cap_is_a_failure(runtime: Runtime) -> None:
    loaded = runtime.load(module_bytes("cat"), Sandbox(result_cap=10))
    with pytest.raises(TrapError, match="stdout exceeds the cap of 10 bytes"):
        call(loaded, "_start", "a long string that does not fit")


@pytest.mark.parametrize(
    ("function", "args", "message"),
    [
        ("add", [1], "takes 2 argument"),
        ("add", [1, 2, 3], "takes 2 argument"),
        ("add", {"a": 1}, "JSON array of numbers"),
        ("add", [1, "2"], r"args\[1\]: expected a number"),
        ("add", [True, 2], r"args\[0\]: expected a number"),
        ("add", [1.5, 2], "takes an integer"),
        ("add", [2**32, 0], "does not fit in i32"),
        ("mul64", [2**64, 0], "does not fit in i64"),
    ],
)
def test_wrong_arguments_are_the_clients_mistake(runtime: Runtime, function: str, args: Any, message: str) -> None:
    loaded = runtime.load(module_bytes("arith"), Sandbox())
    with pytest.raises(BadRequestError, match=message):
        loaded.prepare(function, args)


def test_integral_floats_are_accepted_for_integers(runtime: Runtime) -> None:
    loaded = runtime.load(module_bytes("arith"), Sandbox())
    assert call(loaded, "add", [2.0, 3]) == 5


def test_unknown_function_names_the_callable_exports(runtime: Runtime) -> None:
    loaded = runtime.load(module_bytes("arith"), Sandbox())
    with pytest.raises(NotFoundError, match="add, crash, divide"):
        loaded.prepare("missing", [])


@pytest.mark.parametrize(
    ("function", "args", "message"),
    [("divide", [1, 0], "integer divide by zero"), ("crash", [], "unreachable")],
)
def test_a_trap_is_reported_and_the_next_call_works(
    any_runtime: Runtime, function: str, args: list[int], message: str
) -> None:
    loaded = any_runtime.load(module_bytes("arith"), Sandbox())
    with pytest.raises(TrapError, match=message):
        call(loaded, function, args)
    assert call(loaded, "add", [1, 1]) == 2


@pytest.mark.parametrize(
    ("function", "message"),
    [("garbage", "not UTF-8 JSON"), ("outside", "outside memory")],
)
def test_json_results_are_checked(runtime: Runtime, function: str, message: str) -> None:
    loaded = runtime.load(module_bytes("echo"), Sandbox())
    with pytest.raises(TrapError, match=message):
        call(loaded, function, {"x": 1})


def test_json_result_over_the_cap_is_refused(runtime: Runtime) -> None:
    loaded = runtime.load(module_bytes("echo"), Sandbox(result_cap=8))
    with pytest.raises(TrapError, match="exceeds the cap"):
        call(loaded, "echo", "more than eight bytes")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a valid module"),
        (b"\0asm\x01\0\0\0\xff", "not a valid module"),
        (b"hello world", "not a valid module"),
    ],
)
def test_malformed_binaries_do_not_load(runtime: Runtime, data: bytes, message: str) -> None:
    with pytest.raises(LoadError, match=message):
        runtime.load(data, Sandbox())


def test_a_malformed_component_does_not_load(runtime: Runtime) -> None:
    with pytest.raises(LoadError, match="not a valid component"):
        runtime.load_any(b"\0asm\x0d\0\x01\0\xff", Sandbox())


def test_unsatisfiable_imports_do_not_load(runtime: Runtime) -> None:
    from edge.wat import compile_wat

    data = compile_wat('(module (import "env" "host_fn" (func)) (func (export "f")))')
    with pytest.raises(LoadError, match=r"env\.host_fn"):
        runtime.load(data, Sandbox())


def test_digest_mismatch_is_refused(runtime: Runtime) -> None:
    with pytest.raises(LoadError, match="digest mismatch"):
        runtime.load(module_bytes("arith"), Sandbox(), digest="sha256:" + "0" * 64)
    with pytest.raises(LoadError, match="digest mismatch"):
        runtime.load_any(module_bytes("arith"), Sandbox(), digest="sha256:" + "0" * 64)


def test_a_verified_binary_is_loaded_under_the_digest_its_source_checked(runtime: Runtime) -> None:
    """A `BlobSource` checked the bytes against their digest already; the runtime does not hash them again."""
    data = module_bytes("arith")
    loaded = runtime.load_any(data, Sandbox(), digest=sha256_digest(data), verified=True)
    assert loaded.info.digest == sha256_digest(data)
    assert loaded.invoke(loaded.prepare("add", [2, 3])).value == 5


def test_json_results_with_nan_are_not_json(runtime: Runtime) -> None:
    loaded = runtime.load(module_bytes("echo"), Sandbox())
    with pytest.raises(TrapError, match="not UTF-8 JSON"):
        loaded.invoke(Call("echo", "json", payload=b"[NaN]"))
