"""Module compatibility: does a binary implement the interface its Module `implements`?

The fleet loader calls `check_module` for each Module with an `implements`, after inspecting the
binary (`edge.wasm.inspect`) and parsing the Interface's WIT (`reconciler.interfaces.wit`). The API
calls it for `POST /api/v1/wasm/interfaces/{id}/validate`. The answer is a list of problems, one line
each naming the function and the mismatch; empty means compatible.

A core module (WASI preview 1) is checked in pure Python, well under a millisecond:
  - each function of the interface is exported, as written (`get-name`) or with `-` as `_`;
  - its signature fits the convention the edge will call it with (see `edge.wasm`): WIT numbers
    (bool, char, s8..u64, f32, f64) go straight through as i32/i64/f32/f64 (`numeric`); any function
    may use `json` (`(i32, i32) -> i64` with `alloc` and `memory` exported), and one with a string,
    list, record or any other non-number must;
  - its WASI imports stay within the capabilities the Module is granted;
  - resources (methods, constructors) need a component: a core module cannot implement them.
A component (WASI preview 2) is checked by `wasm-tools component targets` against a world of the
package that exports the interface (a subprocess, cached by the binary's and the WIT's digests).
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from typing import Literal

from edge.wasminfo import GRANTABLE_CAPABILITIES, Export, FuncSig, ModuleInfo
from reconciler.interfaces import wit
from reconciler.interfaces.model import WitFunction, WitInterface, WitPackage, WitWorld
from reconciler.interfaces.wit import run_wasm_tools, tool_message

WasiLevel = Literal["preview1", "preview2"]
JSON_SIG = FuncSig(("i32", "i32"), ("i64",))
ALLOC_SIG = FuncSig(("i32",), ("i32",))

_targets_cache: dict[tuple[str, str, str], tuple[str, ...]] = {}


def check_module(
    info: ModuleInfo,
    package: WitPackage,
    interface: str | None,
    granted_capabilities: Set[str],
    wasi_level: WasiLevel,
    *,
    binary: bytes | None = None,
) -> list[str]:
    """Problems that keep the module from implementing `interface` of `package` (empty: compatible).

    `interface` is `greet`, `example:greeter/greet` or `example:greeter/greet@1.0.0`, or a world of
    the package for a component; None means every interface of the package. `binary` is needed for a
    component only (wasm-tools checks the bytes).
    """
    if info.component:
        if wasi_level == "preview1":
            return [
                f"the module is a component (WASI preview 2), but {package.name} is a preview1 interface: "
                "build a core module or declare `wasi: preview2`"
            ]
        return check_component(binary, info.digest, package, interface)
    interfaces, problems = _interfaces(package, interface)
    several = len(interfaces) > 1
    exports = info.functions()
    for iface in interfaces:
        prefix = f"{iface.name}." if several else ""
        for resource in iface.resources:
            problems.append(
                f"{prefix}{resource}: a resource (its constructor and methods) needs a component, not a core module"
            )
        for function in iface.functions.values():
            if function.resource is None:
                problems.extend(prefix + p for p in _check_function(function, exports, info))
    problems.extend(_check_imports(info, granted_capabilities))
    return problems


def clear_cache() -> None:
    """Forget parsed packages and component checks held in memory."""
    _targets_cache.clear()
    wit.clear_cache()


def export_names(function: WitFunction) -> tuple[str, ...]:
    """The core export names that implement a WIT function: as written, then with `-` as `_`."""
    return tuple(dict.fromkeys((function.name, function.name.replace("-", "_"))))


def _interfaces(package: WitPackage, ref: str | None) -> tuple[list[WitInterface], list[str]]:
    if ref is None:
        return list(package.interfaces.values()), []
    found = package.find_interface(ref)
    if found is not None:
        return [found], []
    if "/" in ref and ref.split("/", 1)[0] != package.id:
        return [], [f"`{ref}` is not an interface of {package.name}"]
    known = ", ".join(package.interfaces) or "none"
    return [], [f"{package.name} has no interface `{ref}` (its interfaces: {known})"]


def _check_function(function: WitFunction, exports: dict[str, Export], info: ModuleInfo) -> list[str]:
    names = export_names(function)
    export = next((exports[n] for n in names if n in exports), None)
    if export is None:
        other = next((info.export(n) for n in names if info.export(n) is not None), None)
        if other is not None:
            return [f"{function.display}: export `{other.name}` is a {other.kind}, not a function"]
        spelled = " or ".join(f"`{n}`" for n in names)
        return [f"{function.display}: missing export {spelled} for {function.signature}"]
    numeric = function.core_signature
    if export.convention == "json":
        return []
    if numeric is not None:
        if export.convention == "numeric" and export.sig == numeric:
            return []
        return [
            f"{function.display}: export `{export.name}` is {export.sig}, but {function.signature} "
            f"needs {numeric} (numeric convention) or {JSON_SIG} (json convention)"
        ]
    if export.sig == JSON_SIG:
        missing = _json_support_missing(info)
        return [f"{function.display}: export `{export.name}` uses the json convention but the module {missing}"]
    return [
        f"{function.display}: export `{export.name}` is {export.sig}, but {function.signature} "
        f"needs the json convention {JSON_SIG} (with `alloc` and `memory` exported)"
    ]


def _json_support_missing(info: ModuleInfo) -> str:
    alloc = info.export("alloc")
    memory = info.export("memory")
    lacks = []
    if alloc is None or alloc.sig != ALLOC_SIG:
        lacks.append(f"`alloc: {ALLOC_SIG}`")
    if memory is None or memory.kind != "memory":
        lacks.append("`memory`")
    return "does not export " + " and ".join(lacks)


def _check_imports(info: ModuleInfo, granted: Set[str]) -> Iterable[str]:
    """WASI imports whose capability the module is not granted (ungrantable ones are `info.problems`)."""
    for imp in info.wasi_imports:
        capability = imp.capability
        if capability in GRANTABLE_CAPABILITIES and capability not in granted:
            yield (
                f"import {imp.module}.{imp.name}: needs the `{capability}` capability, which the module is not granted"
            )


def _world_for(package: WitPackage, ref: str | None) -> WitWorld | str:
    """The world a component must target, or the problem that keeps us from picking one."""
    if ref is not None:
        world = package.find_world(ref)
        if world is not None:
            return world
        iface = package.find_interface(ref)
        if iface is None:
            return f"{package.name} has no interface or world `{ref}`"
        exporting = [w for w in package.worlds.values() if iface.name in w.exports]
        if not exporting:
            return f"no world of {package.name} exports `{iface.name}`: add one for components to target"
        return exporting[0]
    if len(package.worlds) == 1:
        return next(iter(package.worlds.values()))
    return f"{package.name} has {len(package.worlds)} worlds: name the one the component targets"


def check_component(binary: bytes | None, digest: str, package: WitPackage, ref: str | None) -> list[str]:
    """Problems that keep a component from targeting the package's world (`wasm-tools component targets`)."""
    world = _world_for(package, ref)
    if isinstance(world, str):
        return [world]
    key = (digest, package.digest, world.qualified)
    cached = _targets_cache.get(key)
    if cached is not None:
        return list(cached)
    if binary is None:
        return [f"the component's bytes are needed to check it against world `{world.name}`"]
    if not package.source.exists():
        return [f"the WIT of {package.name} is no longer at {package.source}: parse it again"]
    source = str(package.source.resolve())
    done = run_wasm_tools(["component", "targets", "--world", world.qualified, source, "-"], stdin=binary)
    problems: tuple[str, ...] = ()
    if done.returncode != 0:
        lines = [
            line
            for line in tool_message(done.stderr.decode(errors="replace"))
            if line != "failed to validate encoded bytes" and not line.startswith("type mismatch for import `")
        ]
        problems = (f"the component does not target world `{world.name}`: " + ": ".join(lines),)
    _targets_cache[key] = problems
    return list(problems)
