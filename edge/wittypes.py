"""A component described from its type: WIT types, exported functions and imported interfaces.

Where it sits: under `edge.wasm.inspect`, which compiles a component (WASI preview 2) and calls
`describe_component` here; core modules are described from their bytes by `edge.wasmbinary`. The
runtime (`edge.component`, `edge.witvalues`) maps JSON to and from the `WitType`s read here, and
each imported interface is mapped to the capability that grants it (`WASI_P2_CAPABILITIES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import wasmtime

from edge.wasminfo import Export, FuncSig, Import, ModuleInfo

__all__ = [
    "ComponentFunc",
    "WitKind",
    "WitType",
    "component_functions",
    "component_imports",
    "describe_component",
    "wit_type",
]

WitKind = Literal[
    "bool", "s8", "s16", "s32", "s64", "u8", "u16", "u32", "u64", "f32", "f64", "char", "string",
    "list", "record", "tuple", "variant", "enum", "option", "result", "flags", "unsupported",
]  # fmt: skip


@dataclass(frozen=True)
class WitType:
    """A WIT value type, read from a component's type. `cases` holds record fields, variant cases
    and the result's ok/err (None: no payload); `items` the list, option or tuple element types;
    `names` enum cases and flags; `detail` what an unsupported type is (resource, stream...)."""

    kind: WitKind
    cases: tuple[tuple[str, WitType | None], ...] = ()
    items: tuple[WitType, ...] = ()
    names: tuple[str, ...] = ()
    detail: str = ""

    @property
    def supported(self) -> bool:
        """Whether values of this type map to and from JSON (resources, streams and futures do not)."""
        if self.kind == "unsupported":
            return False
        return all(t.supported for t in self.items) and all(t is None or t.supported for _, t in self.cases)

    def __str__(self) -> str:
        k = self.kind
        if k in ("list", "option"):
            return f"{k}<{self.items[0]}>"
        if k == "tuple":
            return f"tuple<{', '.join(str(t) for t in self.items)}>"
        if k == "record":
            return "record {" + ", ".join(f"{n}: {t}" for n, t in self.cases) + "}"
        if k == "variant":
            return "variant {" + ", ".join(n if t is None else f"{n}({t})" for n, t in self.cases) + "}"
        if k in ("enum", "flags"):
            return f"{k} {{{', '.join(self.names)}}}"
        if k == "result":
            ok, err = (t for _, t in self.cases)
            if ok is None and err is None:
                return "result"
            return f"result<{ok if ok is not None else '_'}" + (f", {err}>" if err is not None else ">")
        if k == "unsupported":
            return self.detail
        return k


@dataclass(frozen=True)
class ComponentFunc:
    """A function a component exports: `name` is `func`, or `instance#func` inside an exported interface."""

    name: str
    params: tuple[tuple[str, WitType], ...]
    result: WitType | None

    @property
    def supported(self) -> bool:
        return all(t.supported for _, t in self.params) and (self.result is None or self.result.supported)

    @property
    def sig(self) -> FuncSig:
        """The signature with WIT types, as `GET /modules` and the registry show it."""
        return FuncSig(
            tuple(f"{n}: {t}" for n, t in self.params), (str(self.result),) if self.result is not None else ()
        )


_PRIMITIVES: dict[str, WitKind] = {
    "Bool": "bool", "S8": "s8", "S16": "s16", "S32": "s32", "S64": "s64", "U8": "u8", "U16": "u16",
    "U32": "u32", "U64": "u64", "F32": "f32", "F64": "f64", "Char": "char", "String": "string",
}  # fmt: skip


def wit_type(ty: object) -> WitType:
    """A wasmtime component value type as a WitType (read once: wasmtime's objects query C each time)."""
    from wasmtime import component as wc

    name = type(ty).__name__
    if name in _PRIMITIVES:
        return WitType(_PRIMITIVES[name])
    if isinstance(ty, wc.ListType):
        return WitType("list", items=(wit_type(ty.element),))
    if isinstance(ty, wc.OptionType):
        return WitType("option", items=(wit_type(ty.payload),))
    if isinstance(ty, wc.TupleType):
        return WitType("tuple", items=tuple(wit_type(t) for t in ty.elements))
    if isinstance(ty, wc.RecordType):
        return WitType("record", cases=tuple((n, wit_type(t)) for n, t in ty.fields))
    if isinstance(ty, wc.VariantType):
        return WitType("variant", cases=tuple((n, wit_type(t) if t is not None else None) for n, t in ty.cases))
    if isinstance(ty, wc.ResultType):
        ok, err = ty.ok, ty.err
        return WitType(
            "result",
            cases=(
                ("ok", wit_type(ok) if ok is not None else None),
                ("err", wit_type(err) if err is not None else None),
            ),
        )
    if isinstance(ty, wc.EnumType):
        return WitType("enum", names=tuple(ty.names))
    if isinstance(ty, wc.FlagsType):
        return WitType("flags", names=tuple(ty.names))
    detail = {"OwnType": "own<resource>", "BorrowType": "borrow<resource>"}.get(name, name.lower())
    return WitType("unsupported", detail=detail.removesuffix("type"))


def component_functions(component: object, engine: wasmtime.Engine) -> tuple[ComponentFunc, ...]:
    """Every function a component exports, top level and one interface deep (`instance#func`)."""
    from wasmtime import component as wc

    assert isinstance(component, wc.Component)
    out: list[ComponentFunc] = []

    def add(name: str, ty: wc.FuncType) -> None:
        result = ty.result
        params = tuple((n, wit_type(t)) for n, t in ty.params)
        out.append(ComponentFunc(name, params, wit_type(result) if result is not None else None))

    for name, item in component.type.exports(engine).items():
        ty = item.ty
        if isinstance(ty, wc.FuncType):
            add(name, ty)
        elif isinstance(ty, wc.ComponentInstanceType):
            for inner, sub in ty.exports(engine).items():
                if isinstance(sub.ty, wc.FuncType):
                    add(f"{name}#{inner}", sub.ty)
    return tuple(out)


def component_imports(component: object, engine: wasmtime.Engine) -> tuple[Import, ...]:
    """The interfaces a component imports, as `Import(package@version, interface, "instance")`; a
    bare function import is `Import("", name, "func")`."""
    from wasmtime import component as wc

    assert isinstance(component, wc.Component)
    out = []
    for name, item in component.type.imports(engine).items():
        if isinstance(item.ty, wc.ComponentInstanceType) and "/" in name:
            package, _, rest = name.partition("/")
            interface, _, version = rest.partition("@")
            out.append(Import(f"{package}@{version}" if version else package, interface, "instance"))
        else:
            out.append(Import("", name, "func" if isinstance(item.ty, wc.FuncType) else "instance"))
    return tuple(out)


def describe_component(component: object, engine: wasmtime.Engine, digest: str, size: int) -> ModuleInfo:
    """A compiled component described from its type: imports, and exports with the `component`
    convention (None for a function whose types do not map to JSON: resources, streams, futures)."""
    imports = component_imports(component, engine)
    exports = tuple(
        Export(f.name, "func", f.sig, "component" if f.supported else None)
        for f in component_functions(component, engine)
    )
    problems = []
    for imp in imports:
        capability = imp.capability
        where = f"import {imp.module}/{imp.name}" if imp.module else f"import {imp.name}"
        if capability == "sockets":
            problems.append(f"{where}: sockets are not available in the edge sandbox")
        elif capability in (None, "unknown"):
            problems.append(f"{where}: not a WASI preview 2 interface the edge provides (nor hotswap:http/fetch)")
    return ModuleInfo(
        digest=digest, size=size, component=True, imports=imports, exports=exports, problems=tuple(problems)
    )
