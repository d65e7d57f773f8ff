"""The numeric convention: JSON arguments to wasm values, and the raw call of a checked export.

Where it sits: under `edge.coremodule`. `LoadedModule.prepare` turns a call's JSON `args` into the
export's wasm values with `numeric_args` (a 400 naming the argument when one does not fit), and an
instance calls the export through its `RawFunc`, on the event loop or on a worker thread.

* `numeric_args` takes the common case (a JSON array of integers already in the signed range of
  i32/i64, floats for f32/f64) as it is; anything else goes through the full conversion, which
  accepts integral floats for integers, unsigned values (as their two's complement) and integers
  for floats, and says what is wrong with the rest.
* `RawFunc` calls `wasmtime_func_call_unchecked` (`edge._ffi.call_unchecked`, bound once) with
  everything prepared when the instance first calls the export: the argument buffer, the five C
  arguments and the struct layouts that write the parameters into the buffer and read the result
  from it. wasmtime's `Func.__call__` checks and converts every value on each call (~25 µs); this
  costs about a microsecond. The call releases the GIL, so the epoch ticker can interrupt an
  endless loop.
"""

from __future__ import annotations

import ctypes
import json
import math
import struct
from collections.abc import Callable

import wasmtime

from edge import _ffi, wasm
from edge._ffi import call_unchecked
from edge.errors import BadRequestError

I32 = (-(2**31), 2**32 - 1)
I64 = (-(2**63), 2**64 - 1)
# Values taken as they are: integers in the signed range of their type, floats for floats.
_SIGNED = {"i32": (-(2**31), 2**31 - 1), "i64": (-(2**63), 2**63 - 1)}
# One wasmtime_val_raw_t (16 bytes) as struct formats: the value, then padding.
_LAYOUT = {"i32": ("i", "12x"), "i64": ("q", "8x"), "f32": ("f", "12x"), "f64": ("d", "8x")}


def numeric(sig: wasm.FuncSig) -> bool:
    """Whether an export is called with the numeric convention: numbers in, at most one number out."""
    return all(t in wasm.NUMERIC_TYPES for t in (*sig.params, *sig.results)) and len(sig.results) <= 1


def _as_is(params: tuple[str, ...], args: list[object]) -> bool:
    for kind, given in zip(params, args, strict=True):
        if kind[0] == "f":
            if type(given) is not float:
                return False
        else:
            low, high = _SIGNED[kind]
            if type(given) is not int or not low <= given <= high:
                return False
    return True


def numeric_args(function: str, sig: wasm.FuncSig, args: object) -> tuple[int | float, ...]:
    """The wasm values of a call's JSON `args`; BadRequestError naming the first that does not fit."""
    if type(args) is list and len(args) == len(sig.params) and _as_is(sig.params, args):
        return tuple(args)
    if args is None:
        args = []
    if not isinstance(args, list):
        raise BadRequestError(f"args: {function}{sig} takes a JSON array of numbers")
    if len(args) != len(sig.params):
        raise BadRequestError(f"args: {function}{sig} takes {len(sig.params)} argument(s), got {len(args)}")
    values: list[int | float] = []
    for i, (kind, given) in enumerate(zip(sig.params, args, strict=True)):
        if isinstance(given, bool) or not isinstance(given, (int, float)):
            raise BadRequestError(f"args[{i}]: expected a number for {kind}, got {json.dumps(given)[:40]}")
        value: int | float = given
        if kind in ("i32", "i64"):
            if isinstance(value, float):
                if not value.is_integer():
                    raise BadRequestError(f"args[{i}]: {kind} takes an integer, got {value}")
                value = int(value)
            low, high = I32 if kind == "i32" else I64
            if not low <= value <= high:
                raise BadRequestError(f"args[{i}]: {value} does not fit in {kind}")
            bits = 32 if kind == "i32" else 64
            if value >= 2 ** (bits - 1):
                value -= 2**bits
        else:
            value = float(value)
        values.append(value)
    return tuple(values)


def json_number(value: int | float | None) -> int | float | str | None:
    """A numeric result as JSON can carry it: NaN and the infinities as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class RawFunc:
    """An export with a checked numeric signature of one instance, ready for the raw call."""

    __slots__ = ("_args", "_pack", "_trap", "_unpack", "buf", "kinds", "wrapped")

    def __init__(self, ctx: _ffi.Context, func: wasmtime.Func, sig: wasm.FuncSig) -> None:
        self.wrapped = func
        self.kinds = sig.params
        size = max(len(sig.params), len(sig.results), 1)
        self.buf = _ffi.raw_values(size)
        self._trap = ctypes.c_void_p()
        self._args = (ctx, _ffi.func_ref(func), self.buf, ctypes.c_size_t(size), ctypes.byref(self._trap))
        # struct refuses an f32 out of range where ctypes rounds it to infinity: f32 parameters
        # are set field by field.
        self._pack: Callable[..., None] | None = None
        if "f32" not in sig.params:
            self._pack = struct.Struct("<" + "".join("".join(_LAYOUT[k]) for k in sig.params)).pack_into
        self._unpack = struct.Struct("<" + _LAYOUT[sig.results[0]][0]).unpack_from if sig.results else None

    def __call__(self, values: tuple[int | float, ...]) -> int | float | None:
        """Call with `values` (exactly the signature's types); raises wasmtime's error or trap."""
        buf = self.buf
        if self._pack is not None:
            self._pack(buf, 0, *values)
        else:
            for i, kind in enumerate(self.kinds):
                setattr(buf[i], kind, values[i])
        error = call_unchecked(*self._args)  # a ctypes function: no frame of ours in between
        if error:
            raise _ffi.error_from_address(error)
        if self._trap.value:
            trap = _ffi.trap_from_address(self._trap)
            self._trap.value = None
            raise trap
        if self._unpack is None:
            return None
        value: int | float = self._unpack(buf)[0]
        return value
