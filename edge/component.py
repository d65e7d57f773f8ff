"""WASI preview 2 components on the edge: WIT-typed calls from JSON, the P2 sandbox, outgoing HTTP.

Where it sits: `Runtime.load_any` hands a component binary to `load_component`, which returns a
`LoadedComponent`; the router and the server use it exactly like a core `LoadedModule` (`prepare`
on the event loop for the 4xx checks, `invoke` inline or on a worker thread), so components share
the routing, weights, hot swap, limits, CPU share and metrics of core modules.

The `component` calling convention. `edge.wasm` reads each exported function's WIT signature
(`instance#func` for a function of an exported interface, or just `func` when that is unambiguous).
`args` is an array (by position) or an object (by parameter name), mapped to WIT values like serde's
externally tagged JSON, and the result maps back the same way (`edge.witvalues`, which draws the
mapping). A value that does not fit is a 400 naming the parameter.

The preview 2 sandbox, and what wasmtime-py 50 lets the host restrict for components. The component
linker's `add_wasip2()` defines every WASI 0.2 interface; what they can reach comes from the store's
`WasiConfig`, the same one preview 1 uses (a store without it aborts the process on the first WASI
call, so every store gets one):

    environment   only the variables listed (`env`), nothing inherited; no arguments
    filesystem    only the listed directories, read-only unless `mode: rw` (preopen permissions)
    stdio         stdin empty; stdout and stderr captured in memory and capped
    clocks        wall and monotonic clocks are always there; they cannot be taken away or faked
    random        secure and insecure random are always there; they cannot be taken away or seeded
    sockets       `WasiConfig` grants no network (no `inherit_network`), but the interfaces exist:
                  a component importing `wasi:sockets/*` is refused at validation and at load
    wasi:http     `add_wasi_http()` lets a component reach any host, so it is linked only for
                  `network.allowHosts: ["*"]`, and a component importing it is refused otherwise
    hotswap:http  `hotswap:http/fetch` (WIT in schemas/hotswap-http.wit), defined by the host: each
                  request goes through the node's aiohttp client (TLS verified) only to hosts on
                  `network.allowHosts`; any other is refused inside the call (`fetch-error.denied`)
                  and counted as a violation

Memory is capped per linear memory by `Store.set_limits` (one memory per store); the epoch deadline
stops a call at its timeout. A host call (a file read, an HTTP request) is not interrupted by the
epoch: a fetch gets the call's remaining time as its own timeout, and components that can block run
on worker threads only.
"""

from __future__ import annotations

import asyncio
import fnmatch
import threading
import time
from collections.abc import Callable
from ctypes import byref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import wasmtime
import wasmtime.component as wc

from edge import _ffi, wasm
from edge._ffi import component_call, component_post_return, delete_val
from edge.cache import COMPONENT
from edge.errors import BadRequestError, LoadError, MemoryLimitError, ModuleTimeoutError, TrapError
from edge.instance import MIB, Capture, Sandbox, first_line, is_timeout, new_store, wasi_config
from edge.loaded import BudgetExceededError, Call, CallResult, LoadedVersion, refuse_command_input, unknown_function
from edge.witvalues import check_args, lift, lower

if TYPE_CHECKING:
    from edge.runtime import Runtime

FETCH_INTERFACE = "hotswap:http/fetch@0.1.0"
FETCH_MAX_BODY = 16 * MIB
# Interfaces whose host calls may block (sleep, poll, files, HTTP): such components never run inline.
BLOCKING_CAPABILITIES = frozenset({"filesystem", "network"})
BLOCKING_INTERFACES = frozenset({"wasi:io/poll", "wasi:clocks/monotonic-clock"})


# -- outgoing HTTP (hotswap:http/fetch) -------------------------------------------------------------


def host_allowed(url: str, allow_hosts: tuple[str, ...]) -> bool:
    """Whether `url` may be fetched: `*` allows any host; `host` any port of it; `host:port` that
    port only; `*.example.com` any subdomain. Hosts compare case-insensitively."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        return False
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    for raw in allow_hosts:
        entry = raw.strip().lower()
        if entry == "*":
            return True
        pattern, want = entry, None
        if entry.count(":") == 1:
            pattern, _, want = entry.partition(":")
        if fnmatch.fnmatchcase(host, pattern) and (want is None or want == str(port)):
            return True
    return False


class _HttpClient:
    """One aiohttp session on a background event loop thread, shared by every fetch of the process.
    TLS certificates are verified (aiohttp's default); redirects are not followed, so a redirect to
    a host off the list is never taken."""

    _lock = threading.Lock()
    _instance: _HttpClient | None = None

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="component-http", daemon=True)
        self.thread.start()
        self.session: Any = None

    @classmethod
    def get(cls) -> _HttpClient:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    async def _send(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes, timeout: float) -> Any:
        import aiohttp

        if self.session is None:
            self.session = aiohttp.ClientSession()
        async with self.session.request(
            method,
            url,
            headers=headers,
            data=body or None,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            data = await response.content.read(FETCH_MAX_BODY + 1)
            if len(data) > FETCH_MAX_BODY:
                raise ValueError(f"the response body exceeds {FETCH_MAX_BODY} bytes")
            return response.status, list(response.headers.items()), data

    def send(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes, timeout: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(self._send(method, url, headers, body, timeout), self.loop)
        return future.result(timeout + 1)


# -- loading and calling ----------------------------------------------------------------------------


@dataclass
class _CallState:
    """What a host function needs to know about the call it runs in."""

    deadline: float = 0.0
    violations: int = 0


class _Instance:
    """One store and one instance of a component, used by one thread at a time."""

    def __init__(self, owner: LoadedComponent) -> None:
        sandbox = owner.sandbox
        self.owner = owner
        self.state = _CallState()
        # A component holds core instances and tables of its own (and of the adapters it embeds).
        self.store = new_store(
            owner.runtime.engine, sandbox, instances=64, tables=64, ticks=owner.runtime.ticks(sandbox.timeout_seconds)
        )
        self.stdout = Capture(sandbox.log_cap)
        self.stderr = Capture(sandbox.log_cap)
        # Always a WASI context: a WASI call in a store without one aborts the process.
        self.store.set_wasi(wasi_config(sandbox, self.stdout, self.stderr))
        if owner.raw_http:
            self.store.set_wasi_http()
        self.ctx = _ffi.context(self.store)
        self.key = _ffi.context_key(self.store)
        _STATES[self.key] = self.state
        try:
            self.instance = owner.linker.instantiate(self.store, owner.component)
        except Exception as exc:
            raise self.failure(exc, None) from None
        self.funcs: dict[str, Any] = {}

    def close(self) -> None:
        _STATES.pop(self.key, None)

    def func(self, name: str) -> Any:
        """The C reference to export `name` (`instance#func` or `func`), looked up once."""
        f = self.funcs.get(name)
        if f is None:
            outer, _, inner = name.partition("#")
            index = self.instance.get_export_index(self.store, outer)
            if index is not None and inner:
                index = self.instance.get_export_index(self.store, inner, index)
            found = self.instance.get_func(self.store, index) if index is not None else None
            if found is None:
                raise TrapError(f"{name} is not an exported function")  # prepare() never lets this happen
            f = self.funcs[name] = _ffi.component_func_ref(found)
        return f

    def call(self, func: wasm.ComponentFunc, params: tuple[Any, ...]) -> Any:
        f = self.funcs.get(func.name) or self.func(func.name)
        n = len(func.params)
        args = (_ffi.ComponentVal * max(n, 1))()
        done = 0
        result = _ffi.ComponentVal()
        has_result = func.result is not None
        try:
            for (_, t), v in zip(func.params, params, strict=True):
                lower(t, v, args[done])
                done += 1
            error = component_call(f, self.ctx, args, n, byref(result) if has_result else None, 1 if has_result else 0)
            if error:
                raise _ffi.error_from_pointer(error)
            if func.result is None:
                value = None
            else:
                try:
                    value = lift(func.result, result)
                finally:
                    delete_val(byref(result))
        finally:
            for i in range(done):
                delete_val(byref(args[i]))
        error = component_post_return(f, self.ctx)
        if error:
            raise _ffi.error_from_pointer(error)
        return value

    def at_memory_cap(self, message: str) -> bool:
        return "memory" in message and ("limit" in message or "exceed" in message or "grow" in message)

    def failure(self, exc: BaseException, budget: int | None) -> Exception:
        if isinstance(exc, (BadRequestError, TrapError)):
            return exc
        text = str(exc)
        if is_timeout(exc):
            if budget is not None:
                return BudgetExceededError()
            return ModuleTimeoutError(f"stopped after its timeout of {self.owner.sandbox.timeout_seconds:g}s")
        message = first_line(exc)
        if self.at_memory_cap(text):
            return MemoryLimitError(f"memory limit of {self.owner.sandbox.memory_bytes // MIB} MB: {message}")
        if isinstance(exc, wasmtime.ExitTrap):
            return TrapError(f"exited with status {exc.code}")
        detail = self.stderr.tail()
        return TrapError(message + (f" (stderr: {detail})" if detail else ""))


# The call state of each store, by the address of its context, for host functions (which get a
# StoreContext and nothing else).
_STATES: dict[int, _CallState] = {}


class LoadedComponent(LoadedVersion["_Instance"]):
    """A compiled, linked component version with its sandbox and a pool of idle instances."""

    def __init__(
        self,
        runtime: Runtime,
        info: wasm.ModuleInfo,
        component: wc.Component,
        funcs: tuple[wasm.ComponentFunc, ...],
        sandbox: Sandbox,
        allow_hosts: tuple[str, ...],
        *,
        from_cache: bool = False,
    ) -> None:
        self.runtime = runtime
        self.component = component
        self.allow_hosts = allow_hosts
        imported = {f"{i.module.split('@', 1)[0]}/{i.name}" for i in info.imports if i.kind == "instance"}
        self.raw_http = any(name.startswith("wasi:http/") for name in imported)
        self.uses_fetch = "hotswap:http/fetch" in imported
        self.linker = self._linker()
        callable_funcs = [f for f in funcs if f.supported]
        self._funcs: dict[str, wasm.ComponentFunc] = {f.name: f for f in callable_funcs}
        short: dict[str, list[wasm.ComponentFunc]] = {}
        for f in callable_funcs:
            if "#" in f.name:
                short.setdefault(f.name.split("#", 1)[1], []).append(f)
        for name, found in short.items():
            if len(found) == 1 and name not in self._funcs:
                self._funcs[name] = found[0]
        exports = {e.name: e for e in info.exports}
        self.functions = {name: exports[f.name] for name, f in self._funcs.items()}
        super().__init__(runtime, info, sandbox, inline=frozenset(self._funcs), from_cache=from_cache)

    def _blocking(self) -> bool:
        return any(
            i.capability in BLOCKING_CAPABILITIES or f"{i.module.split('@', 1)[0]}/{i.name}" in BLOCKING_INTERFACES
            for i in self.info.imports
        )

    def _new_instance(self) -> _Instance:
        return _Instance(self)

    def _linker(self) -> wc.Linker:
        linker = wc.Linker(self.runtime.engine)
        linker.add_wasip2()
        if self.raw_http:
            linker.add_wasi_http()
        if self.uses_fetch:
            with linker.root() as root, root.add_instance(FETCH_INTERFACE) as iface:
                iface.add_func("send", self._fetch)
        return linker

    def _fetch(self, store: Any, request: Any) -> Any:
        """`hotswap:http/fetch.send`: the request checked against `network.allowHosts`, then sent."""
        state = _STATES.get(_ffi.context_key(store)) or _CallState(deadline=time.monotonic() + 1)
        method = str(request.method).upper()
        url = str(request.url)
        if not host_allowed(url, self.allow_hosts):
            state.violations += 1
            allowed = ", ".join(self.allow_hosts) or "none"
            return wc.Variant("denied", f"{urlsplit(url).netloc or url} is not on network.allowHosts ({allowed})")
        if method not in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            return wc.Variant("invalid", f"method {method!r} is not supported")
        remaining = state.deadline - time.monotonic()
        if remaining <= 0:
            return wc.Variant("timeout")
        headers = [(str(h.name), str(h.value)) for h in request.headers]
        try:
            status, answer_headers, body = _HttpClient.get().send(method, url, headers, bytes(request.body), remaining)
        except TimeoutError:
            return wc.Variant("timeout")
        except Exception as exc:
            return wc.Variant("failed", f"{type(exc).__name__}: {exc}"[:400])
        return _record(status=status, headers=[_record(name=n, value=v) for n, v in answer_headers], body=body)

    # -- the event loop side ---------------------------------------------------------------------

    def prepare(
        self, function: str, args: Any, *, argv: tuple[str, ...] | None = None, stdin: bytes | None = None
    ) -> Call:
        func = self._funcs.get(function)
        if func is None:
            raise unknown_function(function, self._funcs)
        refuse_command_input(function, "component", argv, stdin)
        return Call(func.name, "component", params=check_args(func, args))

    # -- any thread ------------------------------------------------------------------------------

    def _invoke(
        self, call: Call, ticks: int, budget: int | None, cpu_clock: Callable[[], int], seconds: float
    ) -> CallResult:
        started = cpu_clock()
        func = self._funcs[call.function] if call.function in self._funcs else self._by_full_name(call.function)
        inst = self._take()
        inst.state.deadline = time.monotonic() + seconds
        inst.state.violations = 0
        _ffi.set_epoch_deadline(inst.ctx, ticks)
        try:
            value = inst.call(func, call.params)
        except Exception as exc:
            inst.close()
            raise inst.failure(exc, budget) from None
        violations = inst.state.violations
        inst.stdout.reset()
        inst.stderr.reset()
        self._give_back(inst)
        return CallResult(value, cpu_clock() - started, violations)

    def _by_full_name(self, name: str) -> wasm.ComponentFunc:
        return next(f for f in self._funcs.values() if f.name == name)


def _record(**fields: Any) -> wc.Record:
    record = wc.Record()
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def load_component(runtime: Runtime, data: bytes, sandbox: Sandbox, digest: str) -> LoadedComponent:
    """Compile (or take from the cache), describe, check the imports against the sandbox, link and
    instantiate once. Raises LoadError saying what is wrong."""
    component, cached = runtime.compiled(wc.Component, COMPONENT, data, digest)
    engine = runtime.engine
    info = wasm.describe_component(component, engine, digest, len(data))
    if info.problems:
        raise LoadError("; ".join(info.problems))
    allow = sandbox.allow_hosts
    for imp in info.imports:
        if imp.module.startswith("wasi:http") and tuple(allow) != ("*",):
            raise LoadError(
                f"import {imp.module}/{imp.name}: raw wasi:http reaches any host, so it is granted only with "
                'network.allowHosts: ["*"]; use hotswap:http/fetch for a list of hosts'
            )
    loaded = LoadedComponent(
        runtime, info, component, wasm.component_functions(component, engine), sandbox, allow, from_cache=cached
    )
    try:
        loaded.warm()
    except wasmtime.WasmtimeError as exc:  # pragma: no cover - failure() maps instantiation errors
        raise LoadError(f"cannot link: {first_line(exc)}") from None
    return loaded
