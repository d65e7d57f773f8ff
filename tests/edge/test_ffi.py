"""`edge._ffi` against the pinned wasmtime-py: one test per private symbol it uses, and a scan
that keeps every other module of the tree off wasmtime-py's private API.

A wasmtime-py upgrade that renames or reshapes one of these symbols fails here, naming it (and
the function of `edge._ffi` to update), instead of somewhere deep in a call on a node.
"""

from __future__ import annotations

import ast
import ctypes
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import pytest
import wasmtime
import wasmtime.component as wc

from edge import _ffi, wasm
from edge.instance import Capture, is_timeout
from edge.witvalues import lift, lower

ROOT = Path(__file__).resolve().parents[2]
MODULES = Path(__file__).resolve().parent / "modules"
HELLO = ROOT / "fleet-example" / "wasm" / "hello-1.0.0.wasm"
WASMTIME = version("wasmtime")

CORE = """
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (import "host" "where" (func $where))
  (memory (export "memory") 1)
  (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
  (func (export "exit") (param i32) (call $exit (local.get 0)))
  (func (export "boom") unreachable)
  (func (export "spin") (loop $l (br $l)))
  (func (export "where") (call $where)))
"""


@contextmanager
def uses(symbol: str, function: str) -> Iterator[None]:
    """Turn a missing or reshaped private symbol into a failure that names it."""
    try:
        yield
    except (AttributeError, TypeError, KeyError, ctypes.ArgumentError) as exc:
        pytest.fail(
            f"wasmtime-py {WASMTIME} changed {symbol} ({type(exc).__name__}: {exc}); update edge._ffi.{function}",
            pytrace=False,
        )


class Core:
    """A store with WASI and one instance of CORE; `host_keys` records the context key a host
    function sees."""

    def __init__(self) -> None:
        self.engine = wasmtime.Engine(_epoch_config())
        self.store = wasmtime.Store(self.engine)
        self.store.set_wasi(wasmtime.WasiConfig())
        self.store.set_epoch_deadline(1_000_000)
        self.host_keys: list[int] = []
        linker = wasmtime.Linker(self.engine)
        linker.define_wasi()
        linker.define_func("host", "where", wasmtime.FuncType([], []), self._where, access_caller=True)
        module = wasmtime.Module(self.engine, wasm.compile_wat(CORE))
        self.instance = linker.instantiate(self.store, module)

    def _where(self, caller: wasmtime.Caller) -> None:
        self.host_keys.append(_ffi.context_key(caller))

    def func(self, name: str) -> wasmtime.Func:
        func = self.instance.exports(self.store)[name]
        assert isinstance(func, wasmtime.Func)
        return func

    def call_raw(self, name: str, *values: int) -> tuple[int | None, ctypes.c_void_p, ctypes.Array[ctypes.Union]]:
        """`call_unchecked` on an i32 export: (error address, trap out-pointer, the value buffer)."""
        buf = _ffi.raw_values(max(len(values), 1))
        for i, value in enumerate(values):
            buf[i].i32 = value
        trap = ctypes.c_void_p()
        error = _ffi.call_unchecked(
            _ffi.context(self.store), _ffi.func_ref(self.func(name)), buf, ctypes.c_size_t(len(buf)), ctypes.byref(trap)
        )
        return error, trap, buf


def _epoch_config() -> wasmtime.Config:
    config = wasmtime.Config()
    config.epoch_interruption = True
    return config


# -- stores ---------------------------------------------------------------------------------------


def test_context_is_the_stores_c_context() -> None:
    core = Core()
    with uses("Store._context / wasmtime._bindings.wasmtime_context_t", "context"):
        ctx = _ffi.context(core.store)
        assert ctypes.addressof(ctx.contents) == _ffi.context_key(core.store)


def test_context_key_is_the_same_for_the_store_and_a_host_call_in_it() -> None:
    core = Core()
    with uses("Caller._context", "context_key"):
        core.func("where")(core.store)
    assert core.host_keys == [_ffi.context_key(core.store)]
    assert _ffi.context_key(Core().store) != core.host_keys[0]


def test_set_epoch_deadline_keeps_the_gil_and_stops_an_endless_loop() -> None:
    core = Core()
    with uses("wasmtime._ffi.dll / wasmtime_context_set_epoch_deadline", "set_epoch_deadline"):
        assert isinstance(_ffi.set_epoch_deadline, ctypes._CFuncPtr)  # bound once, no Python frame
        assert _ffi.set_epoch_deadline._flags_ & ctypes._FUNCFLAG_PYTHONAPI  # a PyDLL function: keeps the GIL
        _ffi.set_epoch_deadline(_ffi.context(core.store), 1)
    core.engine.increment_epoch()
    with pytest.raises(wasmtime.Trap) as trap:
        core.func("spin")(core.store)
    assert trap.value.trap_code == wasmtime.TrapCode.INTERRUPT
    assert is_timeout(trap.value)


def test_increment_epoch_keeps_the_gil_and_moves_the_engine_past_a_deadline() -> None:
    core = Core()
    _ffi.set_epoch_deadline(_ffi.context(core.store), 1)
    with uses("wasmtime._ffi.dll / wasmtime_engine_increment_epoch", "increment_epoch"):
        assert isinstance(_ffi.increment_epoch, ctypes._CFuncPtr)
        assert _ffi.increment_epoch._flags_ & ctypes._FUNCFLAG_PYTHONAPI
        _ffi.increment_epoch(core.engine.ptr())
    with pytest.raises(wasmtime.Trap) as trap:
        core.func("add")(core.store, 1, 2)  # the deadline was one tick away: the tick has passed it
    assert trap.value.trap_code == wasmtime.TrapCode.INTERRUPT


# -- core instances -------------------------------------------------------------------------------


def test_instance_export_finds_one_export_by_name() -> None:
    core = Core()
    ctx = _ffi.context(core.store)
    with uses("Instance._instance / wasmtime_instance_export_get / wasmtime._extern.wrap_extern", "instance_export"):
        memory = _ffi.instance_export(ctx, core.instance, "memory")
        add = _ffi.instance_export(ctx, core.instance, "add")
        missing = _ffi.instance_export(ctx, core.instance, "nothing")
    assert isinstance(memory, wasmtime.Memory)
    assert isinstance(add, wasmtime.Func) and add(core.store, 2, 3) == 5
    assert missing is None


def test_set_stdin_bytes_hands_a_program_its_stdin() -> None:
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    config = wasmtime.WasiConfig()
    stdout = Capture(1024)
    config.stdout_custom = stdout
    config.stderr_custom = Capture(1024)
    with uses("wasm_byte_vec_new / wasi_config_set_stdin_bytes / WasiConfig.ptr", "set_stdin_bytes"):
        _ffi.set_stdin_bytes(config, b"from memory")
    store.set_wasi(config)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    module = wasmtime.Module(engine, wasm.compile_wat((MODULES / "cat.wat").read_text()))
    start = linker.instantiate(store, module).exports(store)["_start"]
    assert isinstance(start, wasmtime.Func)
    start(store)
    assert bytes(stdout.data) == b"from memory"


# -- the raw numeric call -------------------------------------------------------------------------


def test_call_unchecked_calls_through_a_preallocated_buffer() -> None:
    core = Core()
    with uses("wasmtime_func_call_unchecked / wasmtime_val_raw_t / Func._func", "call_unchecked"):
        assert isinstance(_ffi.call_unchecked, ctypes._CFuncPtr)  # bound once, no Python frame
        assert not _ffi.call_unchecked._flags_ & ctypes._FUNCFLAG_PYTHONAPI  # releases the GIL: the ticker runs
        error, trap, buf = core.call_raw("add", 40, 2)
    assert error is None and trap.value is None
    assert buf[0].i32 == 42


def test_error_from_address_is_the_error_wasmtime_py_raises() -> None:
    core = Core()
    error, trap, _ = core.call_raw("exit", 3)
    assert error and trap.value is None
    with uses("WasmtimeError._from_ptr / wasmtime_error_t", "error_from_address"):
        exc = _ffi.error_from_address(error)
    assert isinstance(exc, wasmtime.ExitTrap) and exc.code == 3


def test_trap_from_address_keeps_the_trap_code() -> None:
    core = Core()
    error, trap, _ = core.call_raw("boom")
    assert error is None and trap.value
    with uses("Trap._from_ptr / wasm_trap_t", "trap_from_address"):
        exc = _ffi.trap_from_address(trap)
    assert isinstance(exc, wasmtime.Trap) and exc.trap_code == wasmtime.TrapCode.UNREACHABLE
    assert not is_timeout(exc)


# -- component values and calls -------------------------------------------------------------------


def test_component_kinds_name_every_wit_kind_once() -> None:
    with uses("wasmtime._ffi.WASMTIME_COMPONENT_*", "component_kinds"):
        kinds = _ffi.component_kinds()
    assert len(kinds) == 21 and len(set(kinds.values())) == 21


def _roundtrip(t: wasm.WitType, value: object) -> object:
    val = _ffi.ComponentVal()
    lower(t, value, val)
    try:
        return lift(t, val)
    finally:
        _ffi.delete_val(ctypes.byref(val))


def _wit(
    kind: str,
    *items: wasm.WitType,
    cases: tuple[tuple[str, wasm.WitType | None], ...] = (),
    names: tuple[str, ...] = (),
) -> wasm.WitType:
    return wasm.WitType(kind, items=items, cases=cases, names=names)


S32 = _wit("s32")
STRING = _wit("string")


def test_capi_string_carries_a_string() -> None:
    with uses("wasmtime._ffi.str_to_capi / wasmtime_component_val_t", "capi_string"):
        assert _roundtrip(STRING, "héllo") == "héllo"
        assert _roundtrip(_wit("enum", names=("red", "blue")), "blue") == "blue"


@pytest.mark.parametrize("kind", ["list", "tuple"])
def test_new_list_builds_lists_and_tuples(kind: str) -> None:
    t = _wit("list", S32) if kind == "list" else _wit("tuple", S32, STRING)
    value = [1, 2, 3] if kind == "list" else [7, "seven"]
    with uses(f"wasmtime_component_val{kind}_t / _new_uninit", "new_list"):
        assert _roundtrip(t, value) == value


def test_new_record_builds_a_record() -> None:
    t = _wit("record", cases=(("x", S32), ("name", STRING)))
    with uses("wasmtime_component_valrecord_t / _new_uninit", "new_record"):
        assert _roundtrip(t, {"x": -1, "name": "p"}) == {"x": -1, "name": "p"}


def test_new_flags_builds_a_set_of_flags() -> None:
    t = _wit("flags", names=("read", "write", "exec"))
    with uses("wasmtime_component_valflags_t / _new_uninit", "new_flags"):
        assert _roundtrip(t, ["read", "exec"]) == ["read", "exec"]


def test_box_val_carries_the_payload_of_an_option_and_a_result() -> None:
    with uses("wasmtime_component_val_new", "box_val"):
        assert _roundtrip(_wit("option", STRING), ("inside",)) == "inside"
        assert _roundtrip(_wit("result", cases=(("ok", S32), ("err", STRING))), (False, "bad")) == {"err": "bad"}


def test_delete_val_frees_a_value_and_what_it_owns() -> None:
    t = _wit("list", _wit("record", cases=(("name", STRING),)))
    for _ in range(1000):  # a double free or a wrong layout crashes here, not on a node
        val = _ffi.ComponentVal()
        lower(t, [{"name": "a" * 100}] * 10, val)
        with uses("wasmtime_component_val_delete", "delete_val"):
            _ffi.delete_val(ctypes.byref(val))


def test_component_call_and_post_return_call_an_export() -> None:
    engine = wasmtime.Engine()
    component = wc.Component(engine, HELLO.read_bytes())
    greet = next(f for f in wasm.component_functions(component, engine) if f.name.endswith("#greet"))
    assert greet.result is not None
    store = wasmtime.Store(engine)
    store.set_wasi(wasmtime.WasiConfig())
    linker = wc.Linker(engine)
    linker.add_wasip2()
    instance = linker.instantiate(store, component)
    interface, _, name = greet.name.partition("#")
    func = instance.get_func(store, instance.get_export_index(store, name, instance.get_export_index(store, interface)))
    ctx = _ffi.context(store)
    with uses("component Func._func", "component_func_ref"):
        ref = _ffi.component_func_ref(func)
    for who in ("world", "again"):  # each call followed by its post-return, as edge.component does
        args = (_ffi.ComponentVal * 1)()
        lower(greet.params[0][1], who, args[0])
        result = _ffi.ComponentVal()
        with uses("wasmtime_component_func_call", "component_call"):
            error = _ffi.component_call(ref, ctx, args, 1, ctypes.byref(result), 1)
        assert not error
        assert lift(greet.result, result) == {"text": f"hello, {who}", "length": 7 + len(who)}
        _ffi.delete_val(ctypes.byref(result))
        _ffi.delete_val(ctypes.byref(args[0]))
        with uses("wasmtime_component_func_post_return", "component_post_return"):
            assert not _ffi.component_post_return(ref, ctx)


def test_error_from_pointer_is_the_error_of_a_component_call() -> None:
    engine = wasmtime.Engine()
    component = wc.Component(engine, HELLO.read_bytes())
    store = wasmtime.Store(engine)
    store.set_wasi(wasmtime.WasiConfig())
    linker = wc.Linker(engine)
    linker.add_wasip2()
    instance = linker.instantiate(store, component)
    greet = instance.get_func(
        store, instance.get_export_index(store, "greet", instance.get_export_index(store, "example:hello/greet@1.0.0"))
    )
    args = (_ffi.ComponentVal * 1)()
    # No arguments for a function that takes one: the C API refuses the call with an error.
    error = _ffi.component_call(_ffi.component_func_ref(greet), _ffi.context(store), args, 0, None, 0)
    assert error
    with uses("WasmtimeError._from_ptr / wasmtime_error_t", "error_from_pointer"):
        exc = _ffi.error_from_pointer(error)
    assert isinstance(exc, wasmtime.WasmtimeError) and not is_timeout(exc)
    assert str(exc)


# -- nobody else -----------------------------------------------------------------------------------

PRIVATE_MODULES = ("wasmtime._", "wasmtime.component._")


def _private_attributes() -> frozenset[str]:
    """Underscore attributes of wasmtime-py's public classes (`_func`, `_context`, `_from_ptr`...)."""
    names: set[str] = set()
    for module in (wasmtime, wc):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__.startswith("wasmtime"):
                members = (*dir(cls), *getattr(cls, "__annotations__", {}))
                names.update(n for n in members if n.startswith("_") and not n.startswith("__"))
    return frozenset(names)


def _private_uses(path: Path, private: frozenset[str]) -> Iterator[str]:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found = [a.name for a in node.names if a.name.startswith(PRIVATE_MODULES)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "wasmtime":
            found = [
                f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}".startswith(PRIVATE_MODULES)
            ]
            found += [node.module] if node.module.startswith(PRIVATE_MODULES) else []
        elif isinstance(node, ast.Attribute) and node.attr in private:
            # Our own classes' attributes (`self._instance`, `cls._instance`) are not wasmtime's.
            own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            found = [] if own else [f".{node.attr}"]
        else:
            found = []
        for what in found:
            yield f"{path.relative_to(ROOT)}:{node.lineno}: {what}"


def test_only_edge_ffi_touches_wasmtime_pys_private_api() -> None:
    private = _private_attributes()
    assert {"_context", "_func", "_instance", "_from_ptr"} <= private  # the scan still knows what to look for
    ffi_module = ROOT / "edge" / "_ffi.py"
    assert list(_private_uses(ffi_module, private)), "the scan finds what edge/_ffi.py does"
    offenders = [
        use
        for package in ("edge", "reconciler", "hotswap")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != ffi_module
        for use in _private_uses(path, private)
    ]
    assert not offenders, "wasmtime-py's private API outside edge/_ffi.py (wrap it there):\n" + "\n".join(offenders)
