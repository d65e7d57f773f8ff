"""A loaded core module version: its instances, and numeric, json and command calls.

Where it sits: `edge.runtime.Runtime.load` compiles and links a module, then builds the
`LoadedModule` here on the shared `edge.loaded.LoadedVersion` (pool, call lanes); the server calls
its `prepare` and `invoke` as it does a component's (`edge.component`).

* Each `_Instance` is one `Store` (memory limit and WASI preview 1 context built by `edge.instance`)
  with one instance from the version's `InstancePre`; it registers its WASI clock's zero in the
  runtime's `origins`, which the runtime's `poll_oneoff` reads for absolute monotonic sleeps.
* Calling conventions (decided by `edge.wasm`): numeric, json (alloc + memory, result packed as
  `(ptr << 32) | len`) and command (`_start` in a fresh instance: `argv` (the module's default, or
  `[module name]`) and raw `stdin` from the request, or the args as JSON on stdin; stdout is the
  result, parsed as JSON when it parses; exit status 0 is a success and any other an `ExitError`
  with the tail of stderr).
* Numeric and json calls go through `edge.numeric`'s raw call with a buffer preallocated per
  instance, made only for exports whose signature was checked at load; `fast_path=False` on the
  runtime uses `Func.__call__` instead.
* `failure` says what a failed call was: a timeout, the memory limit, an exit status, or a trap.
"""

from __future__ import annotations

import ctypes
import json
import math
import time
import weakref
from collections.abc import Callable
from math import isfinite
from typing import TYPE_CHECKING, Any

import wasmtime

from edge import _ffi, wasm
from edge._ffi import set_epoch_deadline
from edge.errors import (
    BadRequestError,
    ExitError,
    MemoryLimitError,
    ModuleError,
    ModuleTimeoutError,
    TrapError,
)
from edge.instance import MIB, Capture, Sandbox, first_line, is_timeout, new_store, wasi_config
from edge.loaded import (
    CALL,
    BudgetExceededError,
    Call,
    CallResult,
    LoadedVersion,
    refuse_command_input,
    unknown_function,
)
from edge.numeric import RawFunc, json_number, numeric, numeric_args
from edge.protocol import MAX_ARGV, MAX_RESULT_DEPTH, may_nest_deeper, nests_deeper

if TYPE_CHECKING:
    from edge.runtime import Runtime

STDERR_TAIL = 4096  # characters of a command's stderr (and of its stdout, on failure) in an answer
BLOCKING_WASI = frozenset({"poll_oneoff"})
# Traps that say what went wrong, whatever the memory looks like: never reported as `memory`.
NEVER_MEMORY = frozenset(
    {
        wasmtime.TrapCode.STACK_OVERFLOW,
        wasmtime.TrapCode.INTEGER_DIVISION_BY_ZERO,
        wasmtime.TrapCode.INTEGER_OVERFLOW,
        wasmtime.TrapCode.BAD_CONVERSION_TO_INTEGER,
        wasmtime.TrapCode.INDIRECT_CALL_TO_NULL,
        wasmtime.TrapCode.BAD_SIGNATURE,
    }
)


class _Instance:
    """One store and one instance of a module version, used by one thread at a time."""

    def __init__(self, owner: LoadedModule, stdin: bytes | None = None, argv: tuple[str, ...] | None = None) -> None:
        sandbox = owner.sandbox
        self.owner = owner
        # One instance and its tables (a component's store holds many: `edge.component`).
        self.store = new_store(
            owner.runtime.engine, sandbox, instances=1, tables=16, ticks=owner.runtime.ticks(sandbox.timeout_seconds)
        )
        origin = time.monotonic_ns()  # where the WASI monotonic clock of this store starts
        self.stdout = Capture(sandbox.result_cap if stdin is not None else sandbox.log_cap)
        self.stderr = Capture(sandbox.log_cap)
        self.store.set_wasi(
            wasi_config(sandbox, self.stdout, self.stderr, argv=sandbox.argv if argv is None else argv, stdin=stdin)
        )
        origins = owner.runtime.origins
        key = _ffi.context_key(self.store)
        origins[key] = origin
        weakref.finalize(self.store, _forget_origin, origins, key, origin)
        self.memory: wasmtime.Memory | None = None
        try:
            instance = owner.pre.instantiate(self.store)
        except Exception as exc:
            raise self.failure(exc, None) from None
        self.ctx = _ffi.context(self.store)
        self.instance = instance
        memory = self._export("memory")
        self.memory = memory if isinstance(memory, wasmtime.Memory) else None
        self.raw: dict[str, RawFunc] = {}
        self.fast_path = owner.runtime.fast_path

    def close(self) -> None:
        """Nothing to release by hand: the store goes with the last reference to it."""

    def _export(self, name: str) -> object:
        """One export by name (listing all of them is quadratic in wasmtime's C API)."""
        return _ffi.instance_export(self.ctx, self.instance, name)

    def _raw(self, name: str) -> RawFunc:
        rf = self.raw.get(name)
        if rf is None:
            export = self.owner.functions.get(name)
            func = self._export(name)
            if export is None or export.sig is None or not numeric(export.sig) or not isinstance(func, wasmtime.Func):
                raise TrapError(f"{name} is not a numeric export")  # prepare() never lets this happen
            rf = self.raw[name] = RawFunc(self.ctx, func, export.sig)
        return rf

    # -- calling ------------------------------------------------------------------------------

    def call(self, name: str, values: tuple[int | float, ...]) -> int | float | None:
        rf = self.raw.get(name) or self._raw(name)
        if not self.fast_path:
            result: int | float | None = rf.wrapped(self.store, *values)
            return result
        return rf(values)

    def run_json(self, name: str, payload: bytes) -> Any:
        if self.memory is None:
            raise TrapError("the module exports no memory")
        ptr = self.call("alloc", (len(payload),))
        assert isinstance(ptr, int)
        base, size = self._memory_view()
        ptr &= 0xFFFFFFFF
        if ptr + len(payload) > size:
            raise TrapError(f"alloc returned {ptr}, outside memory of {size} bytes")
        ctypes.memmove(base + ptr, payload, len(payload))
        packed = self.call(name, (ptr, len(payload)))
        assert isinstance(packed, int)
        packed &= 0xFFFFFFFFFFFFFFFF
        out_ptr, out_len = packed >> 32, packed & 0xFFFFFFFF
        base, size = self._memory_view()
        if out_ptr + out_len > size:
            raise TrapError(f"result at {out_ptr}+{out_len} lies outside memory of {size} bytes")
        if out_len > self.owner.sandbox.result_cap:
            raise TrapError(f"result of {out_len} bytes exceeds the cap of {self.owner.sandbox.result_cap}")
        raw = ctypes.string_at(base + out_ptr, out_len)
        try:
            return _loads_result(raw)
        except ValueError:
            raise TrapError(f"result is not UTF-8 JSON: {raw[:80]!r}") from None

    def run_command(self) -> Any:
        try:
            self.call("_start", ())
        except wasmtime.ExitTrap as exc:
            if exc.code != 0:
                raise self.exited(exc.code) from None
        if self.stdout.truncated:
            raise TrapError(f"stdout exceeds the cap of {self.stdout.cap} bytes")
        text = bytes(self.stdout.data).decode("utf-8", "replace")
        try:
            return _loads_result(text)
        except ValueError:
            return text

    def _memory_view(self) -> tuple[int, int]:
        assert self.memory is not None
        pointer = self.memory.data_ptr(self.store)
        return ctypes.addressof(pointer.contents), self.memory.data_len(self.store)

    # -- failures -----------------------------------------------------------------------------

    def exited(self, code: int) -> ModuleError:
        """The error of a command that exited with `code` (not 0). A program whose allocator was
        refused memory usually exits (CPython: MemoryError, status 1) rather than trapping: when its
        memory stands within a sixteenth of the limit, that is reported as the memory limit."""
        stderr = self.stderr.tail(STDERR_TAIL)
        if self.near_memory_cap():
            detail = stderr.splitlines()[-1] if stderr else ""
            return MemoryLimitError(
                f"exited with status {code} at its memory limit of {self.owner.sandbox.memory_bytes // MIB} MB"
                + (f": {detail}" if detail else "")
            )
        stdout = bytes(self.stdout.data[-STDERR_TAIL:]).decode("utf-8", "replace")
        return ExitError(code, stderr, stdout or None)

    def near_memory_cap(self) -> bool:
        """Within a sixteenth of the limit (at least 1 MiB): where an allocator is refused more."""
        cap = self.owner.sandbox.memory_bytes
        return self._within(cap, max(MIB, cap // 16))

    def at_memory_cap(self) -> bool:
        """Not one more page fits."""
        return self._within(self.owner.sandbox.memory_bytes, wasm.PAGE_BYTES)

    def _within(self, cap: int, margin: int) -> bool:
        if self.memory is None:
            return False
        try:
            size = self.memory.data_len(self.store)
        except Exception:
            return False
        return size + margin > cap

    def failure(self, exc: BaseException, budget: int | None) -> Exception:
        """The error a failed call becomes: a timeout, a memory violation, or a trap."""
        if isinstance(exc, (BadRequestError, ModuleError)):
            return exc
        # `expired`: our poll_oneoff cut a sleep short at the deadline (a trap of its own, no code).
        if getattr(CALL, "expired", False) or is_timeout(exc):
            if budget is not None:
                return BudgetExceededError()
            return ModuleTimeoutError(f"stopped after its timeout of {self.owner.sandbox.timeout_seconds:g}s")
        message = first_line(exc)
        if "memory" in message and ("limit" in message or "exceeds" in message):
            return MemoryLimitError(f"memory limit of {self.owner.sandbox.memory_bytes // MIB} MB: {message}")
        # A trap at the memory cap is an allocator that gave up (unreachable, or a bad address it
        # went on with); a stack overflow or an arithmetic trap is not, however full the memory
        # that earlier calls on this pooled instance left behind.
        if not (isinstance(exc, wasmtime.Trap) and exc.trap_code in NEVER_MEMORY) and self.at_memory_cap():
            return MemoryLimitError(
                f"trapped at its memory limit of {self.owner.sandbox.memory_bytes // MIB} MB: {message}"
            )
        if isinstance(exc, wasmtime.ExitTrap):
            return self.exited(exc.code) if exc.code else TrapError("exited with status 0 before it returned")
        detail = self.stderr.tail()
        return TrapError(message + (f" (stderr: {detail})" if detail else ""))


class LoadedModule(LoadedVersion["_Instance"]):
    """A compiled, linked module version with its sandbox and a pool of idle instances."""

    def __init__(
        self,
        runtime: Runtime,
        info: wasm.ModuleInfo,
        module: wasmtime.Module,
        pre: wasmtime.InstancePre,
        sandbox: Sandbox,
        *,
        from_cache: bool = False,
    ) -> None:
        self.module = module
        self.pre = pre
        self.functions = {n: e for n, e in info.functions().items() if e.convention is not None}
        # Per export, what a call's check and lane need, looked up once per request.
        self._numeric = {n: e.sig for n, e in self.functions.items() if e.convention == "numeric" and e.sig}
        inline = frozenset(n for n, e in self.functions.items() if e.convention in ("numeric", "json"))
        super().__init__(runtime, info, sandbox, inline=inline, from_cache=from_cache)

    def _blocking(self) -> bool:
        return any(i.name in BLOCKING_WASI for i in self.info.wasi_imports)

    def _new_instance(self) -> _Instance:
        return _Instance(self)

    def _keeps_instances(self) -> bool:
        return any(e.convention != "command" for e in self.functions.values())

    def prepare(
        self, function: str, args: Any, *, argv: tuple[str, ...] | None = None, stdin: bytes | None = None
    ) -> Call:
        sig = self._numeric.get(function)
        if sig is not None and argv is None and stdin is None:  # the execute path's common call
            return Call(function, "numeric", numeric_args(function, sig, args))
        export = self.functions.get(function)
        if export is None:
            raise unknown_function(function, self.functions)
        assert export.sig is not None and export.convention is not None
        if export.convention == "command":
            return command_call(function, args, argv, stdin)
        if argv is not None or stdin is not None:  # the execute path: no call when there is nothing to refuse
            refuse_command_input(function, export.convention, argv, stdin)
        if export.convention == "numeric":
            return Call(function, "numeric", numeric_args(function, export.sig, args))
        payload = json.dumps(args, separators=(",", ":"), allow_nan=False).encode()
        return Call(function, export.convention, payload=payload)

    def _invoke(
        self, call: Call, ticks: int, budget: int | None, cpu_clock: Callable[[], int], seconds: float
    ) -> CallResult:
        started = cpu_clock()
        convention = call.convention
        if convention == "command":
            value, stderr = self._invoke_command(call, ticks)
            return CallResult(value, cpu_clock() - started, exit_code=0, stderr=stderr)
        idle = self._idle
        inst = idle.pop() if idle else self._new_instance()
        set_epoch_deadline(inst.ctx, ticks)
        try:
            if convention == "numeric":
                value = inst.call(call.function, call.values)
                if type(value) is float and not isfinite(value):
                    value = json_number(value)
            else:
                value = inst.run_json(call.function, call.payload)
        except Exception as exc:
            raise inst.failure(exc, budget) from None
        out, err = inst.stdout, inst.stderr
        if out.data or err.data or out.truncated or err.truncated:  # what the call printed goes with it
            out.reset()
            err.reset()
        self._give_back(inst)
        return CallResult(value, cpu_clock() - started)

    def _invoke_command(self, call: Call, ticks: int) -> tuple[Any, str]:
        inst = _Instance(self, stdin=call.payload, argv=call.argv)
        inst.store.set_epoch_deadline(ticks)
        try:
            return inst.run_command(), inst.stderr.tail(STDERR_TAIL)
        except Exception as exc:
            raise inst.failure(exc, None) from None


def command_call(function: str, args: Any, argv: tuple[str, ...] | None, stdin: bytes | None) -> Call:
    """A command's call: raw `stdin` (or, when neither argv nor stdin is given, the args as JSON on
    stdin, the older convention) and `argv` (None: the sandbox's)."""
    if stdin is not None and args is not None:
        raise BadRequestError("args and stdin: give one; a command reads either the args as JSON or stdin")
    if argv is not None and len(argv) > MAX_ARGV:
        raise BadRequestError(f"argv: {len(argv)} arguments, at most {MAX_ARGV}")
    if argv is not None and any("\0" in word for word in argv):
        raise BadRequestError("argv: a word holds a NUL character, which a C string cannot")
    if stdin is None:
        stdin = (
            b""
            if argv is not None and args is None
            else json.dumps(args, separators=(",", ":"), allow_nan=False).encode()
        )
    return Call(function, "command", payload=stdin, argv=argv)


def _forget_origin(origins: dict[int, int], key: int, origin: int) -> None:
    """Drop a freed store's clock origin, unless a new store at the same address has set its own."""
    if origins.get(key) == origin:
        origins.pop(key, None)


def _loads_result(raw: bytes | str) -> Any:
    """A module's JSON result (ValueError when it is not JSON, or holds a number out of a double's
    range, such as 1e400, which no JSON answer can carry). One that nests deeper than
    MAX_RESULT_DEPTH is a trap: answering it would exhaust the recursion limit of the encoder."""
    try:
        value = json.loads(raw, parse_constant=_no_constants, parse_float=_finite)
    except RecursionError:
        value = None
    else:
        if not (may_nest_deeper(raw, MAX_RESULT_DEPTH) and nests_deeper(value, MAX_RESULT_DEPTH)):
            return value
    raise TrapError(f"the result nests arrays and objects deeper than {MAX_RESULT_DEPTH} levels")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of range for a JSON answer")
    return value


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
