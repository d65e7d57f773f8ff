"""Interface evolution: what changed between two versions of a WIT package, and what that requires.

`hotswap validate --base REV` and the reconciler compare each Interface at the last applied revision
with the new one. A structural comparison of the two resolved packages (not `wasm-tools component
semver-check`, which compares two worlds of one resolve and so cannot hold two copies of the same
package version, the very case a forgotten version bump produces):

    removed   an interface, function, type or world item that is gone      breaking
    changed   a function's parameters, result or kind; a type's definition  breaking
    added     anything new                                                  not breaking
    changed   only a dependency's version, within semver-compatible releases not breaking
              (`use wasi:io/streams@0.2.0.{..}` to `@0.2.3`)

A breaking change must come with a new major version (for 0.x packages the minor, for 0.0.x the
patch, as semver and Cargo read them): without one it is a validation error (`problems`); with one
the new version needs the fleet policy's `breakingInterfaceChanges` approvals before any module
implementing it rolls out (`needs_approval`). Pure functions over `WitPackage`s.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from reconciler.interfaces.model import WitFunction, WitInterface, WitPackage

ChangeKind = Literal["removed", "changed", "added"]
Subject = Literal["package", "interface", "function", "type", "world"]

_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_VERSION_IN_TEXT = re.compile(r"@(\d+)\.(\d+)\.(\d+)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")
T = TypeVar("T")


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    item: str  # `greet` (an interface), `greet.greet` (a function), `greet.person` (a type), `greeter`
    breaking: bool
    message: str
    subject: Subject

    def __str__(self) -> str:
        return f"{'breaking' if self.breaking else 'compatible'}: {self.message}"


@dataclass(frozen=True)
class Evolution:
    """The comparison of one interface package at two revisions."""

    old: str  # package names with versions: example:greeter@1.0.0
    new: str
    changes: tuple[Change, ...]
    problems: tuple[str, ...]  # validation errors: the new revision must be refused

    @property
    def breaking(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.breaking)

    @property
    def needs_approval(self) -> bool:
        """Breaking, correctly versioned: waits for the `breakingInterfaceChanges` approvals."""
        return bool(self.breaking) and not self.problems


def compare(old: WitPackage, new: WitPackage) -> Evolution:
    changes = breaking_changes(old, new)
    return Evolution(old.name, new.name, tuple(changes), tuple(version_bump_problems(old, new, changes)))


def breaking_changes(old: WitPackage, new: WitPackage) -> list[Change]:
    """Every change from `old` to `new`, breaking or not, interfaces first and then worlds."""
    changes: list[Change] = []
    if old.id != new.id:
        changes.append(
            Change("changed", "package", True, f"package {old.id} became {new.id}: its interfaces moved", "package")
        )
    for name, before, after in _pairs(old.interfaces, new.interfaces):
        if before is None or after is None:
            changes.append(_one_side("interface", name, after))
        else:
            changes.extend(_interface_changes(before, after))
    for name, was, now in _pairs(old.worlds, new.worlds):
        if was is None or now is None:
            changes.append(_one_side("world", name, now))
        else:
            changes.extend(_items(name, "imports", was.imports, now.imports))
            changes.extend(_items(name, "exports", was.exports, now.exports))
    return changes


def version_bump_problems(old: WitPackage, new: WitPackage, changes: Sequence[Change]) -> list[str]:
    """Validation errors about the new version: a breaking change needs a major bump; no going back."""
    before, after = _semver(old.version), _semver(new.version)
    problems: list[str] = []
    if before is not None and after is not None and after < before:
        problems.append(f"{new.name}: the version went back from {old.version} (it must not decrease)")
    breaking = [c for c in changes if c.breaking]
    if not breaking:
        return problems
    first = breaking[0].message + (f" (and {len(breaking) - 1} more)" if len(breaking) > 1 else "")
    if before is None or after is None:
        problems.append(
            f"{new.name}: breaking change ({first}) in a package without a semver version: "
            "version it and bump the major version"
        )
    elif _series(after) <= _series(before):
        problems.append(
            f"{new.name}: breaking change ({first}) without a major version bump from {old.version} "
            f"(needs {_next_major(before)})"
        )
    return problems


def _interface_changes(old: WitInterface, new: WitInterface) -> Iterable[Change]:
    old_functions = {f.display: f for f in old.functions.values()}
    new_functions = {f.display: f for f in new.functions.values()}
    for display, before, after in _pairs(old_functions, new_functions):
        item = f"{old.name}.{display}"
        if before is None or after is None:
            yield _one_side("function", item, after)
        elif (detail := _function_diff(before, after)) is not None:
            yield Change("changed", item, True, f"function {item}: {detail}", "function")
    for name, was, now in _pairs(old.types, new.types):
        item = f"{old.name}.{name}"
        if was is None or now is None:
            yield _one_side("type", item, now)
        elif was.definition != now.definition:
            breaking = _compatible(was.definition) != _compatible(now.definition)
            yield Change("changed", item, breaking, f"type {item}: {was.definition} became {now.definition}", "type")


def _one_side(subject: Subject, item: str, now: object | None) -> Change:
    """An item found at one revision only: removed (breaking) when the new one lacks it, else added."""
    if now is None:
        return Change("removed", item, True, f"{subject} {item} was removed", subject)
    return Change("added", item, False, f"{subject} {item} was added", subject)


def _function_diff(old: WitFunction, new: WitFunction) -> str | None:
    if old.signature == new.signature and old.kind == new.kind:
        return None
    details: list[str] = []
    if old.kind != new.kind:
        details.append(f"{old.kind} function became {new.kind}")
    if len(old.params) != len(new.params):
        details.append(f"{len(old.params)} parameters became {len(new.params)}")
    else:
        for a, b in zip(old.params, new.params, strict=True):
            if a.type != b.type:
                details.append(f"parameter `{a.name}` changed type from {a.type} to {b.type}")
            if a.name != b.name:
                details.append(f"parameter `{a.name}` was renamed to `{b.name}`")
    if old.result != new.result:
        details.append(f"result {old.result or '(none)'} became {new.result or '(none)'}")
    return "; ".join(details) + f" (was {old.signature}, now {new.signature})"


def _items(world: str, side: str, old: Sequence[str], new: Sequence[str]) -> Iterable[Change]:
    before = {_compatible(i.split(": ", 1)[0]): i for i in old}
    after = {_compatible(i.split(": ", 1)[0]): i for i in new}
    for _, was, now in _pairs(before, after):
        item = f"{world}.{_either(was, now).split(': ', 1)[0]}"
        if now is None:
            yield Change("removed", item, True, f"world {world} no longer {side} {was}", "world")
        elif was is None:
            yield Change("added", item, False, f"world {world} now {side} {now}", "world")
        elif was != now:
            breaking = _compatible(was) != _compatible(now)
            yield Change("changed", item, breaking, f"world {world} {side} {was}, now {now}", "world")


def _either(was: str | None, now: str | None) -> str:
    return was if was is not None else now or ""


def _compatible(text: str) -> str:
    """`text` with each `@x.y.z` version cut to what semver keeps compatible (`@0.2.0` to `@0.2`):
    a dependency moving to a compatible release (wasi:io 0.2.0 to 0.2.3) is not a breaking change."""
    return _VERSION_IN_TEXT.sub(lambda m: "@" + ".".join(map(str, _series((int(m[1]), int(m[2]), int(m[3]))))), text)


def _pairs(old: Mapping[str, T], new: Mapping[str, T]) -> Iterable[tuple[str, T | None, T | None]]:
    """Each name of either mapping, in the old order then the new, with its value on each side."""
    for name in dict.fromkeys([*old, *new]):
        yield name, old.get(name), new.get(name)


def _semver(version: str | None) -> tuple[int, int, int] | None:
    match = _SEMVER.match(version or "")
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def _series(version: tuple[int, int, int]) -> tuple[int, ...]:
    """What a compatible release keeps: the major, or for 0.y.z the minor, for 0.0.z the patch."""
    major, minor, patch = version
    if major:
        return (major,)
    return (0, minor) if minor else (0, 0, patch)


def _next_major(version: tuple[int, int, int]) -> str:
    major, minor, patch = version
    if major:
        return f"{major + 1}.0.0"
    return f"0.{minor + 1}.0" if minor else f"0.0.{patch + 1}"
