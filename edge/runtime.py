"""The wasmtime runtime of an edge node: compile, cache, sandbox, instantiate, call.

Where it sits: the router (`edge.router`) asks the runtime to `load` the bytes of a module version
it was assigned, and the server calls `LoadedModule.prepare` (on the event loop: argument checks,
4xx) then `LoadedModule.invoke` (on the loop for calls known to be short, or on a worker thread).

* One `Engine` with epoch interruption; a ticker thread advances the epoch every millisecond and
  each call sets its deadline in ticks, so an endless loop stops at its timeout.
* Modules are compiled once: the precompiled artifact goes to the on-disk cache (`edge.cache`),
  keyed by digest and engine settings, and a restart loads it with `Module.deserialize_file`;
  the last few compiled modules also stay in memory by digest, for versions swapped back in.
* Each `Store` gets the module's memory limit (`Store.set_limits`) and a WASI preview 1 context
  (both built by `edge.instance`, as for components) from its capabilities only: no inherited
  environment, listed variables only, listed directories only (read-only unless `rw`, and only
  under the node's allowed roots: `edge.grants`), stdout and stderr captured and capped. Every
  WASI preview 1 function is linked, `sock_*` included (wasi-libc and Rust's std import them in
  most programs), but no socket is ever handed in, so they fail with EBADF/ENOTSOCK and there is
  no network.
* A `Store` belongs to one thread at a time: every call takes an idle instance from the version's
  pool (or instantiates one from the `InstancePre`) and gives it back afterwards. A failed call
  discards its instance; the next call gets a fresh one.
* Calling conventions (decided by `edge.wasm`): numeric, json (alloc + memory, result packed as
  `(ptr << 32) | len`) and command (`_start` in a fresh instance: `argv` (the module's default, or
  `[module name]`) and raw `stdin` from the request, or the args as JSON on stdin; stdout is the
  result, parsed as JSON when it parses; exit status 0 is a success and any other an `ExitError`
  with the tail of stderr).
  Numeric and json calls go through `wasmtime_func_call_unchecked` (`edge.numeric`; like every
  use of wasmtime-py's private API, bound in `edge._ffi`) with a buffer preallocated per instance;
  that raw call is only made for exports whose signature was checked at load, with arguments
  converted to exactly those types. `fast_path=False` uses `Func.__call__` instead.
* Components (WASI preview 2, the `component` convention) load through `load_any`, which hands
  them to `edge.component`; the result has the same `prepare`/`invoke` surface (`Loaded`).
"""

from __future__ import annotations

import ctypes
import gc
import json
import math
import platform
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import replace
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeAlias, TypeVar

import wasmtime

from edge import _ffi, wasm
from edge._ffi import set_epoch_deadline
from edge.cache import MODULE, ModuleCache, engine_key
from edge.errors import (
    BadRequestError,
    ExitError,
    LoadError,
    MemoryLimitError,
    ModuleError,
    ModuleTimeoutError,
    NotFoundError,
    TrapError,
)
from edge.grants import GrantRoots
from edge.instance import MIB, RESULT_CAP, Capture, DirGrant, Sandbox, first_line, is_timeout, new_store, wasi_config
from edge.numeric import RawFunc, json_number, numeric, numeric_args
from edge.protocol import MAX_ARGV, MAX_RESULT_DEPTH, may_nest_deeper, nests_deeper

if TYPE_CHECKING:
    from edge.component import LoadedComponent

# The sandbox and its sizes live in `edge.instance` (shared with components); they are named from
# here too, where the router, `hotswap exec` and the tests have always taken them.
__all__ = [
    "MIB",
    "RESULT_CAP",
    "BudgetExceededError",
    "Call",
    "CallResult",
    "DirGrant",
    "Loaded",
    "LoadedModule",
    "LoadedVersion",
    "Runtime",
    "Sandbox",
    "Ticker",
    "command_call",
    "refuse_command_input",
]

TICK_SECONDS = 0.001
STDERR_TAIL = 4096  # characters of a command's stderr (and of its stdout, on failure) in an answer
MAX_IDLE_INSTANCES = 16
BLOCKING_WASI = frozenset({"poll_oneoff"})
RECENT_MODULES = 64  # compiled modules kept in memory by digest, for a version swapped back in
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


_CALL = threading.local()  # `deadline`: when the call running on this thread must stop (time.monotonic)
_EFAULT, _EINVAL = 21, 28  # WASI errno values


class BudgetExceededError(Exception):
    """An inline call ran past its short budget; its instance is gone, run it again on a worker."""


class CallResult(NamedTuple):  # a tuple: built on every call, and a frozen dataclass costs more
    value: Any
    cpu_ns: int
    violations: int = 0  # sandbox refusals inside the call (a component's fetch to a host off the list)
    exit_code: int | None = None  # a command's exit status (always 0 here: another one is an ExitError)
    stderr: str | None = None  # the tail of a command's stderr


class Call(NamedTuple):
    """A call checked against the export's signature, ready to run on any thread."""

    function: str
    convention: wasm.Convention
    values: tuple[int | float, ...] = ()
    payload: bytes = b""  # json: the args as JSON; command: stdin
    params: tuple[Any, ...] = ()  # component: the arguments checked against the WIT types
    argv: tuple[str, ...] | None = None  # command: None runs with the sandbox's argv


class Ticker:
    """Advances the engine's epoch every `tick` seconds; deadlines are counted in these ticks."""

    def __init__(self, engine: wasmtime.Engine, tick: float) -> None:
        self._engine = engine
        self._tick = tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="epoch-ticker", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            self._engine.increment_epoch()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class _Compiled(Protocol):
    """A compiled module or component: what the cache stores."""

    def serialize(self) -> bytearray: ...


C = TypeVar("C", bound=_Compiled)


class Runtime:
    """One engine, one linker with WASI, an optional on-disk cache and the epoch ticker.

    `grants` bounds the host directories a sandbox may be granted (`edge.grants`): every node passes
    its operator's roots; without it (`hotswap exec`, a local user's own command) any directory goes."""

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        tick: float = TICK_SECONDS,
        fast_path: bool = True,
        grants: GrantRoots | None = None,
    ):
        config = wasmtime.Config()
        config.epoch_interruption = True
        config.cranelift_opt_level = "speed"
        self.engine = wasmtime.Engine(config)
        self.linker = wasmtime.Linker(self.engine)
        self.linker.define_wasi()
        # `poll_oneoff` (sleep) is ours: Wasmtime's blocks where the epoch deadline cannot stop it.
        self._closing = threading.Event()
        self.origins: dict[int, int] = {}  # store context address -> time.monotonic_ns() of its WASI clock's zero
        self.linker.allow_shadowing = True
        i32 = wasmtime.ValType.i32()
        self.linker.define_func(
            "wasi_snapshot_preview1",
            "poll_oneoff",
            wasmtime.FuncType([i32, i32, i32, i32], [i32]),
            self._poll_oneoff,
            access_caller=True,
        )
        self.tick = tick
        self.fast_path = fast_path
        self.grants = grants
        self.settings = {
            "wasmtime": package_version("wasmtime"),
            "machine": platform.machine(),
            "system": platform.system(),
            "epoch": "1",
            "opt": "speed",
        }
        self.cache = ModuleCache(cache_dir, engine_key(self.settings)) if cache_dir is not None else None
        self._modules: weakref.WeakSet[LoadedModule] = weakref.WeakSet()
        self._components: weakref.WeakSet[LoadedComponent] = weakref.WeakSet()
        self._recent: OrderedDict[str, tuple[wasmtime.Module, wasm.ModuleInfo]] = OrderedDict()
        self._busy = 0  # long calls running (not inline ones), so close() can stop them
        self._busy_lock = threading.Lock()
        self._ticker = Ticker(self.engine, tick)
        self._ticker.start()

    def _poll_oneoff(self, caller: wasmtime.Caller, subs: int, events: int, count: int, written: int) -> int:
        """WASI `poll_oneoff`, in the host, bounded by the running call's deadline.

        Wasmtime's own blocks in the host, where the epoch deadline cannot stop it (`time.sleep(3600)`
        held a worker thread for an hour). Here a clock subscription waits at most until the call's
        deadline (or the runtime's close), and a sleep cut short ends the call as its timeout. A
        relative clock waits its timeout, an absolute realtime one until that time, an absolute
        monotonic one until that time on the store's WASI clock (`origins`); a subscription on a
        descriptor is ready at once (the edge hands a program in-memory stdio and regular files)."""
        subs, events, count, written = (v & 0xFFFFFFFF for v in (subs, events, count, written))  # i32: unsigned
        memory = caller.get("memory")
        if not isinstance(memory, wasmtime.Memory):
            return _EFAULT
        if count == 0:
            return _EINVAL
        size = memory.data_len(caller)
        if not (0 <= subs <= size - 48 * count and 0 <= events <= size - 32 * count and 0 <= written <= size - 4):
            return _EFAULT
        raw = memory.read(caller, subs, subs + 48 * count)
        ready: list[tuple[bytes, int]] = []  # (userdata, event type) of descriptors, ready now
        clocks: list[tuple[bytes, float]] = []  # (userdata, seconds to wait)
        for i in range(count):
            sub = raw[48 * i : 48 * (i + 1)]
            tag = sub[8]
            if tag in (1, 2):
                ready.append((bytes(sub[0:8]), tag))
            elif tag == 0:
                clock, timeout = int.from_bytes(sub[16:20], "little"), int.from_bytes(sub[24:32], "little")
                absolute = int.from_bytes(sub[40:42], "little") & 1
                if not absolute:
                    wait = timeout / 1e9
                elif clock == 0:  # realtime
                    wait = (timeout - time.time_ns()) / 1e9
                else:  # Wasmtime's monotonic clock counts from the store's WASI context (`origins`)
                    origin = self.origins.get(_ffi.context_key(caller))
                    wait = (timeout - (time.monotonic_ns() - origin)) / 1e9 if origin is not None else 0.0
                clocks.append((bytes(sub[0:8]), max(wait, 0.0)))
            else:
                return _EINVAL
        fired: list[tuple[bytes, int]] = ready
        if not ready:
            wait = min(seconds for _, seconds in clocks)
            deadline = getattr(_CALL, "deadline", None)
            left = wait if deadline is None else min(wait, deadline - time.monotonic())
            if self._closing.wait(max(left, 0.0)) or left < wait:
                _CALL.expired = True  # `failure` makes it the timeout it is
                raise wasmtime.Trap("the call's deadline passed while the program slept")
            fired = [(userdata, 0) for userdata, seconds in clocks if seconds <= wait]
        out = bytearray(32 * len(fired))
        for i, (userdata, kind) in enumerate(fired):
            out[32 * i : 32 * i + 8] = userdata
            out[32 * i + 10] = kind
        memory.write(caller, bytes(out), events)
        memory.write(caller, len(fired).to_bytes(4, "little"), written)
        return 0

    def close(self) -> None:
        """Stop the ticker and drop every instance now. Stores with WASI files left for the
        interpreter's exit make wasmtime's I/O threads panic as the process ends."""
        self._closing.set()  # a program asleep in poll_oneoff wakes, and meets its deadline
        self.interrupt()
        self._ticker.stop()
        for loaded in list(self._modules):
            loaded.close()
        for component in list(self._components):
            component.close()
        self._recent.clear()
        gc.collect()

    @property
    def busy(self) -> int:
        """How many calls with a full deadline are running now."""
        return self._busy

    def interrupt(self, within: float = 2.0) -> None:
        """Make every running call reach its deadline now (shutdown), by running the epoch ahead."""
        give_up = time.monotonic() + within
        while self._busy and time.monotonic() < give_up:
            for _ in range(10_000):
                self.engine.increment_epoch()

    def _enter(self) -> None:
        with self._busy_lock:
            self._busy += 1

    def _leave(self) -> None:
        with self._busy_lock:
            self._busy -= 1

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ticks(self, seconds: float) -> int:
        """Deadline in ticks: at least `seconds`, at most one tick more."""
        return max(1, math.ceil(seconds / self.tick)) + 1

    def _admit(self, data: bytes, sandbox: Sandbox, digest: str | None, verified: bool) -> tuple[str, Sandbox]:
        """The binary's digest, checked against `digest` unless `verified`; and the sandbox with its
        directories allowed by `grants` (then opened by their resolved paths) and present here."""
        dirs = []
        for grant in sandbox.dirs:
            host = self.grants.check(grant.host, grant.writable) if self.grants is not None else grant.host.resolve()
            if not host.is_dir():
                raise LoadError(f"capabilities.filesystem: {grant.host} is not a directory on this node")
            dirs.append(replace(grant, host=host))
        sandbox = replace(sandbox, dirs=tuple(dirs))
        if digest is not None and verified:
            return digest, sandbox
        actual = wasm.sha256_digest(data)
        if digest is not None and digest != actual:
            raise LoadError(f"digest mismatch: expected {digest}, got {actual}")
        return actual, sandbox

    def cached(self, digest: str, kind: str, deserialize: Callable[[str], C], build: Callable[[], C]) -> tuple[C, bool]:
        """`deserialize` of a good cache entry (True), or `build()` stored in the cache (False)."""
        if self.cache is not None:
            hit = self.cache.fetch(digest, kind, deserialize)
            if hit is not None:
                return hit, True
        built = build()
        if self.cache is not None:
            self.cache.put(digest, kind, bytes(built.serialize()))
        return built, False

    def compile(self, data: bytes, digest: str) -> tuple[wasmtime.Module, bool]:
        """The module for `data`, from the cache when a good entry exists; True if it was cached."""

        def build() -> wasmtime.Module:
            try:
                return wasmtime.Module(self.engine, data)
            except wasmtime.WasmtimeError as exc:
                raise LoadError(f"not a valid module: {first_line(exc)}") from None

        return self.cached(digest, MODULE, lambda path: wasmtime.Module.deserialize_file(self.engine, path), build)

    def load(self, data: bytes, sandbox: Sandbox, *, digest: str | None = None, verified: bool = False) -> LoadedModule:
        """Verify, compile (or load from cache), link and instantiate once to prove it runs.

        `data` is checked against `digest` unless `verified` says the caller already did (a
        `BlobSource` hands out only bytes that match their digest), so a binary is hashed once."""
        actual, sandbox = self._admit(data, sandbox, digest, verified)
        if data[:4] != b"\0asm":
            raise LoadError("not a valid module: the magic bytes \\0asm are missing")
        if wasm.is_component(data):
            raise LoadError("components (WASI preview 2) load through Runtime.load_any, not Runtime.load")
        recent = self._recent.get(actual)
        if recent is not None:  # loaded before in this process: already verified, compiled, described
            self._recent.move_to_end(actual)
            module, info, cached = *recent, True
        else:
            module, cached = self.compile(data, actual)
            info = wasm.describe(data, actual)
            self._recent[actual] = (module, info)
            while len(self._recent) > RECENT_MODULES:
                self._recent.popitem(last=False)
        if info.problems:
            raise LoadError("; ".join(info.problems))
        try:
            pre = self.linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as exc:
            raise LoadError(f"cannot link: {first_line(exc)}") from None
        loaded = LoadedModule(self, info, module, pre, sandbox, from_cache=cached)
        loaded.warm()
        self._modules.add(loaded)
        return loaded

    def load_any(self, data: bytes, sandbox: Sandbox, *, digest: str | None = None, verified: bool = False) -> Loaded:
        """`load` for a core module; a component (WASI preview 2) goes to `edge.component`."""
        if not wasm.is_component(data):
            return self.load(data, sandbox, digest=digest, verified=verified)
        from edge.component import load_component

        actual, sandbox = self._admit(data, sandbox, digest, verified)
        loaded = load_component(self, data, sandbox, actual)
        self._components.add(loaded)
        return loaded


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
        if not self.owner.runtime.fast_path:
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
        if getattr(_CALL, "expired", False) or is_timeout(exc):
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


class _Pooled(Protocol):
    """What a version's pool holds: one instance, used by one thread at a time."""

    def failure(self, exc: BaseException, budget: int | None) -> Exception: ...
    def close(self) -> None: ...


P = TypeVar("P", bound=_Pooled)


class LoadedVersion(Generic[P]):
    """What a loaded module and a loaded component share: the sandbox, the pool of idle instances,
    and the two call lanes (inline on the event loop with a small budget, or on a worker thread
    with the full timeout). The subclasses say how a call is checked and run."""

    def __init__(self, runtime: Runtime, info: wasm.ModuleInfo, sandbox: Sandbox, *, from_cache: bool) -> None:
        self.runtime = runtime
        self.info = info
        self.sandbox = sandbox
        self.from_cache = from_cache
        self._idle: deque[P] = deque()
        self._slow: set[str] = set()
        # The epoch deadline only interrupts wasm code, not a host call: a version that can sleep or
        # touch files never runs on the event loop (`_blocking` says whether it can).
        self._inline_ok = not sandbox.dirs and not self._blocking()

    @property
    def digest(self) -> str:
        return self.info.digest

    def _blocking(self) -> bool:
        raise NotImplementedError

    def _new_instance(self) -> P:
        raise NotImplementedError

    def _keeps_instances(self) -> bool:
        """Whether instances are reused between calls (a command gets a fresh one each time)."""
        return True

    def warm(self) -> None:
        """Instantiate once, so a version that cannot start fails at load and not on a request."""
        _CALL.deadline = time.monotonic() + self.sandbox.timeout_seconds  # a start function's sleep too
        try:
            inst = self._new_instance()
        except MemoryLimitError as exc:
            raise LoadError(exc.message) from None
        except (TrapError, ModuleTimeoutError) as exc:
            raise LoadError(f"cannot instantiate: {exc.message}") from None
        finally:
            _CALL.deadline = None
            _CALL.expired = False
        if self._keeps_instances():
            self._idle.append(inst)
        else:
            inst.close()

    # -- the event loop side --------------------------------------------------------------------

    def prepare(
        self, function: str, args: Any, *, argv: tuple[str, ...] | None = None, stdin: bytes | None = None
    ) -> Call:
        """The checked call, or a 4xx error (unknown function, arguments of the wrong type). `argv`
        and `stdin` are for commands only."""
        raise NotImplementedError

    def _inline_function(self, function: str) -> bool:
        raise NotImplementedError

    def may_run_inline(self, function: str) -> bool:
        """Short calls may run on the event loop: never slow before, nothing that blocks in a host
        call, and an idle instance ready (instantiation, with its start function, is left to
        workers)."""
        return bool(self._idle) and self._inline_ok and function not in self._slow and self._inline_function(function)

    def mark_slow(self, function: str) -> None:
        self._slow.add(function)

    def mark_fast(self, function: str) -> None:
        self._slow.discard(function)

    @property
    def slow(self) -> frozenset[str]:
        """Functions that once ran past the inline budget: they run on workers from then on."""
        return frozenset(self._slow)

    # -- any thread: the call itself -------------------------------------------------------------

    def invoke(
        self,
        call: Call,
        *,
        budget: int | None = None,
        timeout: float | None = None,
        cpu_clock: Callable[[], int] = time.thread_time_ns,
    ) -> CallResult:
        """Run `call`; raises a ModuleError, or BudgetExceededError when an inline budget ran out.

        `cpu_clock` measures the CPU the call used: the thread's CPU clock by default; a short call
        on the event loop passes the (much cheaper to read) wall clock, which equals it there."""
        runtime = self.runtime
        if budget is not None:
            return self._invoke(call, budget, budget, cpu_clock, runtime.tick * budget)
        seconds = timeout or self.sandbox.timeout_seconds
        runtime._enter()
        _CALL.deadline = time.monotonic() + seconds
        try:
            return self._invoke(call, runtime.ticks(seconds), None, cpu_clock, seconds)
        finally:
            _CALL.deadline = None
            _CALL.expired = False
            runtime._leave()

    def _invoke(
        self, call: Call, ticks: int, budget: int | None, cpu_clock: Callable[[], int], seconds: float
    ) -> CallResult:
        raise NotImplementedError

    def _take(self) -> P:
        try:
            return self._idle.pop()
        except IndexError:
            return self._new_instance()

    def _give_back(self, inst: P) -> None:
        if len(self._idle) < MAX_IDLE_INSTANCES:
            self._idle.append(inst)
        else:
            inst.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


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
        super().__init__(runtime, info, sandbox, from_cache=from_cache)

    def _blocking(self) -> bool:
        return any(i.name in BLOCKING_WASI for i in self.info.wasi_imports)

    def _new_instance(self) -> _Instance:
        return _Instance(self)

    def _keeps_instances(self) -> bool:
        return any(e.convention != "command" for e in self.functions.values())

    def prepare(
        self, function: str, args: Any, *, argv: tuple[str, ...] | None = None, stdin: bytes | None = None
    ) -> Call:
        export = self.functions.get(function)
        if export is None:
            callable_names = ", ".join(sorted(self.functions)) or "none"
            raise NotFoundError(
                f"function {function!r} is not an export that can be called (exports: {callable_names})"
            )
        assert export.sig is not None and export.convention is not None
        if export.convention == "command":
            return command_call(function, args, argv, stdin)
        if argv is not None or stdin is not None:  # the execute path: no call when there is nothing to refuse
            refuse_command_input(function, export.convention, argv, stdin)
        if export.convention == "numeric":
            return Call(function, "numeric", numeric_args(function, export.sig, args))
        payload = json.dumps(args, separators=(",", ":"), allow_nan=False).encode()
        return Call(function, export.convention, payload=payload)

    def _inline_function(self, function: str) -> bool:
        export = self.functions.get(function)
        return export is not None and export.convention in ("numeric", "json")

    def _invoke(
        self, call: Call, ticks: int, budget: int | None, cpu_clock: Callable[[], int], seconds: float
    ) -> CallResult:
        started = cpu_clock()
        if call.convention == "command":
            value, stderr = self._invoke_command(call, ticks)
            return CallResult(value, cpu_clock() - started, exit_code=0, stderr=stderr)
        inst = self._take()
        set_epoch_deadline(inst.ctx, ticks)
        try:
            if call.convention == "numeric":
                value = json_number(inst.call(call.function, call.values))
            else:
                value = inst.run_json(call.function, call.payload)
        except Exception as exc:
            raise inst.failure(exc, budget) from None
        inst.stdout.reset()
        inst.stderr.reset()
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


def refuse_command_input(function: str, convention: str, argv: tuple[str, ...] | None, stdin: bytes | None) -> None:
    """A 400 for argv or stdin sent to an export that is not a command."""
    if argv is not None or stdin is not None:
        given = " and ".join(n for n, v in (("argv", argv), ("stdin", stdin)) if v is not None)
        raise BadRequestError(
            f"{given}: only a command export (_start) takes them; {function} is a {convention} export, send args"
        )


# What `Runtime.load_any` returns: the router and the server use both through the same methods.
Loaded: TypeAlias = "LoadedModule | LoadedComponent"


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
