"""The resolved WIT package, as the interface registry keeps it after wasm-tools has parsed it.

`reconciler.interfaces.wit` builds these from `wasm-tools component wit --json`; the compatibility
check (`compat`) and the breaking-change detection (`evolution`) read them and nothing else. Types are
kept as WIT spelled them, so that two versions of a package compare by text:

    a primitive                  `u32`, `string`
    a named type                 its name (`person`); owned by another interface of the same
                                 package `iface.{name}`, of another package `wasi:io/streams@0.2.0.{name}`
    an anonymous type            spelled out: `list<u8>`, `option<person>`, `result<_, error-code>`
    a named type's definition    `record { name: string, age: u32 }`, `enum { a, b }`, `resource`,
                                 `type = u64` (an alias), `use wasi:io/poll@0.2.0.{pollable}`

`resolved` follows aliases (`type instant = u64` resolves to `u64`), which is what decides how a core
module passes a value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edge.wasminfo import FuncSig

# How WIT primitives travel through a core function of the numeric convention (canonical ABI flat types).
CORE_TYPE: Mapping[str, str] = {
    **dict.fromkeys(("bool", "char", "s8", "u8", "s16", "u16", "s32", "u32"), "i32"),
    **dict.fromkeys(("s64", "u64"), "i64"),
    **dict.fromkeys(("f32", "float32"), "f32"),
    **dict.fromkeys(("f64", "float64"), "f64"),
}


@dataclass(frozen=True)
class WitParam:
    name: str
    type: str
    resolved: str

    def __str__(self) -> str:
        return f"{self.name}: {self.type}"


@dataclass(frozen=True)
class WitFunction:
    """One function of an interface or a world. `name` is the key wasm-tools gives it."""

    name: str
    kind: str  # freestanding | method | static | constructor (async-... in newer WIT)
    params: tuple[WitParam, ...]
    result: str | None = None
    result_resolved: str | None = None
    resource: str | None = None

    @property
    def display(self) -> str:
        """`greet`, or `fields.get` for a method or static function, `fields.constructor`."""
        if self.resource is None:
            return self.name
        short = self.name.split("]", 1)[-1]
        short = short.split(".", 1)[1] if "." in short else "constructor"
        return f"{self.resource}.{short}"

    @property
    def signature(self) -> str:
        """The WIT spelling: `func(name: string) -> string`."""
        params = ", ".join(str(p) for p in self.params)
        return f"func({params})" + (f" -> {self.result}" if self.result is not None else "")

    @property
    def core_signature(self) -> FuncSig | None:
        """The core signature of the numeric convention, or None when a type is not a number."""
        params = tuple(CORE_TYPE.get(p.resolved) for p in self.params)
        result = CORE_TYPE.get(self.result_resolved) if self.result_resolved is not None else None
        if any(p is None for p in params) or (self.result_resolved is not None and result is None):
            return None
        return FuncSig(tuple(p for p in params if p is not None), (result,) if result is not None else ())


@dataclass(frozen=True)
class WitType:
    """A named type: its name, what kind of type it is, and its definition spelled as WIT."""

    name: str
    kind: str  # record | variant | enum | flags | resource | alias | use | tuple | list | ...
    definition: str


@dataclass(frozen=True)
class WitInterface:
    name: str
    qualified: str  # example:greeter/greet@1.0.0
    functions: Mapping[str, WitFunction] = field(default_factory=dict)
    types: Mapping[str, WitType] = field(default_factory=dict)
    docs: str | None = None

    @property
    def resources(self) -> tuple[str, ...]:
        return tuple(name for name, t in self.types.items() if t.kind == "resource")


@dataclass(frozen=True)
class WitWorld:
    """A world: what a component built for it imports and exports, each spelled as one line.

    Interfaces by their qualified name (`wasi:cli/environment@0.2.0`, or `greet` for an interface of
    the same package), functions as `name: func(...)`, types as `type name = definition`.
    """

    name: str
    qualified: str  # example:greeter/greeter@1.0.0
    imports: tuple[str, ...] = ()
    exports: tuple[str, ...] = ()


@dataclass(frozen=True)
class WitPackage:
    """The package a WIT file or folder defines (its `deps/` are resolved, not kept)."""

    name: str  # example:greeter@1.0.0
    interfaces: Mapping[str, WitInterface]
    worlds: Mapping[str, WitWorld]
    digest: str  # sha256 of the WIT text (the files of the folder and its deps/)
    source: Path
    dependencies: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """`namespace:name` without the version."""
        return self.name.split("@", 1)[0]

    @property
    def version(self) -> str | None:
        return self.name.split("@", 1)[1] if "@" in self.name else None

    def find_interface(self, ref: str) -> WitInterface | None:
        """The interface named `greet`, `example:greeter/greet` or `example:greeter/greet@1.0.0`."""
        return next((i for i in self.interfaces.values() if _matches(ref, i.name, i.qualified)), None)

    def find_world(self, ref: str) -> WitWorld | None:
        return next((w for w in self.worlds.values() if _matches(ref, w.name, w.qualified)), None)


def _matches(ref: str, name: str, qualified: str) -> bool:
    return ref in (name, qualified, qualified.split("@", 1)[0])
