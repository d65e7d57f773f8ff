"""docs/architecture.md: every function, class and module it names exists (issue 23).

The page draws the flow from a commit to a node serving by naming the code, so a rename that
forgets the page must fail here rather than leave the page quietly wrong. What is checked:
- every dotted name that starts with one of our packages (`reconciler.apply.controller.Controller.apply`,
  `edge.router`), in backticks or anywhere in a fenced block: the longest prefix that imports is
  the module, the rest are attributes of it (a dataclass field, or an attribute the constructor
  sets, counts as an attribute of its class);
- every short `Class.attribute` name (`NodeHub.publish`), in backticks or in a fenced block: the
  class must be found in a module the page names in full, and have the attribute;
- every backticked path inside the repository (`docs/blob-stores.md`, `reconciler/api/`) exists.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "architecture.md"
PACKAGES = ("reconciler", "edge", "hotswap")
MAX_LINES = 150  # "one page": a page that needs more should be split, not grown

_FULL = re.compile(rf"(?<![\w./-])(?:{'|'.join(PACKAGES)})(?:\.[A-Za-z_]\w*)+(?![\w/-])")
_SHORT = re.compile(r"(?<![\w./-])[A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*(?:\.[A-Za-z_]\w*)+(?![\w/-])")
_PATH = re.compile(r"^[\w-]+(?:/[\w.-]+)*(?:\.(?:py|md)|/)$")  # a file or folder, not a Git ref


def _spans(text: str) -> list[str]:
    """The backticked spans of the prose and the whole of every fenced block, in page order."""
    spans: list[str] = []
    fenced = False
    block: list[str] = []
    for line in text.splitlines():
        if line.startswith("```"):
            if fenced:
                spans.append("\n".join(block))
                block = []
            fenced = not fenced
        elif fenced:
            block.append(line)
        else:
            spans.extend(re.findall(r"`([^`]+)`", line))
    return spans


def _names(pattern: re.Pattern[str]) -> list[str]:
    found = [m.group(0) for span in _spans(PAGE.read_text()) for m in pattern.finditer(span)]
    return list(dict.fromkeys(found))


def _paths() -> list[str]:
    spans = [s.strip() for s in _spans(PAGE.read_text()) if "\n" not in s]
    return list(dict.fromkeys(s for s in spans if _PATH.match(s) and not s.startswith("..")))


def _module_of(dotted: str) -> tuple[ModuleType, list[str]]:
    """The module of the longest importable prefix of `dotted`, and the attribute names after it."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            return importlib.import_module(name), parts[i:]
        except ModuleNotFoundError as exc:
            if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
                raise  # a module that exists but fails to import: say so, not "not found"
    raise AssertionError(f"{dotted}: no module of it imports")


def _attribute(owner: object, name: str, dotted: str) -> object:
    if hasattr(owner, name):
        return getattr(owner, name)
    if isinstance(owner, type):
        for cls in owner.__mro__:
            # a dataclass field without a default lives in the annotations only
            if name in getattr(cls, "__annotations__", {}):
                return cls.__annotations__[name]
            # an instance attribute is whatever the constructor sets (it has no type to go on with)
            init = cls.__dict__.get("__init__")
            sets = init is not None and hasattr(init, "__code__")
            if sets and re.search(rf"\bself\.{name}\s*[:=]", inspect.getsource(init)):
                return object()
    raise AssertionError(f"{dotted}: {owner!r} has no attribute {name!r}")


def _resolve(dotted: str) -> object:
    obj: object
    obj, rest = _module_of(dotted)
    for name in rest:
        obj = _attribute(obj, name, dotted)
    return obj


FULL = _names(_FULL)
SHORT = _names(_SHORT)
PATHS = _paths()


def test_the_page_names_the_code() -> None:
    # the extraction itself must not go quiet: a page whose names it no longer finds checks nothing
    assert len(FULL) >= 40, FULL
    assert len(SHORT) >= 10, SHORT


def test_the_page_is_one_page() -> None:
    lines = len(PAGE.read_text().splitlines())
    assert lines <= MAX_LINES, f"docs/architecture.md has {lines} lines; one page is at most {MAX_LINES}"


@pytest.mark.parametrize("dotted", FULL)
def test_a_full_name_resolves(dotted: str) -> None:
    _resolve(dotted)


@pytest.mark.parametrize("dotted", SHORT)
def test_a_short_name_resolves_in_a_module_the_page_names(dotted: str) -> None:
    head, *rest = dotted.split(".")
    modules = {id(m): m for m in (_module_of(name)[0] for name in FULL)}.values()
    classes = [getattr(m, head) for m in modules if isinstance(getattr(m, head, None), type)]
    owners = list({id(c): c for c in classes}.values())  # a class imported by several modules once
    assert owners, f"{dotted}: no module named on the page defines or imports a class {head}"
    misses = []
    for owner in owners:
        try:
            found: object = owner
            for name in rest:
                found = _attribute(found, name, dotted)
            return
        except AssertionError as exc:
            misses.append(str(exc))
    raise AssertionError("; ".join(misses))


@pytest.mark.parametrize("path", PATHS)
def test_a_path_exists(path: str) -> None:
    # a route such as /api/v1/wasm/nodes/{id} is not a path of the repository: only relative ones count
    assert (ROOT / path).exists(), f"{path} is not in the repository"
