"""Every use of wasmtime-py's private API, each behind one small function that says why.

Where it sits: under `edge.runtime` and `edge.coremodule` (core modules), `edge.numeric` (the raw
numeric call) and `edge.component` / `edge.witvalues` (WIT values in and out). No other module
imports `wasmtime._bindings`, `wasmtime._ffi` or `wasmtime._extern`, or reads an underscore
attribute of a wasmtime object (`tests/edge/test_ffi.py` greps for it, and exercises each function
here against the pinned wasmtime-py, so an upgrade that renames a symbol fails there, naming it).

Why private API at all: wasmtime-py's public surface converts and checks every value on each call
(`Func.__call__` costs ~25 us a call, `wasmtime.component.Func.__call__` builds Python objects for
every WIT value), lists all exports of an instance to find one (quadratic in the C API), and has
no in-memory stdin. The C API underneath (wasmtime.h) is stable and versioned with wasmtime; what
is private is wasmtime-py's Python names for it, which is what this module pins down.

The struct fields the callers read and write (`val.kind`, `val.of.s32`, `vec.data[i]`) are the C
API's own layout (wasmtime.h) and stay with the code that lowers and lifts WIT values
(`edge.component`); the types, constructors and calls come from here.

Two functions of the per-request path are bound once, at import, to ctypes function objects
(`set_epoch_deadline`, `call_unchecked`): callers call them directly, with no Python frame of ours
in between (a frame costs about as much as the ~1 us call itself).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any, TypeAlias

import wasmtime
from wasmtime import _bindings, _extern
from wasmtime import _ffi as _wasmtime_ffi

# A pointer to a store's context, which every C API call on that store takes.
Context: TypeAlias = "ctypes._Pointer[_bindings.wasmtime_context_t]"

# -- stores ---------------------------------------------------------------------------------------


def context(store: wasmtime.Store) -> Context:
    """The store's C context. `Store` keeps it private; the raw calls below all take it."""
    return store._context()


def context_key(store: wasmtime.Store | wasmtime.Caller | Any) -> int:
    """The address of the context of a store (or of the store a host call runs in: a `Caller`, or
    a component host function's store context). A host function gets nothing else that names its
    store, so per-store state (a WASI clock's origin, a component call's deadline) is kept by it."""
    return ctypes.addressof(store._context().contents)


def _epoch_deadline_setter() -> Callable[[Context, int], None]:
    """`wasmtime_context_set_epoch_deadline` from the same library opened with `ctypes.PyDLL`, so the
    call keeps the GIL. `Store.set_epoch_deadline` is public but goes through wasmtime-py's shared
    binding, which releases and takes back the GIL: more than the tiny C function costs, on every
    call. Only for functions that never block or run wasm."""
    gil_held = ctypes.PyDLL(_wasmtime_ffi.dll._name)
    setter = gil_held.wasmtime_context_set_epoch_deadline
    setter.argtypes = [ctypes.POINTER(_bindings.wasmtime_context_t), ctypes.c_uint64]
    setter.restype = None
    return setter


# `set_epoch_deadline(ctx, ticks)`: bound once; called directly on every request.
set_epoch_deadline = _epoch_deadline_setter()


def _epoch_incrementer() -> Callable[[Any], None]:
    """`wasmtime_engine_increment_epoch` from the GIL-keeping library (as `set_epoch_deadline`): the
    epoch ticker calls it a thousand times a second, and `Engine.increment_epoch` releases and takes
    back the GIL around an atomic add, a Python frame and a binding's conversion on each tick."""
    gil_held = ctypes.PyDLL(_wasmtime_ffi.dll._name)
    increment = gil_held.wasmtime_engine_increment_epoch
    increment.argtypes = [ctypes.POINTER(_bindings.wasm_engine_t)]
    increment.restype = None
    return increment


# `increment_epoch(engine.ptr())`: bound once; the ticker calls it directly.
increment_epoch = _epoch_incrementer()


# -- core instances -------------------------------------------------------------------------------


def instance_export(ctx: Context, instance: wasmtime.Instance, name: str) -> object:
    """One export of `instance` by name, or None. `Instance.exports(store)` builds the list of all
    of them first, and each entry costs a walk of the list in the C API: quadratic in the exports."""
    item = _bindings.wasmtime_extern_t()
    raw = name.encode()
    found = _bindings.wasmtime_instance_export_get(
        ctx, ctypes.byref(instance._instance), raw, len(raw), ctypes.byref(item)
    )
    return _extern.wrap_extern(item) if found else None


def set_stdin_bytes(config: wasmtime.WasiConfig, data: bytes) -> None:
    """Give a WASI program `data` as its stdin. `WasiConfig` offers a file or the host's own stdin
    only; a request's stdin stays in memory (`wasi_config_set_stdin_bytes` takes the bytes over)."""
    vec = _bindings.wasm_byte_vec_t()
    buf = (_bindings.wasm_byte_t * len(data)).from_buffer_copy(data) if data else None
    _bindings.wasm_byte_vec_new(ctypes.byref(vec), len(data), buf)
    _bindings.wasi_config_set_stdin_bytes(config.ptr(), ctypes.byref(vec))


# -- the raw numeric call (edge.numeric) ----------------------------------------------------------


def raw_values(size: int) -> ctypes.Array[Any]:
    """A buffer of `size` `wasmtime_val_raw_t` (16 bytes each) for `call_unchecked`: arguments in,
    the result out. Allocated once per export and instance, reused by every call."""
    return (_bindings.wasmtime_val_raw_t * size)()


def func_ref(func: wasmtime.Func) -> Any:
    """A C reference to `func`'s `wasmtime_func_t`, the second argument of `call_unchecked`; `Func`
    keeps the struct private."""
    return ctypes.byref(func._func)


def _unchecked_caller() -> Callable[..., int | None]:
    """`wasmtime_func_call_unchecked` as a ctypes function of its own (not the one wasmtime-py's
    bindings share, which converts each argument): every argument is prepared once per export, and
    the error comes back as a plain address. `Func.__call__` checks and converts every value on
    each call (~25 us); this call costs about a microsecond. It releases the GIL (a `CDLL`
    function), so the epoch ticker can interrupt an endless loop."""
    call = _wasmtime_ffi.dll["wasmtime_func_call_unchecked"]
    call.restype = ctypes.c_void_p
    return call


# `call_unchecked(ctx, func_ref, raw_values, size, byref(trap))`: bound once; called directly.
call_unchecked = _unchecked_caller()


def error_from_address(address: int) -> wasmtime.WasmtimeError:
    """The `WasmtimeError` (or `ExitTrap`) owning the `wasmtime_error_t` at `address`, as wasmtime-py
    would raise it; there is no public constructor from a C error."""
    pointer = ctypes.cast(address, ctypes.POINTER(_bindings.wasmtime_error_t))
    return wasmtime.WasmtimeError._from_ptr(pointer)


def trap_from_address(trap: ctypes.c_void_p) -> wasmtime.Trap:
    """The `Trap` owning the `wasm_trap_t` that `call_unchecked` wrote to `trap` (its trap code
    readable); there is no public constructor from a C trap."""
    return wasmtime.Trap._from_ptr(ctypes.cast(trap, ctypes.POINTER(_bindings.wasm_trap_t)))


# -- component values and calls (edge.component) --------------------------------------------------
#
# `wasmtime.component.Func.__call__` converts arguments and results through Python objects of its
# own (Record, Variant...) found by walking the function's type on every call; edge.component
# lowers checked JSON straight into these C values from a type tree read once at load.

ComponentVal = _bindings.wasmtime_component_val_t


def component_kinds() -> dict[str, int]:
    """The `wasmtime_component_valkind_t` of each WIT type kind, by its name in `edge.wasm`."""
    names = (
        "bool", "s8", "s16", "s32", "s64", "u8", "u16", "u32", "u64", "f32", "f64", "char", "string",
        "list", "record", "tuple", "variant", "option", "result", "flags", "enum",
    )  # fmt: skip
    return {name: getattr(_wasmtime_ffi, f"WASMTIME_COMPONENT_{name.upper()}").value for name in names}


def _capi_string() -> Callable[[str], Any]:
    """wasmtime-py's `str_to_capi`: a string as a `wasm_byte_vec_t` that the value it is stored in
    owns (a string, an enum case, a field name). Bound once: called for every string lowered."""
    return _wasmtime_ffi.str_to_capi


capi_string = _capi_string()


def new_list(kind: str, n: int) -> Any:
    """An uninitialised `list` or `tuple` of `n` values (`wasmtime_component_val{list,tuple}_t`)."""
    if kind == "list":
        raw: Any = _bindings.wasmtime_component_vallist_t()
        _bindings.wasmtime_component_vallist_new_uninit(ctypes.byref(raw), n)
    else:
        raw = _bindings.wasmtime_component_valtuple_t()
        _bindings.wasmtime_component_valtuple_new_uninit(ctypes.byref(raw), n)
    return raw


def new_record(n: int) -> Any:
    """An uninitialised record of `n` fields (`wasmtime_component_valrecord_t`)."""
    rec = _bindings.wasmtime_component_valrecord_t()
    _bindings.wasmtime_component_valrecord_new_uninit(ctypes.byref(rec), n)
    return rec


def new_flags(n: int) -> Any:
    """An uninitialised set of `n` flag names (`wasmtime_component_valflags_t`)."""
    flags = _bindings.wasmtime_component_valflags_t()
    _bindings.wasmtime_component_valflags_new_uninit(ctypes.byref(flags), n)
    return flags


def box_val(val: Any) -> Any:
    """A heap copy of `val` that takes over what it owns: the payload of an option, result or
    variant (`wasmtime_component_val_new`)."""
    return _bindings.wasmtime_component_val_new(ctypes.byref(val))


def component_func_ref(func: Any) -> Any:
    """A C reference to a component function's `wasmtime_component_func_t` (kept private by
    `wasmtime.component.Func`): taken once per instance and export, passed to every call."""
    return ctypes.byref(func._func)


def error_from_pointer(error: Any) -> wasmtime.WasmtimeError:
    """The `WasmtimeError` owning a `wasmtime_error_t` pointer that a component call returned (a
    trap inside a component comes back as an error, not a `Trap`: see `edge.instance.is_timeout`)."""
    return wasmtime.WasmtimeError._from_ptr(error)


def _component_calls() -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., None]]:
    """wasmtime-py's bindings of `wasmtime_component_func_call(func_ref, ctx, args, n, results, m)`,
    `wasmtime_component_func_post_return(func_ref, ctx)` (let the component free what the call
    returned, as the C API asks after each call) and `wasmtime_component_val_delete(byref(val))`
    (free what a value owns, nested values and strings included). Bound once and called directly
    by `edge.component` on every call: a frame of ours around each would cost more than lowering a
    small argument."""
    return (
        _bindings.wasmtime_component_func_call,
        _bindings.wasmtime_component_func_post_return,
        _bindings.wasmtime_component_val_delete,
    )


# Each returns a `wasmtime_error_t` pointer (false when it went well) except `delete_val`.
component_call, component_post_return, delete_val = _component_calls()
