"""Loading components: the precompiled cache, imports the sandbox refuses, `hotswap validate`."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge import wasm
from edge.errors import LoadError
from edge.runtime import Runtime, Sandbox
from tests.components.conftest import ALLOC, build


def test_a_component_loads_from_the_precompiled_cache_after_a_restart(kitchen: bytes, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with Runtime(cache_dir=cache) as first:
        assert not first.load_any(kitchen, Sandbox()).from_cache
    artifacts = list(cache.glob("*.component"))
    assert len(artifacts) == 1
    with Runtime(cache_dir=cache) as second:
        loaded = second.load_any(kitchen, Sandbox())
        assert loaded.from_cache and loaded.invoke(loaded.prepare("echo-u8", [[7]])).value == [7]
    # A damaged entry is never handed to wasmtime, it is rebuilt. (Replaced, not rewritten in place: the
    # artifact of the version still loaded above is mapped in memory, as on a live node.)
    damaged = tmp_path / "damaged"
    damaged.write_bytes(b"tampered")
    damaged.replace(artifacts[0])
    with Runtime(cache_dir=cache) as third:
        loaded = third.load_any(kitchen, Sandbox())
        assert not loaded.from_cache and loaded.invoke(loaded.prepare("echo-u8", [[8]])).value == [8]


def importing(tmp_path: Path, package: str, interface: str) -> bytes:
    name, version = package.split("@")
    wit = f"""package t:imp@0.1.0;

world imp {{
  import {name}/{interface}@{version};
  export f: func() -> s32;
}}

package {package} {{
  interface {interface} {{
    ping: func() -> s32;
  }}
}}
"""
    wat = f"""(module
  (import "{name}/{interface}@{version}" "ping" (func $ping (result i32)))
{ALLOC}
  (func (export "f") (result i32) (call $ping)))
"""
    return build(tmp_path, wit, wat, "imp")


@pytest.mark.parametrize(
    ("package", "interface", "problem"),
    [
        ("wasi:sockets@0.2.0", "tcp", "import wasi:sockets@0.2.0/tcp: sockets are not available in the edge sandbox"),
        ("acme:db@1.0.0", "query", "import acme:db@1.0.0/query: not a WASI preview 2 interface the edge provides"),
    ],
)
def test_imports_the_edge_cannot_grant_are_problems(
    runtime: Runtime, tmp_path: Path, package: str, interface: str, problem: str
) -> None:
    data = importing(tmp_path, package, interface)
    info = wasm.inspect(data)
    assert any(p.startswith(problem) for p in info.problems), info.problems
    with pytest.raises(LoadError, match=problem.rsplit(": ", maxsplit=1)[-1]):
        runtime.load_any(data, Sandbox())


def test_raw_wasi_http_is_refused_unless_every_host_is_allowed(runtime: Runtime, tmp_path: Path) -> None:
    data = importing(tmp_path, "wasi:http@0.2.0", "outgoing-handler")
    info = wasm.inspect(data)
    assert not info.problems and "network" in info.capabilities
    with pytest.raises(LoadError, match=r'granted only with network.allowHosts: \["\*"\]'):
        runtime.load_any(data, Sandbox(allow_hosts=("api.example.com",)))


def test_the_example_component_is_described_with_its_wit_signature() -> None:
    root = Path(__file__).resolve().parents[2]
    info = wasm.inspect((root / "fleet-example" / "wasm" / "hello-1.0.0.wasm").read_bytes())
    greet = info.functions()["example:hello/greet@1.0.0#greet"]
    assert greet.convention == "component"
    assert str(greet.sig) == "(name: string) -> (record {text: string, length: u32})"
    assert info.imports == () and not info.problems
