"""The wasmtime runtime of an edge node: compile, cache, sandbox, link, load.

Where it sits: the router (`edge.router`) asks the runtime to `load_any` the bytes of a module
version it was assigned; what comes back (`edge.loaded.Loaded`) is what the server then calls,
through `prepare` (on the event loop: argument checks, 4xx) and `invoke` (on the loop for calls
known to be short, or on a worker thread). The call path lives in `edge.loaded` (the pool and the
call lanes), `edge.coremodule` (core modules) and `edge.component` (components).

* One `Engine` with epoch interruption; a ticker thread advances the epoch every millisecond and
  each call sets its deadline in ticks, so an endless loop stops at its timeout. The ticker parks
  when no call has run for a second, and the next call wakes it (`Ticker`).
* Modules are compiled once: the precompiled artifact goes to the on-disk cache (`edge.cache`),
  keyed by digest and engine settings, and a restart loads it with `Module.deserialize_file`;
  the last few compiled modules also stay in memory by digest, for versions swapped back in.
* Each `Store` gets the module's memory limit (`Store.set_limits`) and a WASI preview 1 context
  (both built by `edge.instance`, as for components) from its capabilities only: no inherited
  environment, listed variables only, listed directories only (read-only unless `rw`, and only
  under the node's allowed roots: `edge.grants`), stdout and stderr captured and capped. Every
  WASI preview 1 function is linked, `sock_*` included (wasi-libc and Rust's std import them in
  most programs), but no socket is ever handed in, so they fail with EBADF/ENOTSOCK and there is
  no network. `poll_oneoff` is the runtime's own, bounded by the running call's deadline.
* Numeric and json calls go through `wasmtime_func_call_unchecked` (`edge.numeric`; like every
  use of wasmtime-py's private API, bound in `edge._ffi`); `fast_path=False` makes the loaded
  modules use `Func.__call__` instead.
* Components (WASI preview 2, the `component` convention) load through `load_any`, which hands
  them to `edge.component`; the result has the same `prepare`/`invoke` surface (`Loaded`).
"""

from __future__ import annotations

import gc
import math
import platform
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Self, TypeVar

import wasmtime

from edge import _ffi, wasm
from edge.cache import MODULE, ModuleCache, engine_key
from edge.coremodule import LoadedModule
from edge.errors import LoadError
from edge.grants import GrantRoots
from edge.instance import MIB, RESULT_CAP, DirGrant, Sandbox, first_line
from edge.loaded import CALL, Loaded

if TYPE_CHECKING:
    from edge.component import LoadedComponent

# The sandbox and its sizes live in `edge.instance` (shared with components); they are named from
# here too, where the router, `hotswap exec` and the tests have always taken them. The call path
# (`LoadedModule`, `Call`, `CallResult`...) is imported from `edge.loaded` and `edge.coremodule`.
__all__ = [
    "MIB",
    "RESULT_CAP",
    "DirGrant",
    "Runtime",
    "Sandbox",
    "Ticker",
]

TICK_SECONDS = 0.001
PARK_AFTER_SECONDS = 1.0  # the ticker parks when no call has started for this long (`Ticker`)
RECENT_MODULES = 64  # compiled modules kept in memory by digest, for a version swapped back in

_EFAULT, _EINVAL = 21, 28  # WASI errno values


class Ticker:
    """Advances the engine's epoch every `tick` seconds while calls may run; deadlines are counted
    in these ticks.

    A tick is a sleep and one C call that keeps the GIL (`_ffi.increment_epoch`), but each still
    takes the GIL from the event loop: ~5 µs of a request at 14,000 requests a second, and an idle
    node spent 1.8 % of a core on it. So the ticker parks once no call has started for `park_after`
    seconds and none is running (`busy`: every call, inline ones too, and every start function),
    and the next call's `started` wakes it. Deadlines are relative to the epoch when a call sets
    them, so an epoch that stood still while nothing ran changes no deadline. Every way into wasm
    counts itself busy and calls `started` first (`Loaded.invoke`, `Loaded.warm`); a call that did
    not would find the ticker parked and run past its deadline.

    No wake is lost: a caller counts itself busy (under a lock), then wakes a parked ticker; the
    ticker says it parks, then looks at the busy count once more before it waits (each step under
    the GIL, so one of them sees the other's)."""

    def __init__(
        self, engine: wasmtime.Engine, tick: float, busy: Callable[[], int], park_after: float = PARK_AFTER_SECONDS
    ) -> None:
        self._engine = engine
        self._tick = tick
        self._busy = busy
        self._idle_ticks = max(1, round(park_after / tick))
        self._running = False
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self.calls = 0  # calls started, ever (only `started` writes it)
        self.parked = False

    def start(self) -> None:
        if self._thread is None:
            self._running = True
            self._thread = threading.Thread(target=self._run, name="epoch-ticker", daemon=True)
            self._thread.start()

    def started(self) -> None:
        """A call is about to run wasm: the ticker ticks until it is done."""
        self.calls += 1
        if self.parked:
            self._wake.set()

    def _run(self) -> None:
        sleep, tick, increment, engine = time.sleep, self._tick, _ffi.increment_epoch, self._engine.ptr()
        seen, quiet = self.calls, 0
        while self._running:
            sleep(tick)
            increment(engine)
            if self.calls != seen or self._busy():
                seen, quiet = self.calls, 0
                continue
            quiet += 1
            if quiet >= self._idle_ticks:
                self._park(seen)
                seen, quiet = self.calls, 0

    def _park(self, seen: int) -> None:
        self.parked = True
        if self.calls == seen and not self._busy() and self._running:
            self._wake.wait()  # in C, without the GIL, until `started` or `stop`
        self.parked = False
        self._wake.clear()

    def stop(self) -> None:
        self._running = False  # the thread sees it within a tick, or wakes from its park
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class _Compiled(Protocol):
    """A compiled module or component: built from a binary, stored in the cache, read back from it."""

    def __init__(self, engine: wasmtime.Engine, wasm: bytes) -> None: ...
    @classmethod
    def deserialize_file(cls, engine: wasmtime.Engine, path: str) -> Self: ...
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
        park_after: float = PARK_AFTER_SECONDS,
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
        self.ticker = Ticker(self.engine, tick, busy=lambda: self._busy, park_after=park_after)
        self.ticker.start()

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
            deadline = getattr(CALL, "deadline", None)
            left = wait if deadline is None else min(wait, deadline - time.monotonic())
            if self._closing.wait(max(left, 0.0)) or left < wait:
                CALL.expired = True  # `failure` makes it the timeout it is
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
        self.ticker.stop()
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

    def compiled(self, artifact: type[C], kind: str, data: bytes, digest: str) -> tuple[C, bool]:
        """`data` compiled as `artifact` (`wasmtime.Module` or `wasmtime.component.Component`, a cache
        entry of `kind`): from a good cache entry (True), or compiled and stored in the cache (False).
        A binary wasmtime cannot compile is a LoadError: "not a valid module" (or component)."""
        engine = self.engine
        if self.cache is not None:
            hit = self.cache.fetch(digest, kind, lambda path: artifact.deserialize_file(engine, path))
            if hit is not None:
                return hit, True
        try:
            built = artifact(engine, data)
        except wasmtime.WasmtimeError as exc:
            raise LoadError(f"not a valid {artifact.__name__.lower()}: {first_line(exc)}") from None
        if self.cache is not None:
            self.cache.put(digest, kind, bytes(built.serialize()))
        return built, False

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
            module, cached = self.compiled(wasmtime.Module, MODULE, data, actual)
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
