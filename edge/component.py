"""WASI preview 2 components on the edge: WIT-typed calls from JSON, the P2 sandbox, outgoing HTTP.

Where it sits: `Runtime.load_any` hands a component binary to `load_component`, which returns a
`LoadedComponent`; the router and the server use it exactly like a core `LoadedModule` (`prepare`
on the event loop for the 4xx checks, `invoke` inline or on a worker thread), so components share
the routing, weights, hot swap, limits, CPU share and metrics of core modules.

The `component` calling convention. `edge.wasm` reads each exported function's WIT signature
(`instance#func` for a function of an exported interface, or just `func` when that is unambiguous).
`args` is an array (by position) or an object (by parameter name), mapped to WIT values like serde's
externally tagged JSON, and the result maps back the same way:

    bool, integers, floats  JSON booleans and numbers (range-checked; a non-finite float result is
                            the string "nan", "inf" or "-inf")
    char, string            a one-code-point string, a string
    list<T>, tuple<...>     an array (a tuple's of exactly its length)
    record                  an object with exactly the record's fields
    option<T>               null or the value (`{"some": v}` when T is itself an option)
    result<T, E>            {"ok": v} or {"err": e} (v or e null when the case has no payload)
    variant                 {"case": payload}, or "case" for a case without payload
    enum                    "case"
    flags                   an array of the names that are set

A value that does not fit is a 400 naming the parameter (`args: parameter point.x: expected s32, got
"a"`). Values are lowered straight into wasmtime's C values from a type tree read once at load, so a
call costs a few microseconds more than the wasm it runs.

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
import ctypes
import fnmatch
import json
import math
import threading
import time
from collections.abc import Callable
from ctypes import byref
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import wasmtime
import wasmtime.component as wc

from edge import _ffi, wasm
from edge._ffi import component_call, component_post_return, delete_val
from edge.cache import COMPONENT
from edge.errors import BadRequestError, LoadError, MemoryLimitError, ModuleTimeoutError, NotFoundError, TrapError
from edge.instance import MIB, Capture, Sandbox, first_line, is_timeout, new_store, wasi_config
from edge.runtime import BudgetExceededError, Call, CallResult, LoadedVersion, Runtime, refuse_command_input

FETCH_INTERFACE = "hotswap:http/fetch@0.1.0"
FETCH_MAX_BODY = 16 * MIB
# Interfaces whose host calls may block (sleep, poll, files, HTTP): such components never run inline.
BLOCKING_CAPABILITIES = frozenset({"filesystem", "network"})
BLOCKING_INTERFACES = frozenset({"wasi:io/poll", "wasi:clocks/monotonic-clock"})
_INT_RANGES = {
    "s8": (-(2**7), 2**7 - 1),
    "s16": (-(2**15), 2**15 - 1),
    "s32": (-(2**31), 2**31 - 1),
    "s64": (-(2**63), 2**63 - 1),
    "u8": (0, 2**8 - 1),
    "u16": (0, 2**16 - 1),
    "u32": (0, 2**32 - 1),
    "u64": (0, 2**64 - 1),
}
_KIND = _ffi.component_kinds()
_UNION_FIELD = {"bool": "boolean", "char": "character", "enum": "enumeration"}


# -- JSON -> checked values (event loop: every mistake is a 400) ----------------------------------


class _MismatchError(Exception):
    def __init__(self, path: str, expected: wasm.WitType | str, got: Any) -> None:
        super().__init__(path)
        self.path = path
        self.expected = str(expected)
        self.got = got


def _show(value: Any) -> str:
    text = json.dumps(value, allow_nan=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def check(t: wasm.WitType, v: Any, path: str) -> Any:
    """`v` (decoded JSON) as a value of `t` ready to lower: variants become (case, payload), results
    (is_ok, payload), a present option (payload,). Raises _MismatchError naming the path."""
    k = t.kind
    if k == "bool":
        if not isinstance(v, bool):
            raise _MismatchError(path, t, v)
        return v
    if k in _INT_RANGES:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise _MismatchError(path, t, v)
        low, high = _INT_RANGES[k]
        if not low <= v <= high:
            raise _MismatchError(path, f"{k} ({low}..{high})", v)
        return v
    if k in ("f32", "f64"):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _MismatchError(path, t, v)
        return float(v)
    if k == "char":
        if not isinstance(v, str) or len(v) != 1 or 0xD800 <= ord(v) <= 0xDFFF:
            raise _MismatchError(path, "char (one Unicode scalar value)", v)
        return v
    if k == "string":
        if not isinstance(v, str):
            raise _MismatchError(path, t, v)
        return v
    if k == "list":
        if not isinstance(v, list):
            raise _MismatchError(path, t, v)
        return [check(t.items[0], e, f"{path}[{i}]") for i, e in enumerate(v)]
    if k == "tuple":
        if not isinstance(v, list) or len(v) != len(t.items):
            raise _MismatchError(path, t, v)
        return [check(et, e, f"{path}[{i}]") for i, (et, e) in enumerate(zip(t.items, v, strict=True))]
    if k == "record":
        if not isinstance(v, dict):
            raise _MismatchError(path, t, v)
        names = [n for n, _ in t.cases]
        unknown = [n for n in v if n not in names]
        if unknown:
            raise _MismatchError(f"{path}.{unknown[0]}", f"no such field (fields: {', '.join(names)})", v[unknown[0]])
        out = {}
        for name, ft in t.cases:
            if name not in v:
                raise _MismatchError(f"{path}.{name}", f"{ft} (the field is missing)", None)
            assert ft is not None
            out[name] = check(ft, v[name], f"{path}.{name}")
        return out
    if k == "option":
        inner = t.items[0]
        if v is None:
            return None
        if inner.kind == "option":
            if not isinstance(v, dict) or list(v) != ["some"]:
                raise _MismatchError(path, f'{t} as null or {{"some": value}}', v)
            return (check(inner, v["some"], f"{path}.some"),)
        return (check(inner, v, path),)
    if k in ("variant", "result"):
        cases = dict(t.cases)
        if k == "variant" and isinstance(v, str) and v in cases and cases[v] is None:
            return (v, None)
        if not isinstance(v, dict) or len(v) != 1 or next(iter(v)) not in cases:
            raise _MismatchError(path, f"{t} as {{{', '.join(repr(c) for c in cases)}: ...}}", v)
        case, payload = next(iter(v.items()))
        ct = cases[case]
        if ct is None:
            if payload is not None:
                raise _MismatchError(f"{path}.{case}", "null (the case has no payload)", payload)
            value = None
        else:
            value = check(ct, payload, f"{path}.{case}")
        return (case == "ok", value) if k == "result" else (case, value)
    if k == "enum":
        if not isinstance(v, str) or v not in t.names:
            raise _MismatchError(path, t, v)
        return v
    if k == "flags":
        if not isinstance(v, list) or not all(isinstance(n, str) and n in t.names for n in v):
            raise _MismatchError(path, f"{t} as an array of names", v)
        return list(dict.fromkeys(v))
    raise _MismatchError(path, t, v)  # pragma: no cover - unsupported types are never callable


def check_args(func: wasm.ComponentFunc, args: Any) -> tuple[Any, ...]:
    """The arguments of a call, by position (array) or by parameter name (object), checked."""
    params = func.params
    if args is None:
        args = []
    if isinstance(args, dict):
        unknown = [n for n in args if n not in dict(params)]
        if unknown:
            names = ", ".join(n for n, _ in params) or "none"
            raise BadRequestError(f"args: {func.name} has no parameter {unknown[0]!r} (parameters: {names})")
        missing = [n for n, _ in params if n not in args]
        if missing:
            raise BadRequestError(f"args: parameter {missing[0]} ({dict(params)[missing[0]]}) is missing")
        args = [args[n] for n, _ in params]
    if not isinstance(args, list):
        raise BadRequestError(f"args: {func.name}{func.sig} takes an array or an object by parameter name")
    if len(args) != len(params):
        raise BadRequestError(f"args: {func.name}{func.sig} takes {len(params)} argument(s), got {len(args)}")
    try:
        return tuple(check(t, v, name) for (name, t), v in zip(params, args, strict=True))
    except _MismatchError as exc:
        raise BadRequestError(f"args: parameter {exc.path}: expected {exc.expected}, got {_show(exc.got)}") from None


# -- checked values <-> wasmtime's C values (any thread) --------------------------------------------


_name = _ffi.capi_string


def lower(t: wasm.WitType, v: Any, out: Any) -> None:
    """Write the checked value `v` of type `t` into the C value `out` (which then owns it)."""
    k = t.kind
    out.kind = _KIND[k]
    of = out.of
    if k in _INT_RANGES or k in ("f32", "f64"):
        setattr(of, k, v)
    elif k == "bool":
        of.boolean = v
    elif k == "string":
        of.string = _name(v)
    elif k == "char":
        of.character = ord(v)
    elif k == "enum":
        of.enumeration = _name(v)
    elif k in ("list", "tuple"):
        raw = _ffi.new_list(k, len(v))
        types = t.items if k == "tuple" else (t.items[0],) * len(v)
        for i, (et, e) in enumerate(zip(types, v, strict=True)):
            lower(et, e, raw.data[i])
        setattr(of, k, raw)
    elif k == "record":
        rec = _ffi.new_record(len(t.cases))
        for i, (name, ft) in enumerate(t.cases):
            entry = rec.data[i]
            entry.name = _name(name)
            assert ft is not None
            lower(ft, v[name], entry.val)
        of.record = rec
    elif k == "option":
        of.option = _boxed(t.items[0], v[0]) if v is not None else None
    elif k == "result":
        is_ok, payload = v
        of.result.is_ok = is_ok
        ct = t.cases[0][1] if is_ok else t.cases[1][1]
        of.result.val = _boxed(ct, payload) if ct is not None else None
    elif k == "variant":
        case, payload = v
        ct = dict(t.cases)[case]
        of.variant.discriminant = _name(case)
        of.variant.val = _boxed(ct, payload) if ct is not None else None
    elif k == "flags":
        flags = _ffi.new_flags(len(v))
        for i, name in enumerate(v):
            flags.data[i] = _name(name)
        of.flags = flags
    else:  # pragma: no cover - unsupported types are never callable
        raise TypeError(f"cannot pass a {t}")


def _boxed(t: wasm.WitType, v: Any) -> Any:
    tmp = _ffi.ComponentVal()
    lower(t, v, tmp)
    return _ffi.box_val(tmp)


def _text(vec: Any) -> str:
    size = vec.size
    return ctypes.string_at(vec.data, size).decode("utf-8") if size else ""


def lift(t: wasm.WitType, c: Any) -> Any:
    """The C value `c` of type `t` as JSON (read only: the caller deletes `c` afterwards)."""
    k = t.kind
    of = c.of
    if k in _INT_RANGES:
        return int(getattr(of, k))
    if k in ("f32", "f64"):
        x = float(getattr(of, k))
        return x if math.isfinite(x) else str(x)
    if k == "bool":
        return bool(of.boolean)
    if k == "string":
        return _text(of.string)
    if k == "char":
        return chr(of.character)
    if k == "enum":
        return _text(of.enumeration)
    if k in ("list", "tuple"):
        raw = getattr(of, k)
        types = t.items if k == "tuple" else (t.items[0],) * raw.size
        return [lift(et, raw.data[i]) for i, et in enumerate(types)]
    if k == "record":
        rec = of.record
        return {name: lift(ft, rec.data[i].val) for i, (name, ft) in enumerate(t.cases) if ft is not None}
    if k == "option":
        if not of.option:
            return None
        inner = lift(t.items[0], of.option.contents)
        return {"some": inner} if t.items[0].kind == "option" else inner
    if k == "result":
        res = of.result
        case, ct = t.cases[0] if res.is_ok else t.cases[1]
        return {case: lift(ct, res.val.contents) if ct is not None and res.val else None}
    if k == "variant":
        var = of.variant
        case = _text(var.discriminant)
        ct = dict(t.cases).get(case)
        return {case: lift(ct, var.val.contents)} if ct is not None and var.val else case
    if k == "flags":
        flags = of.flags
        return [_text(flags.data[i]) for i in range(flags.size)]
    raise TypeError(f"cannot read a {t}")  # pragma: no cover


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
        super().__init__(runtime, info, sandbox, from_cache=from_cache)

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
            names = ", ".join(sorted(self._funcs)) or "none"
            raise NotFoundError(f"function {function!r} is not an export that can be called (exports: {names})")
        refuse_command_input(function, "component", argv, stdin)
        return Call(func.name, "component", params=check_args(func, args))

    def _inline_function(self, function: str) -> bool:
        return function in self._funcs

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
    component, cached = _compile(runtime, data, digest)
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


def _compile(runtime: Runtime, data: bytes, digest: str) -> tuple[wc.Component, bool]:
    """The compiled component, from the on-disk cache when a good entry exists."""

    def build() -> wc.Component:
        try:
            return wc.Component(runtime.engine, data)
        except wasmtime.WasmtimeError as exc:
            raise LoadError(f"not a valid component: {first_line(exc)}") from None

    return runtime.cached(digest, COMPONENT, lambda path: wc.Component.deserialize_file(runtime.engine, path), build)
