"""WIT values from JSON and back: the `component` calling convention's arguments and results.

Where it sits: under `edge.component`. `LoadedComponent.prepare` (on the event loop) turns a call's
JSON `args` into checked values with `check_args`, so every mistake is a 400 before any wasm runs;
the component's instance then `lower`s them into wasmtime's C values (bound in `edge._ffi`), makes
the call, and `lift`s the result back to JSON (any thread).

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
"""

from __future__ import annotations

import ctypes
import json
import math
from typing import Any

from edge import _ffi, wasm
from edge.errors import BadRequestError

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
