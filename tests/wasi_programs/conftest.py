"""Fixtures of the real-program tests: the fetched modules (`programs.py`), and one precompiled
cache for the whole session, so the 26 MB interpreter is compiled once per run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.runtime import Runtime
from tests.wasi_programs.programs import fetch


@pytest.fixture(scope="session")
def python_wasm() -> Path:
    return fetch("python")


@pytest.fixture(scope="session")
def quickjs_wasm() -> Path:
    return fetch("quickjs")


@pytest.fixture(scope="session")
def program_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("program-cache")


@pytest.fixture
def runtime(program_cache: Path) -> Iterator[Runtime]:
    with Runtime(cache_dir=program_cache) as rt:
        yield rt
