"""edge/errors.py draws the edge node's exception tree with the HTTP answer of each error; the drawing
is the real tree: every class drawn descends from the class drawn above it and answers with the
status and code drawn beside it, and every subclass of EdgeError in the module is drawn."""

from __future__ import annotations

import re

import edge.errors
from edge.errors import EdgeError
from tests import classtree

# "    │   ├── NotFoundError             404 not_found    (unknown ...)": the name's column gives its depth
LINE = re.compile(r"^(?P<indent>[ │├└─]*?)(?P<name>[A-Z]\w*Error)\b(?:\s+(?P<status>\d{3}) (?P<code>[a-z_]+)\b)?")


def drawn() -> list[tuple[int, str, int | None, str | None]]:
    rows = []
    for found in classtree.drawn(edge.errors.__doc__, LINE):
        status = found.group("status")
        rows.append(
            (len(found.group("indent")), found.group("name"), int(status) if status else None, found.group("code"))
        )
    return rows


def test_the_drawing_is_the_class_tree_and_its_answers() -> None:
    rows = drawn()
    assert rows[0][:2] == (4, "EdgeError")
    parents: list[tuple[int, type]] = []
    seen: set[type] = set()
    for column, name, status, code in rows:
        cls = getattr(edge.errors, name, None)
        assert isinstance(cls, type) and issubclass(cls, EdgeError), f"edge.errors has no error {name}"
        while parents and parents[-1][0] >= column:
            parents.pop()
        if parents:
            assert cls.__bases__ == (parents[-1][1],), f"{name} is drawn under {parents[-1][1].__name__}"
        parents.append((column, cls))
        seen.add(cls)
        if status is not None:
            assert (cls.status, cls.code) == (status, code), name
    assert classtree.subclasses(EdgeError) - seen == set()


def test_what_a_class_leaves_out_it_inherits() -> None:
    assert (EdgeError.status, EdgeError.code) == (500, "error")
    assert (edge.errors.RequestError.status, edge.errors.RequestError.code) == (400, "error")
    assert (edge.errors.LoadError.status, edge.errors.LoadError.code) == (500, "load")
    assert (edge.errors.ModuleError.status, edge.errors.ModuleError.code) == (500, "trap")
    assert (edge.errors.ExitError.status, edge.errors.ExitError.code) == (500, "exit")


def test_an_error_carries_its_message_and_details() -> None:
    exc = edge.errors.NotFoundError("no such module")
    assert (str(exc), exc.message, exc.args, exc.details) == (
        "no such module",
        "no such module",
        ("no such module",),
        {},
    )
    exited = edge.errors.ExitError(3, "warming up\nout of cheese\n", "partial")
    assert str(exited) == exited.message == "exited with status 3: out of cheese"
    assert exited.details == {"exitCode": 3, "stderr": "warming up\nout of cheese\n", "stdout": "partial"}
    assert isinstance(exited, edge.errors.ModuleError)
