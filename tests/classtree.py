"""Reading an exception tree drawn in a module's docstring, and the real tree to compare it with
(tests/test_errors.py for the control plane's, tests/edge/test_errors.py for the edge node's)."""

from __future__ import annotations

import re


def drawn(doc: str | None, line: re.Pattern[str]) -> list[re.Match[str]]:
    """The drawing's lines that `line` matches, in order (its `indent` group gives a class's depth)."""
    return [found for text in (doc or "").splitlines() if (found := line.match(text)) is not None]


def subclasses(cls: type) -> set[type]:
    """Every class below `cls`, at any depth."""
    out = set()
    for sub in cls.__subclasses__():
        out.add(sub)
        out |= subclasses(sub)
    return out
