"""reconciler/errors.py draws the control plane's exception tree; the drawing is the real tree, both
ways: every class drawn exists in the module named and descends from the class drawn above it, and
every subclass of ReconcilerError in those modules is drawn."""

from __future__ import annotations

import importlib
import pkgutil
import re

import reconciler
import reconciler.errors
from reconciler.errors import ReconcilerError
from tests import classtree

# "    │   ├── NotFoundError       reconciler.store.errors": the name's column gives its depth
LINE = re.compile(r"^(?P<indent>[ │├└─]*?)(?P<name>[A-Z]\w*)\b.*?\s(?P<module>reconciler(?:\.\w+)+)\s*$")


def drawn() -> list[tuple[int, str, str]]:
    return [
        (len(found.group("indent")), found.group("name"), found.group("module"))
        for found in classtree.drawn(reconciler.errors.__doc__, LINE)
    ]


def test_the_drawing_is_the_class_tree() -> None:
    rows = drawn()
    assert rows[0] == (4, "ReconcilerError", "reconciler.errors")
    parents: list[tuple[int, type]] = []
    seen: set[type] = set()
    for column, name, module in rows:
        cls = getattr(importlib.import_module(module), name, None)
        assert isinstance(cls, type), f"{module} has no class {name}"
        while parents and parents[-1][0] >= column:
            parents.pop()
        if parents:
            parent = parents[-1][1]
            assert parent in cls.__bases__, f"{name} is drawn under {parent.__name__}, its bases are {cls.__bases__}"
        parents.append((column, cls))
        seen.add(cls)
    for info in pkgutil.walk_packages(reconciler.__path__, "reconciler."):  # every module: a new error anywhere
        importlib.import_module(info.name)
    missing = {
        f"{c.__module__}.{c.__name__}"
        for c in classtree.subclasses(ReconcilerError) - seen
        if c.__module__.startswith("reconciler.")
    }
    assert not missing, f"not drawn in reconciler/errors.py: {sorted(missing)}"
