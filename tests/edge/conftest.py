"""Fixtures for the edge node tests: the WAT modules in `modules/`, a runtime, a router."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge import wasm
from edge.runtime import Runtime

MODULES = Path(__file__).resolve().parent / "modules"


def module_bytes(name: str) -> bytes:
    """The binary of `tests/edge/modules/<name>.wat`."""
    return wasm.compile_wat((MODULES / f"{name}.wat").read_text())


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    with Runtime() as rt:
        yield rt


@pytest.fixture
def slow_runtime() -> Iterator[Runtime]:
    """The same runtime calling through `Func.__call__` instead of the raw fast path."""
    with Runtime(fast_path=False) as rt:
        yield rt
